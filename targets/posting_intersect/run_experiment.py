"""posting-intersect trial entry point: ``python -m targets.posting_intersect.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import SPEED_SEED
from targets.posting_intersect import inputs, reference
from targets.posting_intersect.inputs import BatteryCase, Distribution
from targets.posting_intersect.target import output_layout

KERNEL = Path(__file__).with_name("kernels.py")
PROFILE_DISTRIBUTION = "balanced"


def _case(case: BatteryCase) -> Case:
    lists = int(case.index["list_offsets"].size - 1)
    return Case(name=case.name, params={"lists": lists}, arrays=case.index, calls=case.calls)


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case and a random case per speed distribution) plus one
    fresh random case per distribution from the trial seed."""
    fx = inputs.fixtures()
    out = [_case(inputs.cached_battery_case(fx, name)) for name in inputs.BATTERY_NAMES]
    return out + [_case(inputs.fresh_case(dist, seed)) for dist in inputs.DISTRIBUTIONS]


def judge(out: dict[str, np.ndarray], expected: list[np.ndarray], caps: np.ndarray) -> str | None:
    """The op's collected outputs against the oracle's answers: every count exact, nothing written
    past a count, the entries up to each count bit-identical to the answer."""
    counts, docs, overrun = out.get("counts"), out.get("docs"), out.get("overrun")
    q = len(expected)
    for name, arr, dtype, size in (("counts", counts, np.int64, q), ("overrun", overrun, np.int64, q),
                                   ("docs", docs, np.uint32, None)):
        if type(arr) is not np.ndarray or arr.ndim != 1 or arr.dtype != dtype or (size is not None and arr.size != size):
            return f"{name}: malformed output (expected 1-d {np.dtype(dtype)}{'' if size is None else f'[{size}]'})"
    assert isinstance(counts, np.ndarray) and isinstance(docs, np.ndarray) and isinstance(overrun, np.ndarray)
    start = 0
    for i, want in enumerate(expected):
        got_count = int(counts[i])
        if got_count != want.size:
            return (f"query {i}: count {got_count}, expected {want.size} (its output slice holds "
                    f"{int(caps[i])}; -1 = never written)")
        if overrun[i]:
            return f"query {i}: {int(overrun[i])} entries written past its count {got_count}"
        got = docs[start:start + got_count]
        start += got_count
        if not np.array_equal(got, want):
            j = int(np.flatnonzero(got != want)[0])
            return f"query {i}: entry {j} is {int(got[j])}, expected {int(want[j])} (of {want.size})"
    return None


def _expected(index: dict[str, np.ndarray], call: dict[str, np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    doc_ids, offsets = index["doc_ids"], index["list_offsets"]
    caps = np.diff(output_layout(np.diff(offsets), call["terms"]))
    return reference.answers(doc_ids, offsets, call["terms"], call["shifts"]), caps


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    expected, caps = _expected(case.arrays, case.calls[call])
    return judge(out, expected, caps)


def workload(dist: Distribution, k: int, scale: float = 1.0, queries: int | None = None) -> Workload:
    """One speed combo: the distribution's index (its universe times ``scale``) and calls of
    ``queries`` AND queries of K lists each."""
    fx = inputs.fixtures()
    if scale == 1.0:
        index = {"doc_ids": fx[f"speed/{dist.name}/doc_ids"], "list_offsets": fx[f"speed/{dist.name}/list_offsets"]}
    else:
        index = inputs.flatten(inputs.speed_index(dist, SPEED_SEED, scale))
    universe = max(64, int(dist.universe * scale))
    per_call = queries or dist.queries[k]

    def calls(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return inputs.speed_queries(dist, k, seed, count, per_call, universe)

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        expected, caps = _expected(index, call)
        return lambda out: judge(out, expected, caps)

    params: dict[str, Any] = {"lists": int(index["list_offsets"].size - 1)}
    return Workload(shape=str(k), distribution=dist.name, params=params, arrays=index, queries=calls, verify=verify)


def workloads() -> list[Workload]:
    return [workload(dist, k) for k in inputs.SPEED_K for dist in inputs.DISTRIBUTIONS]


def _profile_workload(dist: Distribution, k: int, size: dict[str, int]) -> Workload:
    per_list = size["entries"] / (size["queries"] * k)
    scale = per_list / (dist.universe * dist.density[0])
    return workload(dist, k, scale, size["queries"])


def profile_shapes() -> list[ProfileShape]:
    """Per K, on balanced lists: queries per call at a quarter, half and all of the combo's, and the
    entries a call's lists hold (queries x K x list length) at a quarter, half and all of the
    combo's (list length = entries / (queries x K): the universe shrinks with it, density kept)."""
    dist = inputs.distribution(PROFILE_DISTRIBUTION)
    out = []
    for k in inputs.SPEED_K:
        q = dist.queries[k]
        entries = int(q * k * dist.universe * dist.density[0])
        out.append(ProfileShape(shape=str(k), distribution=dist.name,
                                values={"queries": (max(1, q // 4), max(1, q // 2), q),
                                        "entries": (entries // 4, entries // 2, entries)},
                                at={"queries": q, "entries": entries},
                                workload=partial(_profile_workload, dist, k)))
    return out


PLAN = TargetPlan(name="posting-intersect", ops_module="targets.posting_intersect.target", cases=cases, check=check,
                  workloads=workloads,
                  profile=ProfileSpec(factors={"queries": "per query (setup, block lookups, windows)",
                                               "entries": "per list entry (the merge)"},
                                      fixed_label="per call (output buffer, collect)", shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
