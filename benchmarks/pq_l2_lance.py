"""pq-l2 against Lance itself: a kernel and Lance's own PQ search, on identical data, one thread.

For each of the 9 speed workloads (3 shapes x 3 distributions, N=20,000, the harness's own
fixtures), builds a Lance dataset of the workload's vectors with an IVF_PQ index holding the
fixture's codebook (one partition, zero IVF centroid: no residuals; no refine), checks that
Lance's stored codes are the fixture's, then times ``--queries`` fresh queries, interleaved:

  kernel  the op the harness times: ``target.OPS["speed"]`` (distance table + distances +
          the harness's top-10) on a ``PqKernel`` from ``--kernel``
  Lance   Lance's own operator timer for the same query, ``index_search_time`` from
          ``analyze_plan()`` (distance table + distances + top-k), which leaves out Lance's
          ~1 ms of per-query planning and Python overhead (see ../shared/lance-anchor.md)

Prints median us/query of each, kernel/Lance (below 1.0: the kernel beats Lance), the geomean
over workloads, and on how many queries Lance's top-10 is tie-consistent with the kernel's.
The process is pinned to one core; Lance runs one CPU thread there.

Run:  python benchmarks/pq_l2_lance.py [--queries 32] [--kernel path/to/kernels.py] [--seed 1]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "LANCE_CPU_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lance  # noqa: E402
import pyarrow as pa  # noqa: E402

from targets.harness.checks import ABS_TOL, PQ_RTOL, check_topk  # noqa: E402
from targets.harness.prng import SPEED_SEED, mix_seeds  # noqa: E402
from targets.harness.runner import cpu_model  # noqa: E402
from targets.harness.worker import load_kernel  # noqa: E402
from targets.pq_l2 import inputs  # noqa: E402
from targets.pq_l2.target import NUM_CENTROIDS, OPS, TOP_K, PqShape, build  # noqa: E402

DEFAULT_KERNEL = ROOT / "targets" / "pq_l2" / "kernels.py"
_SEARCH_TIME = re.compile(r"ANNSubIndex:.*?index_search_time=([\d.]+)(ns|µs|us|ms|s)\b")
_UNIT_US = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def simd_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    have = set(flags.split(":", 1)[1].split())
    return ",".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "neon", "asimd") if f in have) or "none"


def lance_index(tmp: Path, shape: PqShape, vectors: np.ndarray, codebook: np.ndarray):
    table = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), shape.dim)})
    ds = lance.write_dataset(table, tmp / "data.lance")
    ds.create_index("vec", index_type="IVF_PQ", num_partitions=1, num_sub_vectors=shape.num_sub_vectors, num_bits=8,
                    ivf_centroids=np.zeros((1, shape.dim), np.float32),
                    pq_codebook=codebook.reshape(shape.num_sub_vectors, NUM_CENTROIDS, shape.sub_dim))
    return ds


def lance_query(ds, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(Lance's index_search_time in us, its top-10 row ids, its top-10 distances) for one query."""
    nearest = {"column": "vec", "q": q, "k": TOP_K, "nprobes": 1, "refine_factor": None}
    plan = ds.scanner(columns=["_distance"], with_row_id=True, disable_scoring_autoprojection=True,
                      nearest=nearest).analyze_plan()
    found = _SEARCH_TIME.search(plan)
    if found is None or "KNNVectorDistance" in plan:
        sys.exit(f"unexpected Lance plan (no index_search_time, or a refine step):\n{plan}")
    table = ds.scanner(columns=["_distance"], with_row_id=True, disable_scoring_autoprojection=True,
                       nearest=nearest).to_table()
    return (float(found.group(1)) * _UNIT_US[found.group(2)], table["_rowid"].to_numpy().astype(np.int64),
            table["_distance"].to_numpy().astype(np.float32))


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
    print(f"kernel {args.kernel}  pylance {lance.__version__}  CPU {cpu_model()} [{simd_flags()}]  N={n}  "
          f"{args.queries} queries/workload  1 thread, pinned")
    print(f"{'workload':<20}{'kernel us':>11}{'Lance us':>11}{'kernel/Lance':>14}{'top10 agree':>13}")
    ratios = []
    for shape in inputs.SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            p = f"speed/{shape.label}/{dist}/"
            codebook, codes, centres = fx[p + "codebook"], fx[p + "codes_aos"], fx[p + "centres"]
            base = mix_seeds(SPEED_SEED, shape.label, dist)
            vectors = inputs.generate(dist, mix_seeds(base, "data"), n, shape.dim, centres)
            if not np.array_equal(inputs.encode(shape, codebook, vectors), codes):
                sys.exit(f"{shape.label}/{dist}: the regenerated vectors do not encode to the fixture's codes")
            with tempfile.TemporaryDirectory(prefix="lar-lance-") as tmp:
                ds = lance_index(Path(tmp), shape, vectors, codebook)
                inst = build(kernels, {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n},
                             {"codebook": codebook, "codes_aos": codes})
                queries = inputs.speed_queries(shape, dist, centres, args.seed, args.queries)
                for q in queries[:2]:                         # warm-up: JIT, Lance's index cache
                    OPS["speed"](inst, {"query": q})
                    lance_query(ds, q)
                kernel_us, lance_us, agreed = [], [], 0
                gc.disable()
                try:
                    for i, q in enumerate(queries):
                        for first in ((0, 1) if i % 2 == 0 else (1, 0)):
                            if first == 0:
                                t0 = time.perf_counter_ns()
                                OPS["speed"](inst, {"query": q})
                                kernel_us.append((time.perf_counter_ns() - t0) / 1e3)
                            else:
                                us, ids, dists = lance_query(ds, q)
                                lance_us.append(us)
                        full = OPS["check"](inst, {"query": q})["distances"]      # untimed: every distance
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
