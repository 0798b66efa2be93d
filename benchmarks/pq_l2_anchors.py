"""pq-l2 speed anchors: a kernel, the reference and faiss, on identical data, single-threaded.

For each of the 9 speed workloads (3 shapes x 3 distributions, N=20,000, the harness's own
fixtures) and ``--queries`` fresh queries per workload, times one query at a time:

  kernel     the op the harness times: ``target.OPS["speed"]`` = distance_table +
             compute_distances + top-10 (``target.top_k``), on a ``PqKernel`` from ``--kernel``
  reference  ``reference.distance_table`` + ``reference.distances`` + ``target.top_k``
  faiss      ``faiss.IndexPQ.search(q, 10)`` with the same codebook and the same codes

The three are interleaved query by query (rotating which goes first) so they see the same machine
conditions. Prints median us/query, kernel/faiss and reference/faiss ratios with geomeans over
workloads, and how many queries' faiss top-10 agree with the kernel's (ties allowed: a swap counts
as agreement when the swapped ids' kernel distances are within 1e-4 + 1e-6*|d|).

Run:  python benchmarks/pq_l2_anchors.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
Needs faiss:  pip install -e '.[bench]'
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"         # before numpy (and its BLAS) is imported

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError:
    print("faiss is not installed: run  pip install -e '.[bench]'  (installs faiss-cpu)", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from targets.harness.worker import load_kernel  # noqa: E402  (the harness's own importlib loader)
from targets.pq_l2 import inputs, reference  # noqa: E402
from targets.pq_l2.target import OPS, TOP_K, NUM_CENTROIDS, build, top_k  # noqa: E402

DEFAULT_KERNEL = Path(__file__).resolve().parent.parent / "targets" / "pq_l2" / "kernels.py"
ATOL, RTOL = 1e-4, 1e-6


def faiss_index(shape, codebook: np.ndarray, codes_aos: np.ndarray, n: int) -> faiss.IndexPQ:
    index = faiss.IndexPQ(shape.dim, shape.num_sub_vectors, 8)     # L2, 8 bits: code_size == M
    assert index.pq.ksub == NUM_CENTROIDS and index.code_size == shape.num_sub_vectors
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32), index.pq.centroids)
    faiss.copy_array_to_vector(np.ascontiguousarray(codes_aos, dtype=np.uint8), index.codes)
    index.ntotal = n
    index.is_trained = True
    return index


def agree(kernel_dists: np.ndarray, kernel_ids: np.ndarray, faiss_ids: np.ndarray) -> bool:
    """faiss's ids, scored with the kernel's distances, give the kernel's top-10 distances."""
    if np.unique(faiss_ids).size != faiss_ids.size or faiss_ids.min() < 0:
        return False
    mine = np.sort(kernel_dists[faiss_ids].astype(np.float64))
    want = np.sort(kernel_dists[kernel_ids].astype(np.float64))
    return bool(np.all(np.abs(mine - want) <= ATOL + RTOL * np.abs(want)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=32, help="fresh queries per workload (default 32)")
    ap.add_argument("--kernel", type=Path, default=DEFAULT_KERNEL, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh queries (default 1)")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    n = inputs.SPEED_NUM_VECTORS
    print(f"kernel {args.kernel}  faiss {faiss.__version__}  N={n}  {args.queries} queries/workload  1 thread")
    print(f"{'workload':<20}{'kernel us':>11}{'ref us':>11}{'faiss us':>10}{'kern/faiss':>12}"
          f"{'ref/faiss':>11}{'top10 agree':>13}")
    ratios = []
    for shape in inputs.SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            p = f"speed/{shape.label}/{dist}/"
            codebook, codes = fx[p + "codebook"], fx[p + "codes_aos"]
            params = {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n}
            inst = build(kernels, params, {"codebook": codebook, "codes_aos": codes})
            index = faiss_index(shape, codebook, codes, n)
            queries = inputs.speed_queries(shape, dist, fx[p + "centres"], args.seed, args.queries)

            def run_kernel(q):
                return OPS["speed"](inst, {"query": q})

            def run_reference(q):
                return top_k(reference.distances(shape, reference.distance_table(shape, codebook, q), codes, n), TOP_K)

            def run_faiss(q):
                return index.search(q[None, :], TOP_K)

            arms = (run_kernel, run_reference, run_faiss)
            for f in arms:                  # warm-up (numba JIT, caches), untimed
                f(queries[0])
            times = np.empty((len(queries), 3))
            agreed = 0
            gc.disable()
            try:
                for i, q in enumerate(queries):
                    for j in ((i + s) % 3 for s in range(3)):
                        t0 = time.perf_counter_ns()
                        arms[j](q)
                        times[i, j] = (time.perf_counter_ns() - t0) / 1e3
                    # Agreement, untimed: the full kernel distances, then faiss's ids scored by them.
                    table = np.full(shape.num_sub_vectors * NUM_CENTROIDS, np.nan, dtype=np.float32)
                    inst.kernel.distance_table(q, table)
                    dists = np.full(n, np.nan, dtype=np.float32)
                    inst.kernel.compute_distances(table, dists)
                    kernel_ids, _ = top_k(dists, TOP_K)
                    agreed += agree(dists, kernel_ids, run_faiss(q)[1][0])
            finally:
                gc.enable()
            k_us, r_us, f_us = np.median(times, axis=0)
            ratios.append((k_us / f_us, r_us / f_us))
            print(f"{shape.label + '/' + dist:<20}{k_us:>11.1f}{r_us:>11.1f}{f_us:>10.1f}{k_us / f_us:>12.2f}"
                  f"{r_us / f_us:>11.2f}{f'{agreed}/{len(queries)}':>13}")
    geo = np.exp(np.log(np.array(ratios)).mean(axis=0))
    print(f"{'geomean':<52}{geo[0]:>12.2f}{geo[1]:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
