"""pq-l2 trial entry point: ``python -m targets.pq_l2.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness import runner
from targets.harness.checks import ABS_TOL, PQ_RTOL, check_topk
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.pq import TOP_K, PqShape, k_array
from targets.harness.prng import Stream, mix_seeds
from targets.pq_l2 import inputs, reference

KERNEL = Path(__file__).with_name("kernels.py")
# A workload's verifier: (shape, kernel inputs, N) -> per call, the check of one arm's outputs.
Verifier = Callable[[PqShape, dict[str, np.ndarray], int],
                    Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]]


def _shape(params: dict[str, Any]) -> PqShape:
    return PqShape(int(params["dim"]), int(params["num_sub_vectors"]))


def _params(shape: PqShape, n: int) -> dict[str, Any]:
    return {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n}


def battery_ks(case_name: str, seed: int, n: int) -> tuple[int, int]:
    """k for a case's two calls: every vector (so every distance is checked, in order) and one
    drawn from the trial seed in 1..n, so a kernel cannot special-case the k it is checked at."""
    return n, 1 + int(Stream(mix_seeds(seed, "k", case_name)).integers(n, 1)[0])


def _case(name: str, shape: PqShape, arrays: dict[str, np.ndarray], n: int, seed: int) -> Case:
    ks = battery_ks(name, seed, n)
    return Case(name=name, params=_params(shape, n),
                arrays={"codebook": arrays["codebook"], "codes_aos": arrays["codes_aos"]},
                calls=[{"query": arrays["query_0"], "k": k_array(ks[0])},
                       {"query": arrays["query_1"], "k": k_array(ks[1])}])


def cases(ins: ModuleType, seed: int) -> list[Case]:
    """The fixed battery (shapes x kinds) plus one fresh case per shape from the trial seed."""
    fx = ins.fixtures()
    out = []
    for shape in ins.SHAPES:
        for kind in ins.CORRECTNESS_KINDS:
            prefix = f"battery/{shape.label}/{kind}/"
            out.append(_case(f"{shape.label}/{kind}", shape,
                             {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)},
                             ins.CORRECTNESS_NUM_VECTORS, seed))
    pick = Stream(mix_seeds(seed, "fresh-kinds")).integers(len(ins.CORRECTNESS_KINDS), len(ins.SHAPES))
    for shape, k in zip(ins.SHAPES, pick):
        kind = ins.CORRECTNESS_KINDS[int(k)]
        out.append(_case(f"{shape.label}/{kind}/fresh", shape, ins.fresh_case(shape, kind, seed),
                         ins.CORRECTNESS_NUM_VECTORS, seed))
    return out


def _check_search(out: dict[str, np.ndarray], dists: np.ndarray, k: int) -> str | None:
    if "topk_ids" not in out or "topk_dists" not in out:
        return "missing top-k outputs"
    return check_topk(out["topk_ids"], out["topk_dists"], dists, k, atol=ABS_TOL, rtol=PQ_RTOL)


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    shape = _shape(case.params)
    n = int(case.params["num_vectors"])
    table = reference.distance_table(shape, case.arrays["codebook"], case.calls[call]["query"])
    dists = reference.distances(shape, table, case.arrays["codes_aos"], n)
    return _check_search(out, dists, int(case.calls[call]["k"]))


def _verifier(shape: PqShape, arrays: dict[str, np.ndarray], n: int
              ) -> Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]:
    columns = reference.code_columns(shape, arrays["codes_aos"], n)   # once per workload

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        dists = reference.distances_from_columns(reference.distance_table(shape, arrays["codebook"], call["query"]),
                                                 columns)

        return lambda out: _check_search(out, dists, int(call["k"]))
    return verify


# ----------------------------------------------------------------------------- speed and profile workloads
# Shared by pq-l2, pq-cosine and pq-dot: one op, one fixture layout; each brings its verifier.

def pq_workload(ins: ModuleType, fx: dict[str, np.ndarray], verifier: Verifier, shape: PqShape, dist: str,
                size: dict[str, int]) -> Workload:
    """One speed combo at ``size`` (``num_vectors``, ``k``): the speed workload itself at
    (SPEED_NUM_VECTORS, TOP_K), its first ``num_vectors`` vectors otherwise. The data's rows are drawn
    i.i.d. and in order, and the codebook is trained on the first 4,096: so at n >= 4,096 vectors
    this is exactly what ``inputs`` builds at n, and at any n the same distribution."""
    n, k = size["num_vectors"], size["k"]
    if not 0 < n <= ins.SPEED_NUM_VECTORS:
        raise ValueError(f"num_vectors {n}: a PQ workload has 1..{ins.SPEED_NUM_VECTORS} vectors")
    prefix = f"speed/{shape.label}/{dist}/"
    arrays = {"codebook": fx[prefix + "codebook"], "codes_aos": fx[prefix + "codes_aos"][:n * shape.num_sub_vectors]}
    centres = fx[prefix + "centres"]

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return [{"query": q, "k": k_array(k)} for q in ins.speed_queries(shape, dist, centres, seed, count)]

    return Workload(shape=shape.label, distribution=dist, params=_params(shape, n), arrays=arrays,
                    queries=queries, verify=verifier(shape, arrays, n))


def pq_workloads(ins: ModuleType, verifier: Verifier) -> list[Workload]:
    fx = ins.fixtures()
    size = {"num_vectors": ins.SPEED_NUM_VECTORS, "k": TOP_K}
    return [pq_workload(ins, fx, verifier, shape, dist, size)
            for shape in ins.SHAPES for dist in ins.SPEED_DISTRIBUTIONS]


def pq_profile(ins: ModuleType, verifier: Verifier) -> ProfileSpec:
    """The PQ search by stage: per shape, on its first speed distribution, N at 1/20, 1/2 and all
    of the speed workload's vectors (the smallest pins down the fixed cost, the two largest the
    per-vector cost where the op is timed: out of cache, like the speed workload) and k at TOP_K
    and 10x it."""
    n = ins.SPEED_NUM_VECTORS

    def shapes() -> list[ProfileShape]:
        fx, dist = ins.fixtures(), ins.SPEED_DISTRIBUTIONS[0]
        return [ProfileShape(shape=shape.label, distribution=dist,
                             values={"num_vectors": (n // 20, n // 2, n), "k": (TOP_K, 10 * TOP_K)},
                             at={"num_vectors": n, "k": TOP_K},
                             workload=partial(pq_workload, ins, fx, verifier, shape, dist))
                for shape in ins.SHAPES]

    # The scan of every distance against the heap's top is per vector too: only growing the
    # heap and writing the answer out scale with k.
    return ProfileSpec(factors={"num_vectors": "per vector (distances, top-K scan)",
                                "k": "per k (top-K heap, sorted output)"},
                       fixed_label="distance table + per-call fixed", shapes=shapes)


def make_plan(name: str, ins: ModuleType) -> TargetPlan:
    """The PQ-L2 trial over a set of inputs: pq-l2's own, or pq-cosine's unit-norm data. The ops
    the workers run, the oracle and the checks are the same. Lance runs the op as an L2 IVF_PQ
    search (for pq-cosine that is what Lance runs once it has normalised; the data is unit-norm)."""
    return TargetPlan(name=name, ops_module="targets.harness.pq", cases=partial(cases, ins), check=check,
                      workloads=partial(pq_workloads, ins, _verifier), lance_params={"metric": "l2"},
                      profile=pq_profile(ins, _verifier))


PLAN = make_plan("pq-l2", inputs)

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
