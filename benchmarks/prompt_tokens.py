"""Prompt tokens per attempt and the prompt-cache hit share, on a checkout's own prompts.

Runs pq-l2 twice in ``--checkout`` (default: this project): the offline playbook, then the same
replies from a local Anthropic-speaking server on 127.0.0.1 that records every request the real
``anthropic`` SDK sends. Tokens are estimated as characters / 4 (no Anthropic tokenizer offline);
the cache is simulated from the recorded requests by the documented rules: a breakpoint
(``cache_control``) caches the prefix up to its block if that prefix reaches the model's minimum
length; a later request reads the longest stored prefix that ends at one of its block boundaries
(at most 20 blocks before a breakpoint). The minimum depends on the model (1,024 tokens for most,
2,048 for some, 4,096 for Opus 4.5 and Haiku 4.5), so the share is printed for each.

    python benchmarks/prompt_tokens.py                       # this checkout
    python benchmarks/prompt_tokens.py --checkout /tmp/old   # e.g. a worktree of an earlier commit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MINIMUMS = (1024, 2048, 4096)
LOOKBACK_BLOCKS = 20
SMALL_TRIALS = {"trial_replicates": 1, "trial_sessions": 2, "trial_queries": 3}


def tokens(text: str) -> int:
    return (len(text) + 3) // 4


@dataclass
class Request:
    blocks: list[tuple[str, bool]]      # (text, has a cache breakpoint after it), in prompt order


def blocks_of(body: dict[str, Any]) -> Request:
    """A Messages request as the API renders it for caching: system blocks, then each message's."""
    out: list[tuple[str, bool]] = []
    system = body.get("system") or []
    for b in [{"text": system}] if isinstance(system, str) else system:
        out.append((b.get("text", ""), "cache_control" in b))
    for m in body.get("messages", []):
        content = m["content"]
        for b in [{"text": content}] if isinstance(content, str) else content:
            out.append((f"[{m['role']}]" + b.get("text", ""), "cache_control" in b))
    return Request(out)


def simulate(requests: list[Request], minimum: int) -> tuple[int, int, int]:
    """(total input tokens, cache-read tokens, cache-write tokens) over the requests."""
    stored: set[tuple[str, ...]] = set()
    total = read = written = 0
    for req in requests:
        texts = [t for t, _ in req.blocks]
        sizes = [tokens(t) for t in texts]
        total += sum(sizes)
        best = 0
        for i, (_, brk) in enumerate(req.blocks):
            if not brk:
                continue
            for j in range(i, max(-1, i - LOOKBACK_BLOCKS), -1):
                if tuple(texts[:j + 1]) in stored:
                    best = max(best, sum(sizes[:j + 1]))
                    break
        last = max((i for i, (_, brk) in enumerate(req.blocks) if brk), default=-1)
        new = 0
        for i, (_, brk) in enumerate(req.blocks):
            prefix = tuple(texts[:i + 1])
            if brk and sum(sizes[:i + 1]) >= minimum and prefix not in stored:
                stored.add(prefix)
        if last >= 0 and sum(sizes[:last + 1]) >= minimum:
            new = max(0, sum(sizes[:last + 1]) - best)
        read += best
        written += new
    return total, read, written


class Server(ThreadingHTTPServer):
    def __init__(self, replies: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies: list[str] = replies
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            text = self.server.replies.pop(0) if self.server.replies else ""
        data = {"id": f"msg_{len(self.server.bodies)}", "type": "message", "role": "assistant",
                "model": body.get("model"), "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": sum(tokens(t) for t, _ in blocks_of(body).blocks),
                          "output_tokens": tokens(text), "cache_read_input_tokens": 0,
                          "cache_creation_input_tokens": 0}}
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def loop(checkout: Path, model: str, attempts: int, config: Path, env: dict[str, str]) -> Path:
    """Run the loop in ``checkout``; return the run directory it made."""
    before = set((checkout / "runs" / "pq-l2").glob("*/run.json"))
    cmd = [sys.executable, "-m", "orchestrator", "loop", "--target", "pq-l2", "--model", model,
           "--max-attempts", str(attempts), "--config", str(config), "--no-vs-lance"]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(checkout), **env})
    if proc.returncode != 0:
        sys.exit(f"loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    made = set((checkout / "runs" / "pq-l2").glob("*/run.json")) - before
    return next(iter(made)).parent


def prompt_tokens(run_dir: Path) -> list[int]:
    return [tokens(p.read_text()) for p in sorted(run_dir.glob("attempts/*/prompt.md"),
                                                  key=lambda p: int(p.parent.name))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--attempts", type=int, default=20, help="of the scripted run (the offline one: the playbook)")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "run.yaml"
        config.write_text(yaml.safe_dump(SMALL_TRIALS))
        replies = [p.read_text() for p in sorted((checkout / "targets/pq_l2/playbook").glob("*.md"))
                   if not p.name.endswith(".repair.md")]
        offline = loop(checkout, "offline", min(args.attempts, len(replies)), config, {})
        # A longer run than the playbook: its entries again (as a model repeating itself would).
        server = Server((replies * (args.attempts // len(replies) + 1))[:args.attempts])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            scripted = loop(checkout, "anthropic:claude-haiku-4-5", args.attempts, config,
                            {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
                             "ANTHROPIC_API_KEY": "sk-benchmark-not-a-key"})
        finally:
            server.shutdown()
    requests = [blocks_of(b) for b in server.bodies]
    per_attempt = prompt_tokens(offline)
    print(f"checkout {checkout} at {commit}; tokens ~ characters / 4")
    print(f"offline playbook ({offline.name}): prompt tokens per attempt {per_attempt}, "
          f"mean {sum(per_attempt) / max(1, len(per_attempt)):.0f}")
    sizes = [sum(tokens(t) for t, _ in r.blocks) for r in requests]
    stable = [sum(tokens(t) for t, _ in r.blocks[:next((i for i, (_, b) in enumerate(r.blocks) if b), -1) + 1])
              for r in requests]
    print(f"scripted Anthropic run ({scripted.name}): {len(requests)} requests, input tokens per request {sizes}; "
          f"first breakpoint's prefix {stable[:1]} tokens")
    for minimum in MINIMUMS:
        total, read, written = simulate(requests, minimum)
        print(f"  model minimum {minimum:>5} tokens: cache read {read / max(1, total):6.1%} of input, "
              f"written {written / max(1, total):6.1%}, uncached {(total - read - written) / max(1, total):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
