"""fts-bm25 trial entry point: ``python -m targets.fts_bm25.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from targets.fts_bm25 import inputs, reference
from targets.fts_bm25.inputs import BatteryCase, Bm25Shape, Query, SpeedCombo
from targets.fts_bm25.target import NO_DOC, k_array
from targets.harness import runner
from targets.harness.checks import ABS_TOL, PQ_RTOL
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload

KERNEL = Path(__file__).with_name("kernels.py")
# As the PQ targets: a score is a sum of at most a few dozen non-negative f32 terms, so any
# summation order (or f64) stays within a few units in the last place of it; lossy scoring
# (quantised impacts, f16) misses by orders of magnitude.
RTOL = PQ_RTOL


def _params(index: reference.Index) -> dict[str, Any]:
    return {"num_docs": index.num_docs, "total_tokens": index.total_tokens}


def request(query: Query) -> dict[str, np.ndarray]:
    return {"query_terms": query.terms, "query_offsets": query.offsets, "k": k_array(query.k)}


def _case(case: BatteryCase) -> Case:
    return Case(name=case.name, params=_params(case.index), arrays=inputs.index_arrays(case.index),
                calls=[request(q) for q in case.calls])


def cases(seed: int) -> list[Case]:
    """The fixed battery (every kind at every battery shape, every edge case) plus one fresh case
    per battery shape, its kind drawn from the trial seed."""
    return [_case(c) for c in inputs.battery() + inputs.fresh_cases(seed)]


def check_query(ids: np.ndarray, scores: np.ndarray, count: int, ref: reference.Scores, k: int) -> str | None:
    """One query's answer against every matching document's reference score. Rules: the count is
    min(k, matches); slots past it stay unwritten (-1, NaN); the ids are distinct matching
    documents; each score is within ``1e-4 + 1e-6·|s|`` of its document's reference; the scores
    are in descending order; every id is close enough to make the cut and every clear winner is
    present (ties: ids may differ where scores tie within tolerance, in either order)."""
    want = min(k, ref.docs.size)
    if count != want:
        return f"count {count}, expected {want} (min of k = {k} and {ref.docs.size} matching documents)"
    if np.any(ids[want:] != NO_DOC) or not np.all(np.isnan(scores[want:])):
        at = want + int(np.argmax((ids[want:] != NO_DOC) | ~np.isnan(scores[want:])))
        return f"slot {at} is past the count {want} but was written (id {int(ids[at])}, score {float(scores[at])!r})"
    if want == 0:
        return None
    got_ids, got = ids[:want], scores[:want].astype(np.float64)
    if not np.all(np.isfinite(got)):
        at = int(np.argmin(np.isfinite(got)))
        return f"slot {at}: score {float(scores[at])!r} is not finite"
    if np.unique(got_ids).size != want:
        return "a document appears twice"
    pos = np.minimum(np.searchsorted(ref.docs, got_ids), ref.docs.size - 1)
    stray = ref.docs[pos] != got_ids
    if stray.any():
        return f"document {int(got_ids[np.argmax(stray)])} holds none of the query's terms"
    r = ref.scores.astype(np.float64)
    tol = ABS_TOL + RTOL * np.abs(r)
    off = np.abs(got - r[pos]) > tol[pos]
    if off.any():
        j = int(np.argmax(off))
        return (f"slot {j}: score {float(scores[j])!r} for document {int(got_ids[j])}, reference "
                f"{float(r[pos[j]])!r} (|diff| > {tol[pos[j]]:.3g})")
    if np.any(np.diff(got) > 0):
        j = int(np.flatnonzero(np.diff(got) > 0)[0])
        return f"scores not descending at slot {j + 1} ({float(scores[j])!r} then {float(scores[j + 1])!r})"
    # The cut: at least `want` references are >= kth, so the weakest must reach min(r - tol) over
    # them; a document certainly above every reference at or below the cut must be present.
    kth = np.partition(r, r.size - want)[r.size - want]
    upto, beyond = r >= kth, r <= kth
    floor = np.min(r[upto] - tol[upto])
    ceiling = np.max(r[beyond] + tol[beyond])
    late = r[pos] + tol[pos] < floor
    if late.any():
        j = int(np.argmax(late))
        return f"document {int(got_ids[j])} (reference {float(r[pos[j]])!r}) does not make the top {want}"
    missing = np.setdiff1d(ref.docs[r - tol > ceiling], got_ids)
    if missing.size:
        d = int(missing[0])
        return f"document {d} (reference {float(r[np.searchsorted(ref.docs, d)])!r}) is missing from the top {want}"
    return None


def judge(out: dict[str, np.ndarray], index: reference.Index, call: dict[str, np.ndarray],
          refs: list[reference.Scores] | None = None) -> str | None:
    """Every query of one call; ``refs`` (one per query) when the oracle already ran."""
    offsets, k = call["query_offsets"], int(call["k"])
    batch = offsets.size - 1
    ids, scores, counts = out.get("ids"), out.get("scores"), out.get("counts")
    for name, arr, dtype, shape in (("ids", ids, np.int64, (batch, k)), ("scores", scores, np.float32, (batch, k)),
                                    ("counts", counts, np.int64, (batch,))):
        if type(arr) is not np.ndarray or arr.dtype != dtype or arr.shape != shape:
            return f"{name}: expected a {np.dtype(dtype)} array of shape {shape}"
    assert isinstance(ids, np.ndarray) and isinstance(scores, np.ndarray) and isinstance(counts, np.ndarray)
    for q in range(batch):
        ref = refs[q] if refs is not None else reference.score_all(index, query_terms(call, q))
        problem = check_query(ids[q], scores[q], int(counts[q]), ref, k)
        if problem is not None:
            return f"query {q} (terms {query_terms(call, q).tolist()}, k {k}): {problem}"
    return None


def query_terms(call: dict[str, np.ndarray], q: int) -> np.ndarray:
    offsets = call["query_offsets"]
    return call["query_terms"][offsets[q]:offsets[q + 1]]


def _index(case: Case) -> reference.Index:
    return inputs.index_from_arrays(int(case.params["num_docs"]), int(case.params["total_tokens"]), case.arrays)


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    return judge(out, _index(case), case.calls[call])


def _verifier(index: reference.Index) -> Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]:
    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        refs = [reference.score_all(index, query_terms(call, q)) for q in range(call["query_offsets"].size - 1)]
        return lambda out: judge(out, index, call, refs)
    return verify


def workload(fx: dict[str, np.ndarray], combo: SpeedCombo, terms: int, k: int) -> Workload:
    """One speed combo with ``terms`` terms per query and top ``k``: the combo's own workload at
    its shape's, the same index and batch otherwise (profile mode)."""
    index = inputs.fixture_index(fx, combo)
    asked = replace(combo, shape=Bm25Shape(combo.shape.num_docs, terms, k))

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return [request(q) for q in inputs.speed_batches(asked, seed, count)]

    return Workload(shape=asked.shape.label, distribution=combo.distribution, params=_params(index),
                    arrays=inputs.index_arrays(index), queries=queries, verify=_verifier(index))


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(fx, combo, combo.shape.terms, combo.shape.k) for combo in inputs.SPEED_COMBOS]


