"""topk-merge trial entry point: ``python -m targets.topk_merge.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import CORRECTNESS_SEED, Stream, mix_seeds
from targets.topk_merge import inputs, reference
from targets.topk_merge.inputs import MergeShape
from targets.topk_merge.target import POISON_COUNT, POISON_DIST_BITS, POISON_ROW_ID

KERNEL = Path(__file__).with_name("kernels.py")
OUTPUTS = (("dists", np.float32, 2), ("row_ids", np.uint64, 2), ("counts", np.int64, 1))


def check_merge(out: dict[str, np.ndarray], expected: list[tuple[np.ndarray, np.ndarray]], k: int) -> str | None:
    """The kernel's outputs against every query's answer, bit for bit: ``counts[q]`` = the answer's
    length, the first ``counts[q]`` distances (as bits: NaN payloads and -0.0 included) and row ids
    equal to the answer's, and every entry past the count still the op's poison."""
    for name, dtype, ndim in OUTPUTS:
        arr = out.get(name)
        if type(arr) is not np.ndarray:
            return f"{name}: expected a numpy.ndarray, got {type(arr).__name__}"
        shape = (len(expected), k)[:ndim]
        if arr.dtype != dtype or arr.shape != shape:
            return f"{name}: dtype {arr.dtype} shape {arr.shape} (expected {np.dtype(dtype)} {shape})"
    bits, rows, counts = out["dists"].view(np.uint32), out["row_ids"], out["counts"]
    for q, (ref_d, ref_r) in enumerate(expected):
        n = ref_d.size
        if counts[q] != n:
            return f"query {q}: count {int(counts[q])} (expected {n}{', the poison: never written' if counts[q] == POISON_COUNT else ''})"
        wrong = np.flatnonzero((bits[q, :n] != ref_d.view(np.uint32)) | (rows[q, :n] != ref_r))
        if wrong.size:
            i = int(wrong[0])
            return (f"query {q}, position {i} of {n}: got (distance {bits[q, i].view(np.float32)!r} bits "
                    f"{int(bits[q, i]):#010x}, row id {int(rows[q, i])}), expected (distance {ref_d[i]!r} bits "
                    f"{int(ref_d.view(np.uint32)[i]):#010x}, row id {int(ref_r[i])}); {wrong.size} positions differ")
        past = np.flatnonzero((bits[q, n:] != POISON_DIST_BITS) | (rows[q, n:] != POISON_ROW_ID))
        if past.size:
            return f"query {q}: position {n + int(past[0])} written past the count {n}"
    return None


def expected_for(pool: dict[str, np.ndarray], call: dict[str, np.ndarray], k: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    dists, row_ids = reference.patched(pool["dists"], pool["row_ids"], call)
    return reference.merge(dists, row_ids, pool["lengths"], call["runs"], k)


def _case(name: str, shape: MergeShape, pool: dict[str, np.ndarray], seed: int) -> Case:
    return Case(name=name, params={"k": shape.k}, arrays=pool,
                calls=inputs.make_calls(pool, shape, mix_seeds(seed, name), inputs.BATTERY_CALLS))


def cases(seed: int) -> list[Case]:
    """The fixed battery (``inputs.battery_specs``) plus one fresh case per general shape, its kind
    drawn from the trial seed."""
    fx = inputs.fixtures()
    out = [_case(name, shape, inputs.pool_of(fx, f"battery/{name}/"), CORRECTNESS_SEED)
           for name, shape, _ in inputs.battery_specs()]
    kinds = Stream(mix_seeds(seed, "fresh-kinds")).integers(len(inputs.VALUE_KINDS), len(inputs.GENERAL_SHAPES))
    for (label, shape), kind in zip(inputs.GENERAL_SHAPES, kinds):
        name = f"{inputs.VALUE_KINDS[int(kind)]}/{label}/fresh"
        out.append(_case(name, shape, inputs.fresh_case(shape, inputs.VALUE_KINDS[int(kind)], seed), seed))
    return out


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    k = int(case.params["k"])
    return check_merge(out, expected_for(case.arrays, case.calls[call], k), k)


def _verifier(pool: dict[str, np.ndarray], k: int
              ) -> Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]:
    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        expected = expected_for(pool, call, k)
        return lambda out: check_merge(out, expected, k)
    return verify


def workload(fx: dict[str, np.ndarray], shape: MergeShape, dist: str, runs: int, k: int) -> Workload:
    """One speed combo with the first ``runs`` runs of each query and fetch ``k``: the speed
    workload itself at the shape's own (the profile times fewer runs and other fetches)."""
    if not 0 < runs <= shape.runs:
        raise ValueError(f"runs {runs}: the {shape.label} workload has 1..{shape.runs}")
    full = inputs.pool_of(fx, f"speed/{shape.label}/{dist}/")
    pool = {name: arr[:runs * shape.queries] for name, arr in full.items()}     # bands 0..runs-1
    sized = MergeShape(runs, shape.width, k, shape.queries)

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return inputs.make_calls(pool, sized, mix_seeds(seed, "speed", shape.label, dist), count)

    return Workload(shape=shape.label, distribution=dist, params={"k": k}, arrays=pool, queries=queries,
                    verify=_verifier(pool, k))


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(fx, shape, dist, shape.runs, shape.k)
            for shape in inputs.SPEED_SHAPES for dist in inputs.SPEED_DISTRIBUTIONS]


def _profile_workload(fx: dict[str, np.ndarray], shape: MergeShape, dist: str, size: dict[str, int]) -> Workload:
    return workload(fx, shape, dist, size["runs"], size["k"])


def profile_shapes() -> list[ProfileShape]:
    """Per shape, on iid_uniform: a quarter, half and all of its runs (the rows scanned) and the
    fetch at a quarter of and at its own (the heap and the final sort)."""
    fx, dist = inputs.fixtures(), inputs.SPEED_DISTRIBUTIONS[0]
    return [ProfileShape(shape=shape.label, distribution=dist,
                         values={"runs": (max(1, shape.runs // 4), max(1, shape.runs // 2), shape.runs),
                                 "k": (max(1, shape.k // 4), shape.k)},
                         at={"runs": shape.runs, "k": shape.k}, workload=partial(_profile_workload, fx, shape, dist))
            for shape in inputs.SPEED_SHAPES]


PLAN = TargetPlan(name="topk-merge", ops_module="targets.topk_merge.target", cases=cases, check=check,
                  workloads=workloads,
                  profile=ProfileSpec(factors={"runs": "per run (the filter and row scan)",
                                               "k": "per fetched row (heap inserts, the final sort)"},
                                      fixed_label="per-call fixed", shapes=profile_shapes))


if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
