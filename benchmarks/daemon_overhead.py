"""Daemon overhead per attempt: everything except the provider call and the trial subprocesses
(prompt build, edit, git, gate, ledger), from the phase timings the ledger records.

Runs the offline playbook on a fresh clone of this repository (committed state) and prints each
attempt's phases and overhead, then the median. Goal (issue 3): median overhead <= 0.5 s.

    python benchmarks/daemon_overhead.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ("propose", "trial", "cumulative")     # provider call and trial subprocesses


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "orchestrator", "loop", "--target", "pq-l2", "--model", "offline"],
                       cwd=clone, check=True, capture_output=True)
        wall = time.monotonic() - started
        ledger = next((clone / "runs" / "pq-l2").glob("*/attempts.jsonl"))
        overheads, durations = [], 0.0
        for line in ledger.read_text().splitlines():
            event = json.loads(line)
            if event["event"] != "finished":
                continue
            phases = event.get("phase_seconds", {})
            durations += event["duration_seconds"]
            overhead = event["duration_seconds"] - sum(phases.get(k, 0.0) for k in EXTERNAL)
            overheads.append(overhead)
            detail = "  ".join(f"{k} {v:.3f}" for k, v in phases.items() if k not in EXTERNAL)
            print(f"attempt {event['attempt']} {event['reason']:<12} overhead {overhead:.3f} s   ({detail})")
        # Start-up, ledger writes and the summary happen outside any attempt's own timing.
        outside = (wall - durations) / len(overheads)
        print(f"\nmedian daemon overhead per attempt: {statistics.median(overheads):.3f} s (goal <= 0.5 s); "
              f"max {max(overheads):.3f} s; plus {outside:.3f} s per attempt outside the attempts "
              f"(process start, worktree, ledger writes, summary; loop wall {wall:.1f} s)")


if __name__ == "__main__":
    main()