def _profile_workload(fx: dict[str, np.ndarray], combo: SpeedCombo, size: dict[str, int]) -> Workload:
    return workload(fx, combo, size["terms"], size["k"])


def profile_shapes() -> list[ProfileShape]:
    """Per shape, on its zipf_mixed index: 1, half and all of its terms per query, k at 10, 100
    and 1,000."""
    fx = inputs.fixtures()
    out = []
    for combo in inputs.SPEED_COMBOS:
        if combo.distribution != "zipf_mixed":
            continue
        shape = combo.shape
        out.append(ProfileShape(shape=shape.label, distribution=combo.distribution,
                                values={"terms": tuple(sorted({1, max(1, shape.terms // 2), shape.terms})),
                                        "k": (10, 100, 1000)},
                                at={"terms": shape.terms, "k": shape.k},
                                workload=partial(_profile_workload, fx, combo)))
    return out


PLAN = TargetPlan(name="fts-bm25", ops_module="targets.fts_bm25.target", cases=cases, check=check,
                  workloads=workloads,
                  # Lance's own full-text search on the same corpus, by MatchQuery's own timer.
                  lance_params={}, lance_ops="targets.fts_bm25.lance_arm",
                  lance_timer=("MatchQuery", "elapsed_compute"),
                  profile=ProfileSpec(factors={"terms": "per query term (its posting list traversed and scored)",
                                               "k": "per top-k slot (heap, threshold, final sort)"},
                                      fixed_label="per-call fixed", shapes=profile_shapes))


if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
