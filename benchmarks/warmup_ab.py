"""What warm-up buys where only one arm compiles: a numba candidate against the numpy baseline.

An A/A calibration cannot show it (both arms pay the first call alike), so this runs the same
A/B trial with warm-up on and off (calibrate's `warmup` ablation), interleaved in random order
round by round, and prints each trial's speedup and the medians side by side.

    python benchmarks/warmup_ab.py [--rounds 10] [--kernel tests/kernels/pq_l2_numba.py]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import targets  # noqa: E402
from targets.harness.plan import TrialOptions  # noqa: E402
from targets.harness.runner import run_trial  # noqa: E402

VARIANTS = {"warm-up on": (), "warm-up off": ("warmup",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--kernel", type=Path, default=ROOT / "tests" / "kernels" / "pq_l2_numba.py")
    args = parser.parse_args()
    info = targets.get("pq-l2")
    speedups: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        names = list(VARIANTS)
        if secrets.randbits(1):
            names.reverse()
        for name in names:
            result = run_trial(info.plan(), TrialOptions(kernel=args.kernel.resolve(), against=info.kernel_path,
                                                         ablated=VARIANTS[name]))
            if not result.ok:
                sys.exit(f"trial failed: {result.failure}")
            # A passing paired trial has all three.
            assert result.speedup_ci_90pct and result.speedup_geomean is not None and result.worst_combo_speedup
            lo, hi = result.speedup_ci_90pct
            speedups[name].append(result.speedup_geomean)
            print(f"round {r + 1:2d} {name:<12} speedup {result.speedup_geomean:.4f} [{lo:.4f}, {hi:.4f}] "
                  f"worst combo {result.worst_combo_speedup.value:.4f} in {result.total_seconds:.1f} s", flush=True)
    on, off = (statistics.median(speedups[name]) for name in VARIANTS)
    print(f"median speedup: warm-up on {on:.4f}, off {off:.4f}; off/on {off / on:.4f}")


if __name__ == "__main__":
    main()
