"""Build the conversation for one attempt from files a human may edit between attempts.

Re-reads ``HARNESS.md``, the target's ``program.md`` and ``lessons.md`` and every template in
``prompts/`` each time, and returns their sha256 so the ledger records exactly what was asked.
The stable part (HARNESS.md, program.md) is the system message, so providers can cache it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from orchestrator.ledger import RunHistory
from orchestrator.provider import Message

MAX_EVIDENCE_CHARS = 4000


@dataclass(frozen=True)
class PromptFiles:
    harness: Path
    program: Path
    lessons: Path
    prompts_dir: Path

    def template(self, name: str) -> Path:
        return self.prompts_dir / name


@dataclass(frozen=True)
class Prompt:
    messages: list[Message]
    file_hashes: dict[str, str]      # file name -> sha256 of what was read

    def render(self) -> str:
        return "\n\n".join(f"===== {m.role} =====\n{m.content}" for m in self.messages)


def _read(path: Path, hashes: dict[str, str], missing_ok: bool = False) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            hashes[path.name] = "absent"
            return ""
        raise
    hashes[path.name] = hashlib.sha256(data).hexdigest()
    return data.decode()


def history_table(history: RunHistory, rows: int) -> str:
    """A compact table of earlier attempts: hypothesis, verdict, speedup or failure reason."""
    records = history.records
    if not records:
        return "(none yet: this is the first attempt)"
    lines = ["| # | verdict | speedup [90% CI] | hypothesis / reason |", "|---|---|---|---|"]
    shown = records[-rows:]
    if len(records) > len(shown):
        lines.insert(0, f"({len(records) - len(shown)} older attempts not shown)")
    for r in shown:
        ci = r.speedup_ci
        speed = f"{r.speedup:.3f}x [{ci[0]:.3f}, {ci[1]:.3f}]" if r.speedup and len(ci) == 2 else "-"
        what = (r.hypothesis or "(no hypothesis)").replace("|", "/")
        if not r.kept:
            what += f" — {r.reason}".replace("|", "/")
        lines.append(f"| {r.attempt} | {r.verdict or '?'} | {speed} | {what[:300]} |")
    return "\n".join(lines)


def build(files: PromptFiles, target: str, attempt: int, kernel: str, history: RunHistory,
          history_rows: int) -> Prompt:
    hashes: dict[str, str] = {}
    system = Template(_read(files.template("system.md"), hashes)).substitute(
        harness=_read(files.harness, hashes), program=_read(files.program, hashes), target=target)
    lessons = _read(files.lessons, hashes, missing_ok=True).strip() or "(none yet)"
    evidence = (history.last_failure or "(none: the last attempt did not fail)")[-MAX_EVIDENCE_CHARS:]
    user = Template(_read(files.template("attempt.md"), hashes)).substitute(
        attempt=attempt, target=target, kernel=kernel.rstrip("\n"), history=history_table(history, history_rows),
        lessons=lessons, last_failure=evidence, reply_format=_read(files.template("reply-format.md"), hashes).strip())
    return Prompt([Message("system", system), Message("user", user)], hashes)


def repair(prompt: Prompt, files: PromptFiles, reply: str, error: str) -> Prompt:
    """The conversation extended by the model's reply and the precise reason it failed."""
    hashes = dict(prompt.file_hashes)
    text = Template(_read(files.template("repair.md"), hashes)).substitute(error=error)
    return Prompt([*prompt.messages, Message("assistant", reply), Message("user", text)], hashes)
