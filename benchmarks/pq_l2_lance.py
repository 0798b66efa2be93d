"""pq-l2 against Lance itself: a kernel and Lance's own PQ search, on identical data, one thread.

For each of the 9 speed workloads (3 shapes x 3 distributions, N=20,000, the harness's own
fixtures), builds the harness's Lance-arm dataset (each vector decoded from its codes, an IVF_PQ
index holding the fixture's codebook, one partition, zero IVF centroid: no residuals; no refine;
Lance's stored codes checked against the fixture's), then times ``--queries`` fresh queries,
interleaved, in this one process (the harness's own vs-Lance trial is benchmarks/vs_lance.py):

  kernel  the op the harness times: ``target.OPS["speed"]``, one ``PqKernel.search`` (distance
          table + distances + top-10) on a ``PqKernel`` from ``--kernel``
  Lance   Lance's own operator timer for the same query, ``index_search_time`` from
          ``analyze_plan()`` (distance table + distances + top-k), which leaves out Lance's
          ~1 ms of per-query planning and Python overhead (see ../shared/lance-anchor.md)

Prints median us/query of each, kernel/Lance (below 1.0: the kernel beats Lance), the geomean
over workloads, and on how many queries Lance's top-10 is tie-consistent with the kernel's.
The process is pinned to one core; Lance runs one CPU thread there.

Run:  python benchmarks/pq_l2_lance.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
"""

from __future__ import annotations

from common import ROOT  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np



from targets.harness import lance, lance_arm
from targets.harness.checks import ABS_TOL, PQ_RTOL, check_topk
from targets.harness.machine import cpu_model, simd_flags
from targets.harness.pq import OPS, TOP_K, build, k_array
from targets.harness.worker import load_kernel
from targets.pq_l2 import inputs, reference

DEFAULT_KERNEL = ROOT / "targets" / "pq_l2" / "kernels.py"


def lance_query(ds, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(Lance's index_search_time in us, its top-10 row ids, its top-10 distances) for one query."""
    us = lance.timed_search(ds, q, TOP_K) / 1e3
    ids, dists = lance.search(ds, q, TOP_K)
    return us, ids, dists


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=32, help="fresh queries per workload (default 32)")
    ap.add_argument("--kernel", type=Path, default=DEFAULT_KERNEL, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh queries (default 1)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    n = inputs.SPEED_NUM_VECTORS
    print(f"kernel {args.kernel}  pylance {lance.version()}  CPU {cpu_model()} [{simd_flags()}]  N={n}  "
          f"{args.queries} queries/workload  1 thread, pinned")
    print(f"{'workload':<20}{'kernel us':>11}{'Lance us':>11}{'kernel/Lance':>14}{'top10 agree':>13}")
    ratios = []
    for shape in inputs.SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            p = f"speed/{shape.label}/{dist}/"
            codebook, codes, centres = fx[p + "codebook"], fx[p + "codes_aos"], fx[p + "centres"]
            with tempfile.TemporaryDirectory(prefix="lar-lance-") as tmp:
                # The harness's Lance arm's dataset: each vector decoded from its codes, so Lance
                # re-encodes it to the fixture's codes (checked when opened).
                ds = lance_arm.open_or_build(Path(tmp), "l2", codebook, codes, n, shape.num_sub_vectors)
                inst = build(kernels, {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n},
                             {"codebook": codebook, "codes_aos": codes})
                queries = inputs.speed_queries(shape, dist, centres, args.seed, args.queries)
                for q in queries[:2]:                         # warm-up: JIT, Lance's index cache
                    OPS["speed"](inst, {"query": q, "k": k_array(TOP_K)})
                    lance_query(ds, q)
                kernel_us, lance_us, agreed = [], [], 0
                gc.disable()
                try:
                    for i, q in enumerate(queries):
                        for first in ((0, 1) if i % 2 == 0 else (1, 0)):
                            if first == 0:
                                # Lance's timer starts after its planning warmed its caches: the
                                # kernel gets an untimed call on the previous query first.
                                OPS["speed"](inst, {"query": queries[i - 1], "k": k_array(TOP_K)})
                                t0 = time.perf_counter_ns()
                                OPS["speed"](inst, {"query": q, "k": k_array(TOP_K)})
                                kernel_us.append((time.perf_counter_ns() - t0) / 1e3)
                            else:
                                us, ids, dists = lance_query(ds, q)
                                lance_us.append(us)
                        full = reference.distances(shape, reference.distance_table(shape, codebook, q), codes, n)
                        agreed += check_topk(ids, dists, full, TOP_K, atol=ABS_TOL, rtol=PQ_RTOL) is None
                finally:
                    gc.enable()
            k_med, l_med = float(np.median(kernel_us)), float(np.median(lance_us))
            ratios.append(k_med / l_med)
            print(f"{shape.label + '/' + dist:<20}{k_med:>11.1f}{l_med:>11.1f}{k_med / l_med:>14.2f}"
                  f"{f'{agreed}/{len(queries)}':>13}", flush=True)
    print(f"{'geomean':<42}{float(np.exp(np.mean(np.log(ratios)))):>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
