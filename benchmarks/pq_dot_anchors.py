"""pq-dot speed and ranking anchors: a kernel, the reference and faiss, on identical data, one thread.

For each of the 9 speed workloads (3 shapes x 3 distributions, N=20,000, the harness's own
fixtures) and ``--queries`` fresh queries per workload, times one query at a time:

  kernel     the op the harness times: ``target.OPS["speed"]`` = one ``PqKernel.search`` (table,
             distances, top-10), on a ``PqKernel`` from ``--kernel``
  reference  ``reference.distance_table`` + ``reference.distances`` + the oracle's ``top_k``
  faiss      ``faiss.IndexPQ(d, M, 8, METRIC_INNER_PRODUCT).search(q, 10)``, same codebook and codes

faiss returns the 10 largest inner products ``Σ_m q_m·c_m``; Lance's distance is
``Σ_m (1 − q_m·c_m) − (M − 1) = 1 − Σ_m q_m·c_m``, so the rankings must agree and faiss's scores
must equal ``1 − distance``. Prints median us/query, kernel/faiss and reference/faiss ratios with
geomeans over workloads, and for how many queries faiss's top-10 agrees with the reference's
(ties allowed: faiss's ids, scored with the reference distances, give the reference's top-10
distances within the harness's per-element bound) and its scores match ``1 − distance`` within it.

Run:  python benchmarks/pq_dot_anchors.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
Needs faiss:  pip install -e '.[bench]'
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anchoring import Table, faiss, faiss_pq_index, parse_args, time_arms  # first: sets one thread before numpy loads BLAS
from targets.harness.pq import k_array
from targets.harness.worker import load_kernel  # the harness's own importlib loader
from targets.pq_dot import inputs, reference
from targets.pq_dot.run_experiment import Oracle
from targets.pq_dot.target import OPS, TOP_K, build
from targets.pq_l2.reference import top_k

DEFAULT_KERNEL = Path(__file__).resolve().parent.parent / "targets" / "pq_dot" / "kernels.py"


def agree(dists: np.ndarray, tol: np.ndarray, faiss_scores: np.ndarray, faiss_ids: np.ndarray) -> bool:
    """faiss's ids, scored with the reference distances, give the reference's top-10 distances,
    and faiss's scores are 1 − those distances, all within the per-element bound."""
    if np.unique(faiss_ids).size != faiss_ids.size or faiss_ids.min() < 0:
        return False
    ref_ids, _ = top_k(dists, TOP_K)
    d64 = dists.astype(np.float64)
    mine, want = np.sort(d64[faiss_ids]), np.sort(d64[ref_ids])
    slack = np.sort(tol[faiss_ids]) + np.sort(tol[ref_ids])
    scores_ok = np.abs((1.0 - faiss_scores.astype(np.float64)) - d64[faiss_ids]) <= 2 * tol[faiss_ids]
    return bool(np.all(np.abs(mine - want) <= slack) and np.all(scores_ok))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, DEFAULT_KERNEL, argv)
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    n = inputs.SPEED_NUM_VECTORS
    table = Table(f"kernel {args.kernel}  faiss {faiss.__version__}  N={n}  {args.queries} queries/workload  1 thread",
                  22, "top10 agree")
    for shape in inputs.SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            p = f"speed/{shape.label}/{dist}/"
            codebook, codes = fx[p + "codebook"], fx[p + "codes_aos"]
            params = {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n}
            inst = build(kernels, params, {"codebook": codebook, "codes_aos": codes})
            index = faiss_pq_index(shape.dim, shape.num_sub_vectors, codebook, codes, n, faiss.METRIC_INNER_PRODUCT)
            oracle = Oracle(shape, codebook, codes, n)
            queries = inputs.speed_queries(shape, dist, fx[p + "centres"], args.seed, args.queries)

            def run_kernel(q):
                return OPS["speed"](inst, {"query": q, "k": k_array(TOP_K)})

            def run_reference(q):
                return top_k(reference.distances(shape, reference.distance_table(shape, codebook, q), codes, n), TOP_K)

            def run_faiss(q):
                return index.search(q[None, :], TOP_K)

            def agrees(q):
                dists, tol = oracle(q)
                scores, ids = run_faiss(q)
                return agree(dists, tol, scores[0], ids[0])

            medians, agreed = time_arms((run_kernel, run_reference, run_faiss), queries, agrees)
            table.row(f"{shape.label}/{dist}", medians, agreed, len(queries))
    table.geomean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
