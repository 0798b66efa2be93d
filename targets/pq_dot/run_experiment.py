"""pq-dot trial entry point: ``python -m targets.pq_dot.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
Tolerances are per element and summation-aware (``reference`` derives them; see
docs/targets/pq-dot.md): a relative bound cannot serve here, since dot products and the final
−(M−1) cancel, so the checks below take one tolerance per value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import runner
from targets.harness.checks import check_ranked
from targets.harness.plan import Case, TargetPlan
from targets.harness.pq import k_array
from targets.harness.prng import Stream, mix_seeds
from targets.pq_dot import inputs, reference
from targets.pq_dot.target import PqShape
from targets.pq_l2.run_experiment import battery_ks, pq_profile, pq_workloads

KERNEL = Path(__file__).with_name("kernels.py")


def _shape(params: dict[str, Any]) -> PqShape:
    return PqShape(int(params["dim"]), int(params["num_sub_vectors"]))


def _params(shape: PqShape, n: int) -> dict[str, Any]:
    return {"dim": shape.dim, "num_sub_vectors": shape.num_sub_vectors, "num_vectors": n}


# ----------------------------------------------------------------------------- checks

def check_search(out: dict[str, np.ndarray], ref: np.ndarray, tol: np.ndarray, k: int) -> str | None:
    """Top-k (smallest first) with each distance's own summation-aware tolerance."""
    if "topk_ids" not in out or "topk_dists" not in out:
        return "missing top-k outputs"
    return check_ranked(out["topk_ids"], out["topk_dists"], ref, tol, min(k, ref.size))


class Oracle:
    """The reference for one kernel input (codebook + codes): table, distances and tolerances."""

    def __init__(self, shape: PqShape, codebook: np.ndarray, codes_aos: np.ndarray, n: int) -> None:
        self.shape, self.codebook = shape, codebook
        self.flat = reference.flat_index(reference.code_columns(shape, codes_aos, n))

    def __call__(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances, their tolerances) for one query."""
        table = reference.distance_table(self.shape, self.codebook, query)
        slack = reference.table_slack(self.shape, self.codebook, query)
        dists = reference.distances_from_flat(table, self.flat)
        weights = reference.distance_weights(table, slack, self.shape.num_sub_vectors)
        return dists, reference.distance_tolerance(weights, self.flat)


# ----------------------------------------------------------------------------- plan

def _case(name: str, shape: PqShape, arrays: dict[str, np.ndarray], seed: int) -> Case:
    ks = battery_ks(name, seed, inputs.CORRECTNESS_NUM_VECTORS)
    return Case(name=name, params=_params(shape, inputs.CORRECTNESS_NUM_VECTORS),
                arrays={"codebook": arrays["codebook"], "codes_aos": arrays["codes_aos"]},
                calls=[{"query": arrays["query_0"], "k": k_array(ks[0])},
                       {"query": arrays["query_1"], "k": k_array(ks[1])}])


def cases(seed: int) -> list[Case]:
    """The fixed battery (3 shapes x 5 kinds) plus one fresh case per shape from the trial seed."""
    fx = inputs.fixtures()
    out = []
    for shape in inputs.SHAPES:
        for kind in inputs.CORRECTNESS_KINDS:
            prefix = f"battery/{shape.label}/{kind}/"
            out.append(_case(f"{shape.label}/{kind}", shape,
                             {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)}, seed))
    pick = Stream(mix_seeds(seed, "fresh-kinds")).integers(len(inputs.CORRECTNESS_KINDS), len(inputs.SHAPES))
    for shape, k in zip(inputs.SHAPES, pick):
        kind = inputs.CORRECTNESS_KINDS[int(k)]
        out.append(_case(f"{shape.label}/{kind}/fresh", shape, inputs.fresh_case(shape, kind, seed), seed))
    return out


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    shape = _shape(case.params)
    oracle = Oracle(shape, case.arrays["codebook"], case.arrays["codes_aos"], int(case.params["num_vectors"]))
    dists, dist_tol = oracle(case.calls[call]["query"])
    return check_search(out, dists, dist_tol, int(case.calls[call]["k"]))


def _verifier(shape: PqShape, arrays: dict[str, np.ndarray], n: int
              ) -> Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]:
    oracle = Oracle(shape, arrays["codebook"], arrays["codes_aos"], n)   # once per workload

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        dists, dist_tol = oracle(call["query"])
        return lambda out: check_search(out, dists, dist_tol, int(call["k"]))
    return verify


PLAN = TargetPlan(name="pq-dot", ops_module="targets.harness.pq", cases=cases, check=check,
                  workloads=partial(pq_workloads, inputs, _verifier), lance_params={"metric": "dot"},
                  profile=pq_profile(inputs, _verifier))


if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
