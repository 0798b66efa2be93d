"""ivf-partition speed anchors: a kernel, the reference and faiss, on identical data, single-threaded.

For each of the 9 speed workloads (3 shapes x 3 distance types, the harness's own fixtures) and
``--queries`` fresh queries per workload, times one query at a time:

  kernel     the op the harness times: ``target.OPS["speed"]`` = one ``find_partitions`` call on an
             ``IvfKernel`` from ``--kernel`` (cosine normalisation included)
  reference  ``reference.find_partitions`` (Lance-order f32 distances, then a sort by (dist, id))
  faiss      ``faiss.IndexFlatL2`` (l2; cosine on the query normalised by ``faiss.normalize_L2``,
             timed) or ``faiss.IndexFlatIP`` (dot: Lance's 1 − q·c ranks as faiss's largest q·c),
             ``.search(q, n)`` with n = the workload's nprobes (every centroid for None)

The three are interleaved query by query (rotating which goes first) so they see the same machine
conditions. Prints median us/query, kernel/faiss and reference/faiss ratios with geomeans over
workloads, and how many queries' faiss top-n agree with the kernel's (ties allowed: faiss's ids,
scored with the reference distances, must give the kernel's n distances within 1e-4 + 1e-5·|d|).

Run:  python benchmarks/ivf_partition_anchors.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
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
from targets.ivf_partition import inputs, reference  # noqa: E402
from targets.ivf_partition.target import OPS, build, nprobes_array  # noqa: E402

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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=32, help="fresh queries per workload (default 32)")
    ap.add_argument("--kernel", type=Path, default=DEFAULT_KERNEL, help="kernels.py to time (default: shipped)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the fresh queries (default 1)")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    kernels = load_kernel(str(args.kernel))
    fx = inputs.fixtures()
    print(f"kernel {args.kernel}  faiss {faiss.__version__}  {args.queries} queries/workload  1 thread")
    print(f"{'workload':<28}{'kernel us':>11}{'ref us':>11}{'faiss us':>10}{'kern/faiss':>12}"
          f"{'ref/faiss':>11}{'top-n agree':>13}")
    ratios = []
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

            arms = (run_kernel, run_reference, search)
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
                    # Agreement, untimed.
                    ref_dists = reference.distances(q, centroids, dt)
                    agreed += agree(ref_dists, run_kernel(q)["dists"], search(q))
            finally:
                gc.enable()
            k_us, r_us, f_us = np.median(times, axis=0)
            ratios.append((k_us / f_us, r_us / f_us))
            label = f"{shape.label}/{inputs.SPEED_DISTRIBUTIONS[dt]}"
            print(f"{label:<28}{k_us:>11.1f}{r_us:>11.1f}{f_us:>10.1f}{k_us / f_us:>12.2f}"
                  f"{r_us / f_us:>11.2f}{f'{agreed}/{len(queries)}':>13}")
    geo = np.exp(np.log(np.array(ratios)).mean(axis=0))
    print(f"{'geomean':<60}{geo[0]:>12.2f}{geo[1]:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
