"""posting-intersect speed anchors: kernels, pyroaring and numpy on identical AND queries, one thread.

For each of the 12 speed workloads (K in {2, 3, 5, 8} x skewed/balanced/dense, the harness's own
indexes and query batches) and ``--queries`` fresh calls per workload, times one call (a batch of
queries) at a time, the arms interleaved call by call (in a balanced order: common.arm_order):

  baseline     the op the harness times (``target.OPS["speed"]``: output allocation, the kernel's
               ``intersect``, collection) with the shipped kernels.py (the port of Lance's loops)
  kernel       the same op with ``--kernel`` (default: the shipped kernels.py)
  roaring AND  pyroaring: ``BitMap.intersection`` of each query's lists and ``to_array()`` of the
               answer, the lists already roaring bitmaps, shifted (untimed: a roaring index)
  roaring conv pyroaring: building each query's bitmaps from its shifted uint32 lists (the
               conversion a roaring AND would need from Lance's sorted arrays), timed apart
  intersect1d  ``np.intersect1d(assume_unique=True)`` folded over each query's lists, rarest first
               (the shifted int64 lists made untimed)

sortednp (``intersect``/``kway_intersect``) is not an arm: its newest release (0.5.0) ships no
numpy-2 wheel (its extension fails to import under numpy 2.x, and installing it downgrades numpy).

Prints median us per call per arm, kernel/roaring-AND and baseline/roaring-AND ratios (below 1:
faster than roaring) with geomeans, and on how many calls every arm's answers equal the oracle's.

Run:  python benchmarks/posting_intersect_anchors.py [--queries 24] [--kernel path/to/kernels.py] [--seed 1]
Needs pyroaring:  pip install -e '.[bench]'
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
from targets.posting_intersect import reference, run_experiment, target

try:
    import pyroaring
except ImportError:
    print("pyroaring is not installed: run  pip install -e '.[bench]'  (installs pyroaring)", file=sys.stderr)
    sys.exit(2)

SHIPPED = ROOT / "targets" / "posting_intersect" / "kernels.py"
ARMS = ("baseline", "kernel", "roaring AND", "roaring conv", "intersect1d")


def roaring_arms(index: dict[str, np.ndarray]) -> tuple[Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                                                         Callable[[dict[str, np.ndarray]], object]]:
    """(AND on prepared bitmaps, conversion) for one index; the prepared bitmaps are made per call
    untimed by ``prepare``, which the AND arm reads."""
    doc_ids, offsets = index["doc_ids"], index["list_offsets"]
    bitmaps = [pyroaring.BitMap(doc_ids[offsets[t]:offsets[t + 1]]) for t in range(offsets.size - 1)]
    prepared: dict[int, list[list[pyroaring.BitMap]]] = {}

    def prepare(call: dict[str, np.ndarray]) -> None:
        prepared[id(call)] = [[bitmaps[t].shift(int(s)) for t, s in zip(terms, shifts)]
                              for terms, shifts in zip(call["terms"].tolist(), call["shifts"].tolist())]

    def conjunction(call: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(pyroaring.BitMap.intersection(*maps).to_array()) for maps in prepared[id(call)]]

    def convert(call: dict[str, np.ndarray]) -> object:
        return [[pyroaring.BitMap((doc_ids[offsets[t]:offsets[t + 1]].astype(np.int64) + s).astype(np.uint32))
                 for t, s in zip(terms, shifts)] for terms, shifts in zip(call["terms"].tolist(), call["shifts"].tolist())]

    conjunction.prepare = prepare                 # type: ignore[attr-defined]
    return conjunction, convert


def numpy_arm(index: dict[str, np.ndarray]) -> tuple[Callable[[dict[str, np.ndarray]], None],
                                                      Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
    lists: dict[int, list[list[np.ndarray]]] = {}

    def prepare(call: dict[str, np.ndarray]) -> None:
        lists[id(call)] = [sorted(reference.query_lists(index["doc_ids"], index["list_offsets"], t, s), key=len)
                           for t, s in zip(call["terms"], call["shifts"])]

    def fold(call: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = []
        for query in lists[id(call)]:
            found = query[0]
            for other in query[1:]:
                found = np.intersect1d(found, other, assume_unique=True)
            out.append(found)
        return out
    return prepare, fold


def split(out: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The op's collected answers per query."""
    ends = np.cumsum(out["counts"])
    return np.split(out["docs"], ends[:-1]) if ends.size else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=24, help="fresh calls per workload (default 24)")
    ap.add_argument("--kernel", type=Path, default=SHIPPED, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh calls (default 1)")
    args = ap.parse_args(argv)
    baseline_mod = load_kernel(str(SHIPPED), "anchor_baseline_kernels")
    kernel_mod = load_kernel(str(args.kernel), "anchor_kernels")
    print(f"kernel {args.kernel}  pyroaring {pyroaring.__version__}  numpy {np.__version__}  "
          f"{args.queries} calls/workload  1 thread")
    print(f"{'workload':<14}{'q/call':>7}" + "".join(f"{a:>14}" for a in ARMS) + f"{'kern/roar':>11}{'base/roar':>11}"
          f"{'agree':>8}")
    ratios = []
    for w in run_experiment.workloads():
        base, kern = (target.build(m, w.params, w.arrays) for m in (baseline_mod, kernel_mod))
        conjunction, convert = roaring_arms(w.arrays)
        np_prepare, np_fold = numpy_arm(w.arrays)
        calls = w.queries(args.seed, args.queries + 1)
        arms: list[Callable[[dict[str, np.ndarray]], object]] = [
            lambda c: target.OPS["speed"](base, c), lambda c: target.OPS["speed"](kern, c), conjunction, convert, np_fold]
        times = np.empty((args.queries, len(arms)))
        agreed = 0
        for i, call in enumerate(calls):
            conjunction.prepare(call)                    # type: ignore[attr-defined]
            np_prepare(call)
            if i == 0:                                   # warm-up: numba loads, caches
                for arm in arms:
                    arm(call)
                continue
            gc.disable()
            try:
                results: dict[int, Any] = {}
                for j in arm_order(i, len(arms)):
                    t0 = time.perf_counter_ns()
                    results[j] = arms[j](call)
                    times[i - 1, j] = (time.perf_counter_ns() - t0) / 1e3
            finally:
                gc.enable()
            want = reference.answers(w.arrays["doc_ids"], w.arrays["list_offsets"], call["terms"], call["shifts"])
            answers = [split(results[0]), split(results[1]), results[2], results[4]]
            agreed += all(len(got) == len(want) and all(np.array_equal(g, x) for g, x in zip(got, want))
                          for got in answers)
        med = np.median(times, axis=0)
        ratios.append((med[1] / med[2], med[0] / med[2]))
        print(f"{w.combo:<14}{w.queries(0, 1)[0]['terms'].shape[0]:>7}" + "".join(f"{m:>14.1f}" for m in med)
              + f"{med[1] / med[2]:>11.2f}{med[0] / med[2]:>11.2f}{f'{agreed}/{args.queries}':>8}")
    geo = np.exp(np.log(np.array(ratios)).mean(axis=0))
    print(f"{'geomean':<{14 + 7 + 14 * len(ARMS)}}{geo[0]:>11.2f}{geo[1]:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
