"""posting-seek trial entry point: ``python -m targets.posting_seek.run_experiment [--kernel F] [--against F]``.

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
from targets.posting_seek import inputs, reference
from targets.posting_seek.inputs import BatteryCase, SpeedCombo
from targets.posting_seek.target import POISON

KERNEL = Path(__file__).with_name("kernels.py")
PROFILE_DISTRIBUTION = "geo-wand_shallow"


def _case(case: BatteryCase) -> Case:
    return Case(name=case.name, params={"length": int(case.doc_ids.size)}, arrays=inputs.list_arrays(case.doc_ids),
                calls=[{"ops": ops} for ops in case.calls])


def cases(seed: int) -> list[Case]:
    """The fixed battery (the edge cases, random sequences of every pattern on both layouts) plus
    one fresh case per pattern from the trial seed."""
    fx = inputs.fixtures()
    out = [_case(inputs.cached_battery_case(fx, name)) for name in inputs.BATTERY_NAMES]
    return out + [_case(inputs.fresh_case(pattern, seed)) for pattern in inputs.PATTERNS]


def judge(out: dict[str, np.ndarray], doc_ids: np.ndarray, ops: np.ndarray) -> str | None:
    """Every result bit-identical: each step checked against what it must return given the claimed
    result before it; the first mismatch is a genuine error (``reference.expected``)."""
    got = out.get("results")
    if type(got) is not np.ndarray or got.dtype != np.int64 or got.shape != ops.shape:
        return f"results: expected a 1-d int64 numpy.ndarray of {ops.size}, got {type(got).__name__}"
    want = reference.expected(doc_ids, ops, got)
    bad = np.flatnonzero(got != want)
    if bad.size:
        i = int(bad[0])
        what = "never written" if got[i] == POISON else str(int(got[i]))
        prev = "the start" if i == 0 else f"result {int(got[i - 1])}"
        return (f"op {i} ({int(ops[i])}, after {prev}): got {what}, expected {int(want[i])} "
                f"({bad.size} of {ops.size} results differ)")
    return None


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    return judge(out, case.arrays["doc_ids"], case.calls[call]["ops"])


def workload(combo: SpeedCombo, doc_ids: np.ndarray, seeks: int | None = None) -> Workload:
    """One speed combo: its list and fresh sequences of ``seeks`` ops (the combo's own by default)."""

    def calls(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return inputs.speed_queries(combo, doc_ids, seed, count, seeks)

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        return lambda out: judge(out, doc_ids, call["ops"])

    return Workload(shape=str(combo.blocks), distribution=combo.distribution, params={"length": int(doc_ids.size)},
                    arrays=inputs.list_arrays(doc_ids), queries=calls, verify=verify)


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(SpeedCombo(blocks, dist), fx[f"speed/{SpeedCombo(blocks, dist).layout}/{blocks}"])
            for blocks in inputs.SPEED_BLOCKS for dist in inputs.SPEED_DISTRIBUTIONS]


def _profile_workload(fx: dict[str, np.ndarray], combo: SpeedCombo, size: dict[str, int]) -> Workload:
    return workload(combo, fx[f"speed/{combo.layout}/{combo.blocks}"], size["seeks"])


def profile_shapes() -> list[ProfileShape]:
    """Per list size, on geo-wand_shallow: the op timed at a quarter, half and all of the combo's
    seeks per call; its time splits into a fixed part per call (the harness's output, the result
    transfer) and a cost per seek."""
    fx = inputs.fixtures()
    out = []
    for blocks in inputs.SPEED_BLOCKS:
        combo = SpeedCombo(blocks, PROFILE_DISTRIBUTION)
        out.append(ProfileShape(shape=str(blocks), distribution=combo.distribution,
                                values={"seeks": (combo.seeks // 4, combo.seeks // 2, combo.seeks)},
                                at={"seeks": combo.seeks}, workload=partial(_profile_workload, fx, combo)))
    return out


PLAN = TargetPlan(name="posting-seek", ops_module="targets.posting_seek.target", cases=cases, check=check,
                  workloads=workloads,
                  profile=ProfileSpec(factors={"seeks": "per seek (sidecar lookup, in-block search)"},
                                      fixed_label="per call (result buffer, cursor setup)", shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
