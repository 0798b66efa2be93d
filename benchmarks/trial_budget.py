"""Measure the trial itself against its goals, side by side in one run.

Runs real trials through `orchestrator trial` in fresh processes (cold start included) and
prints, for each: wall time, the trial's own total_seconds, peak RSS of any trial process, and
for paired A/A trials (the baseline kernel against itself) the speedup and CI half-width.

    python benchmarks/trial_budget.py [--aa N]

Goals (issue 2): paired trial <= 10 s wall, single <= 8 s, peak RSS <= 400 MB,
A/A |speedup - 1| <= 1 % and CI half-width <= 1 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "targets" / "pq_l2" / "kernels.py"
NUMBA = ROOT / "tests" / "kernels" / "pq_l2_numba.py"


def trial(*args: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "trial", "--target", "pq-l2", "--json", *args],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"trial {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return wall, json.loads(proc.stdout)


def row(label: str, wall: float, r: dict) -> None:
    line = f"{label:<30} wall {wall:6.2f} s  trial {r['total_seconds']:6.2f} s  peak {r['peak_mem_mb']:6.1f} MB"
    if r["speedup_geomean"] is not None:
        lo, hi = r["speedup_ci_90pct"]
        line += f"  speedup {r['speedup_geomean']:.4f} [{lo:.4f}, {hi:.4f}] half-width {(hi - lo) / 2 * 100:.2f} %"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa", type=int, default=5, help="number of paired A/A trials")
    args = parser.parse_args()
    trial()                                           # builds the fixture cache if cold; not counted
    walls: dict[str, list[float]] = {"single": [], "paired": []}
    rss: list[float] = []
    wall, r = trial()
    row("single (baseline kernel)", wall, r)
    walls["single"].append(wall)
    rss.append(r["peak_mem_mb"])
    wall, r = trial("--mode", "baseline")
    row("baseline mode (3 passes)", wall, r)
    rss.append(r["peak_mem_mb"])
    wall, r = trial("--kernel", str(NUMBA), "--against", str(BASELINE))
    row("paired numba vs baseline", wall, r)
    walls["paired"].append(wall)
    rss.append(r["peak_mem_mb"])
    dev, half = [], []
    for i in range(args.aa):
        wall, r = trial("--against", str(BASELINE))
        row(f"paired A/A #{i + 1}", wall, r)
        walls["paired"].append(wall)
        rss.append(r["peak_mem_mb"])
        lo, hi = r["speedup_ci_90pct"]
        dev.append(abs(r["speedup_geomean"] - 1) * 100)
        half.append((hi - lo) / 2 * 100)
    print()
    print(f"paired wall max {max(walls['paired']):.2f} s (goal <= 10)   single wall {max(walls['single']):.2f} s (goal <= 8)")
    print(f"peak RSS max {max(rss):.1f} MB (goal <= 400)")
    print(f"A/A |speedup-1| max {max(dev):.2f} % (goal <= 1)   CI half-width max {max(half):.2f} %, "
          f"median {sorted(half)[len(half) // 2]:.2f} % (goal <= 1)")


if __name__ == "__main__":
    main()
