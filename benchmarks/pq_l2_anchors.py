"""pq-l2 speed anchors: a kernel, the reference and faiss, on identical data, single-threaded.

For each of the 9 speed workloads (3 shapes x 3 distributions, N=20,000, the harness's own
fixtures) and ``--queries`` fresh queries per workload, times one query at a time:

  kernel     the op the harness times: ``target.OPS["speed"]`` = one ``PqKernel.search`` (table,
             distances, top-10), on a ``PqKernel`` from ``--kernel``
  reference  ``reference.distance_table`` + ``reference.distances`` + the oracle's ``top_k``
  faiss      ``faiss.IndexPQ.search(q, 10)`` with the same codebook and the same codes

The three are interleaved query by query (in a balanced order: common.arm_order) so they see the same machine
conditions. Prints median us/query, kernel/faiss and reference/faiss ratios with geomeans over
workloads, and how many queries' faiss top-10 agree with the kernel's (ties allowed: a swap counts
as agreement when the swapped ids' kernel distances are within 1e-4 + 1e-6*|d|).

Run:  python benchmarks/pq_l2_anchors.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
Needs faiss:  pip install -e '.[bench]'
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anchoring import Table, faiss, faiss_pq_index, parse_args, time_arms  # first: sets one thread before numpy loads BLAS
from targets.harness.pq import OPS, TOP_K, build, k_array
from targets.harness.worker import load_kernel  # the harness's own importlib loader
from targets.pq_l2 import inputs, reference
from targets.pq_l2.reference import top_k

DEFAULT_KERNEL = Path(__file__).resolve().parent.parent / "targets" / "pq_l2" / "kernels.py"
ATOL, RTOL = 1e-4, 1e-6


def agree(kernel_dists: np.ndarray, kernel_ids: np.ndarray, faiss_ids: np.ndarray) -> bool:
    """faiss's ids, scored with the kernel's distances, give the kernel's top-10 distances."""
    if np.unique(faiss_ids).size != faiss_ids.size or faiss_ids.min() < 0:
        return False
    mine = np.sort(kernel_dists[faiss_ids].astype(np.float64))
    want = np.sort(kernel_dists[kernel_ids].astype(np.float64))
    return bool(np.all(np.abs(mine - want) <= ATOL + RTOL * np.abs(want)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, DEFAULT_KERNEL, argv)
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    n = inputs.SPEED_NUM_VECTORS
    table = Table(f"kernel {args.kernel}  faiss {faiss.__version__}  N={n}  {args.queries} queries/workload  1 thread",
                  20, "top10 agree")
    for shape in inputs.SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            p = f"speed/{shape.label}/{dist}/"
            codebook, codes = fx[p + "codebook"], fx[p + "codes_aos"]
            params = {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n}
            inst = build(kernels, params, {"codebook": codebook, "codes_aos": codes})
            index = faiss_pq_index(shape.dim, shape.num_sub_vectors, codebook, codes, n, faiss.METRIC_L2)
            queries = inputs.speed_queries(shape, dist, fx[p + "centres"], args.seed, args.queries)

            def run_kernel(q):
                return OPS["speed"](inst, {"query": q, "k": k_array(TOP_K)})

            def run_reference(q):
                return top_k(reference.distances(shape, reference.distance_table(shape, codebook, q), codes, n), TOP_K)

            def run_faiss(q):
                return index.search(q[None, :], TOP_K)

            def agrees(q):
                # Every kernel distance (its search with k = N), then faiss's ids scored by them.
                out = OPS["check"](inst, {"query": q, "k": k_array(n)})
                dists = np.empty(n, dtype=np.float32)
                dists[out["topk_ids"]] = out["topk_dists"]
                kernel_ids, _ = top_k(dists, TOP_K)
                return agree(dists, kernel_ids, run_faiss(q)[1][0])

            medians, agreed = time_arms((run_kernel, run_reference, run_faiss), queries, agrees)
            table.row(f"{shape.label}/{dist}", medians, agreed, len(queries))
    table.geomean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
