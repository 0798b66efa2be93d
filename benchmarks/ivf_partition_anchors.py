"""ivf-partition speed anchors: a kernel, the reference and faiss, on identical data, single-threaded.

For each of the 9 speed workloads (3 shapes x 3 distance types, the harness's own fixtures) and
``--queries`` fresh queries per workload, times one query at a time:

  kernel     the op the harness times: ``target.OPS["speed"]`` = one ``find_partitions`` call on an
             ``IvfKernel`` from ``--kernel`` (cosine normalisation included)
  reference  ``reference.find_partitions`` (Lance-order f32 distances, then a sort by (dist, id))
  faiss      ``faiss.IndexFlatL2`` (l2; cosine on the query normalised by ``faiss.normalize_L2``,
             timed) or ``faiss.IndexFlatIP`` (dot: Lance's 1 − q·c ranks as faiss's largest q·c),
             ``.search(q, n)`` with n = the workload's nprobes (every centroid for None)

The three are interleaved query by query (in a balanced order: common.arm_order) so they see the same machine
conditions. Prints median us/query, kernel/faiss and reference/faiss ratios with geomeans over
workloads, and how many queries' faiss top-n agree with the kernel's (ties allowed: faiss's ids,
scored with the reference distances, must give the kernel's n distances within 1e-4 + 1e-5·|d|).

Run:  python benchmarks/ivf_partition_anchors.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
Needs faiss:  pip install -e '.[bench]'
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anchoring import Table, faiss, parse_args, time_arms  # first: sets one thread before numpy loads BLAS
from targets.harness.worker import load_kernel  # the harness's own importlib loader
from targets.ivf_partition import inputs, reference
from targets.ivf_partition.target import OPS, build, nprobes_array

DEFAULT_KERNEL = Path(__file__).resolve().parent.parent / "targets" / "ivf_partition" / "kernels.py"
ATOL, RTOL = 1e-4, 1e-5


def faiss_search(centroids: np.ndarray, distance_type: str, n: int):
    """A flat faiss index over the centroids and a one-query search returning faiss's ids."""
    index = (faiss.IndexFlatIP if distance_type == "dot" else faiss.IndexFlatL2)(centroids.shape[1])
    index.add(centroids)

    def search(query: np.ndarray) -> np.ndarray:
        probe = query[None, :].copy()
        if distance_type == "cosine":
            faiss.normalize_L2(probe)
        return index.search(probe, n)[1][0]
    return search


def agree(ref_dists: np.ndarray, kernel_dists: np.ndarray, faiss_ids: np.ndarray) -> bool:
    """faiss's ids, scored with the reference distances, give the kernel's n distances."""
    if np.unique(faiss_ids).size != faiss_ids.size or faiss_ids.min() < 0:
        return False
    mine = np.sort(ref_dists[faiss_ids].astype(np.float64))
    want = np.sort(kernel_dists.astype(np.float64))
    return bool(np.all(np.abs(mine - want) <= ATOL + RTOL * np.abs(want)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, DEFAULT_KERNEL, argv)
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    table = Table(f"kernel {args.kernel}  faiss {faiss.__version__}  {args.queries} queries/workload  1 thread",
                  28, "top-n agree")
    for shape in inputs.SPEED_SHAPES:
        for dt in inputs.DISTANCE_TYPES:
            prefix = f"speed/{shape.label}/{dt}/"
            centroids = fx[prefix + "centroids"]
            n = reference.probe_count(shape.nlist, shape.nprobes)
            params = {"nlist": shape.nlist, "dim": shape.dim, "distance_type": dt}
            kernel = build(kernels, params, {"centroids": centroids})
            search = faiss_search(centroids, dt, n)
            queries = inputs.speed_queries(shape, dt, fx[prefix + "centres"], args.seed, args.queries)
            limit = nprobes_array(shape.nprobes)

            def run_kernel(q: np.ndarray) -> dict[str, np.ndarray]:
                return OPS["speed"](kernel, {"query": q, "nprobes": limit})

            def run_reference(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return reference.find_partitions(q, centroids, dt, shape.nprobes)

            def agrees(q: np.ndarray) -> bool:
                return agree(reference.distances(q, centroids, dt), run_kernel(q)["dists"], search(q))

            medians, agreed = time_arms((run_kernel, run_reference, search), queries, agrees)
            table.row(f"{shape.label}/{inputs.SPEED_DISTRIBUTIONS[dt]}", medians, agreed, len(queries))
    table.geomean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
