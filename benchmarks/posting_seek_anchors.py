"""posting-seek speed anchors: kernels and numpy on identical seek sequences, one thread.

For each of the 15 speed workloads (lists of 100, 1,000 and 10,000 blocks x the five access
patterns, the harness's own lists and sequences) and ``--calls`` fresh sequences per workload,
times one sequence at a time, the arms interleaved call by call (in a balanced order: common.arm_order):

  baseline      the op the harness times (``target.OPS["speed"]``: the result allocation and one
                ``seek_sequence`` call) with the shipped kernels.py (the port of Lance's loop)
  kernel        the same op with ``--kernel`` (default: the shipped kernels.py)
  searchsorted  a sanity anchor, not a rival: numpy's ``searchsorted`` run one seek at a time in
                Python (the sequence is a chain: each target comes from the previous result)

The Rust crate's own timings are the real reference point for this op (a Python loop is 10-50x
slower than any compiled seek); this script shows the kernels' absolute ns per seek and checks
that every arm returns the oracle's results.

Prints median ns per seek per arm, kernel/baseline ratios (below 1: the kernel is faster) with
their geomean, and on how many calls every arm agrees with the oracle.

Run:  python benchmarks/posting_seek_anchors.py [--calls 8] [--kernel path/to/kernels.py] [--seed 1]
"""

from __future__ import annotations

from common import ROOT, arm_order  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness.worker import load_kernel
from targets.posting_seek import reference, run_experiment, target

SHIPPED = ROOT / "targets" / "posting_seek" / "kernels.py"
ARMS = ("baseline", "kernel", "searchsorted")


def searchsorted_seeks(doc_ids: np.ndarray) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The sequence, one ``np.searchsorted`` per seek from Python."""
    n = doc_ids.size

    def run(call: dict[str, np.ndarray]) -> np.ndarray:
        ops = call["ops"].tolist()
        out = np.empty(len(ops), dtype=np.int64)
        index, base, fresh = 0, 0, True
        for i, op in enumerate(ops):
            if op < 0:
                index, base, fresh = 0, 0, True
                out[i] = -1
                continue
            if index >= n:
                out[i] = -1
                continue
            target_id = (0 if fresh else base) + op
            # as uint32 (targets stay below 2**32): a wider scalar would make numpy copy the list
            index = max(index, int(np.searchsorted(doc_ids, np.uint32(min(target_id, (1 << 32) - 1)))))
            fresh = False
            base = int(doc_ids[index]) if index < n else -1
            out[i] = base
        return out
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=8, help="fresh sequences per workload (default 8)")
    ap.add_argument("--kernel", type=Path, default=SHIPPED, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh sequences (default 1)")
    args = ap.parse_args(argv)
    baseline_mod = load_kernel(str(SHIPPED), "anchor_baseline_kernels")
    kernel_mod = load_kernel(str(args.kernel), "anchor_kernels")
    print(f"kernel {args.kernel}  numpy {np.__version__}  {args.calls} calls/workload  1 thread")
    print(f"{'workload':<26}{'seeks':>7}" + "".join(f"{a + ' ns':>17}" for a in ARMS) + f"{'kern/base':>11}{'agree':>8}")
    ratios = []
    for w in run_experiment.workloads():
        base, kern = (target.build(m, w.params, w.arrays) for m in (baseline_mod, kernel_mod))
        doc_ids = w.arrays["doc_ids"]
        arms: list[Callable[[dict[str, np.ndarray]], object]] = [
            lambda c: target.OPS["speed"](base, c), lambda c: target.OPS["speed"](kern, c), searchsorted_seeks(doc_ids)]
        calls = w.queries(args.seed, args.calls + 1)
        for arm in arms:                                 # warm-up: numba loads, caches
            arm(calls[0])
        times = np.empty((args.calls, len(arms)))
        agreed = 0
        for i, call in enumerate(calls[1:]):
            results: dict[int, Any] = {}
            gc.disable()
            try:
                for j in arm_order(i, len(arms)):
                    t0 = time.perf_counter_ns()
                    results[j] = arms[j](call)
                    times[i, j] = (time.perf_counter_ns() - t0) / call["ops"].size
            finally:
                gc.enable()
            want = reference.simulate(doc_ids, call["ops"])
            got = [results[0]["results"], results[1]["results"], results[2]]
            agreed += all(np.array_equal(g, want) for g in got)
        med = np.median(times, axis=0)
        ratios.append(med[1] / med[0])
        print(f"{w.combo:<26}{calls[1]['ops'].size:>7}" + "".join(f"{m:>17.1f}" for m in med)
              + f"{med[1] / med[0]:>11.2f}{f'{agreed}/{args.calls}':>8}")
    print(f"{'geomean':<{26 + 7 + 17 * len(ARMS)}}{float(np.exp(np.mean(np.log(ratios)))):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
