"""Kernels against Lance itself, as the harness measures it: one vs-Lance trial per kernel.

Each trial is the one `orchestrator trial --against-lance` runs (and the loop runs after every
keep): Lance's own operator timer against the kernel's time less the call overhead, on the same
fresh queries, interleaved, one thread, pinned, every checked answer verified against the oracle.
Prints, per combo, Lance's time, each kernel's time and kernel speedup vs Lance (> 1: faster than
Lance), then the geomean over combos with its 90 % CI, the machine's load and what Lance was.

Run:  python benchmarks/vs_lance.py --target pq-l2 [--kernel a.py --kernel b.py] [--replicates 2]
      (default kernel: the target's kernels.py; a kernel may be a playbook state written to a file)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import targets  # noqa: E402
from targets.harness.plan import TrialOptions  # noqa: E402
from targets.harness.runner import run_trial  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="pq-l2")
    ap.add_argument("--kernel", type=Path, action="append", help="kernels.py to measure (repeatable)")
    ap.add_argument("--replicates", type=int, default=2, help="fresh worker pairs per trial (default 2)")
    ap.add_argument("--unsafe-no-sandbox", action="store_true")
    args = ap.parse_args(argv)
    info = targets.get(args.target)
    if not info.lance_runs:
        sys.exit(f"Lance cannot run {args.target}'s op: no Lance arm")
    kernels = args.kernel or [info.kernel_path]
    results = []
    for kernel in kernels:
        result = run_trial(info.plan(), TrialOptions(kernel=kernel.resolve(), lance=True, replicates=args.replicates,
                                                     sandbox=not args.unsafe_no_sandbox))
        if not result.ok:
            sys.exit(f"{kernel}: trial failed ({result.failure_kind}): {result.failure}")
        results.append(result)
    first = results[0]
    print(f"{args.target}: {len(kernels)} kernel(s) vs {first.anchor}")
    print(f"load average {os.getloadavg()[0]:.2f} (2-core machine); foreign CPU share on the worker core "
          + ", ".join(f"{r.contention.get('foreign_cpu_share', float('nan')):.0%}" for r in results))
    print(f"{'combo':<22}{'Lance us':>10}" + "".join(f"{f'k{i} us':>10}{f'k{i}/Lance':>11}" for i in range(len(results))))
    for combo in first.per_combo_speedup:
        lance_us = first.incumbent_per_combo_geomean_ns[combo] / 1e3
        cells = "".join(f"{r.per_combo_geomean_ns[combo] / 1e3:>10.1f}{r.per_combo_speedup[combo]:>10.2f}x" for r in results)
        print(f"{combo:<22}{lance_us:>10.1f}{cells}")
    nan = float("nan")                # a passing paired trial always has its CI
    print(f"{'geomean vs Lance':<32}" + "".join(
        f"{'':>10}{r.speedup_geomean:>6.2f}x [{lo:.2f}, {hi:.2f}]"
        for r in results for lo, hi in [r.speedup_ci_90pct or (nan, nan)]))
    for i, kernel in enumerate(kernels):
        print(f"k{i}: {kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
