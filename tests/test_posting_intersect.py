"""Tests for the posting-intersect target: the oracle (against np.intersect1d and a two-finger
merge), the compiled baseline (Lance's bulk windows and leapfrog, bit for bit), the battery's edge
cases by name, the inputs' determinism, the check (every tempting wrong kernel fails, legal
variants pass), the op's output collection, and the playbook (its keeps exact and faster in a
paired trial, its wrong kernel rejected, the offline loop keeps its first entry)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.harness.plan import Case
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED
from targets.posting_intersect import inputs, kernels, reference, run_experiment, target

FOLDER = ROOT / "targets" / "posting_intersect"
KEEP = "01-pairwise-rarest-first.md"


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def case_named(name: str) -> Case:
    return next(c for c in battery() if c.name == name)


def run_case(module: object, case: Case) -> list[str | None]:
    """Every call's check; ``module`` is a kernels module or a class standing in for PostingIntersect."""
    if isinstance(module, type):
        module = SimpleNamespace(PostingIntersect=module)
    inst = target.build(module, case.params, case.arrays)                           # type: ignore[arg-type]
    out: list[str | None] = []
    for i, call in enumerate(case.calls):
        try:
            out.append(run_experiment.check(case, i, target.OPS["check"](inst, call)))
        except ValueError as exc:               # the harness reports a raising kernel as a failure too
            out.append(f"raised {exc}")
    return out


def failures(module: object, cases: tuple[Case, ...] | None = None) -> dict[str, str]:
    """First failure per failing case."""
    out = {}
    for case in cases or battery():
        problems = [p for p in run_case(module, case) if p]
        if problems:
            out[case.name] = problems[0]
    return out


def first_failure(module: object) -> str | None:
    for case in battery():
        problem = next((p for p in run_case(module, case) if p), None)
        if problem:
            return f"{case.name}: {problem}"
    return None


# --- the oracle --------------------------------------------------------------------------------------

def two_finger(lists: list[np.ndarray]) -> np.ndarray:
    """K-way intersection by repeated pure-Python merges: an independent second computation."""
    found = [int(x) for x in lists[0]]
    for other in lists[1:]:
        b = [int(x) for x in other]
        i = j = 0
        kept = []
        while i < len(found) and j < len(b):
            if found[i] < b[j]:
                i += 1
            elif found[i] > b[j]:
                j += 1
            else:
                kept.append(found[i])
                i += 1
                j += 1
        found = kept
    return np.array(found, dtype=np.uint32)


def intersect1d_fold(lists: list[np.ndarray]) -> np.ndarray:
    found = lists[0]
    for other in lists[1:]:
        found = np.intersect1d(found, other, assume_unique=True)
    return found.astype(np.uint32)


def test_oracle_matches_two_finger_merge_and_intersect1d_on_the_battery() -> None:
    checked = 0
    for case in battery():
        doc_ids, offsets = case.arrays["doc_ids"], case.arrays["list_offsets"]
        small = int(np.diff(offsets).max()) <= 20_000            # the pure-Python merge on the small ones
        for call in case.calls:
            for q in range(call["terms"].shape[0]):
                lists = reference.query_lists(doc_ids, offsets, call["terms"][q], call["shifts"][q])
                got = reference.intersect(lists)
                assert got.dtype == np.uint32
                np.testing.assert_array_equal(got, intersect1d_fold(lists), err_msg=case.name)
                if small:
                    np.testing.assert_array_equal(got, two_finger(lists), err_msg=case.name)
                checked += 1
    assert checked > 400


@pytest.mark.parametrize("seed", range(6))
def test_oracle_on_random_small_lists(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        k = int(rng.integers(2, 9))
        lists = [np.unique(rng.integers(0, 300, int(rng.integers(0, 120)))).astype(np.int64) + int(rng.integers(0, 20))
                 for _ in range(k)]
        np.testing.assert_array_equal(reference.intersect(lists), two_finger(lists))


# --- the baseline: Lance's loops, the exact answers ----------------------------------------------------

def test_baseline_kernel_passes_the_battery() -> None:
    assert failures(kernels) == {}


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_baseline_windows_and_leapfrog_on_random_block_structures(k: int) -> None:
    # Lists of lengths around block multiples, dense and sparse, overlapping at many positions:
    # the bulk path (k <= 3) and the leapfrog (k >= 4) against the oracle, bit for bit.
    rng = np.random.default_rng(k)
    lists = [np.unique(rng.integers(0, u, n)).astype(np.uint32)
             for u, n in itertools.product((600, 5_000, 80_000), (1, 127, 128, 129, 700, 3_000))]
    index = inputs.flatten(lists)
    module = kernels.PostingIntersect(index["doc_ids"], index["list_offsets"])
    terms = rng.integers(0, len(lists), (60, k))
    shifts = rng.integers(0, 300, (60, k)) * (rng.random((60, k)) < 0.5)
    layout = target.output_layout(np.diff(index["list_offsets"]), terms)
    out = np.full(int(layout[-1]), target.SENTINEL, dtype=np.uint32)
    counts = np.full(60, -1, dtype=np.int64)
    module.intersect(terms, shifts, out, layout, counts)
    for q, want in enumerate(reference.answers(index["doc_ids"], index["list_offsets"], terms, shifts)):
        assert counts[q] == want.size
        np.testing.assert_array_equal(out[layout[q]:layout[q] + want.size], want)
        assert np.all(out[layout[q] + want.size:layout[q + 1]] == target.SENTINEL)


# --- the battery: each edge case, by name --------------------------------------------------------------

def query_answers(case: Case) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(terms row, shifts row, answer) of every query in a case."""
    out = []
    for call in case.calls:
        answers = reference.answers(case.arrays["doc_ids"], case.arrays["list_offsets"], call["terms"], call["shifts"])
        out += list(zip(call["terms"], call["shifts"], answers))
    return out


def lengths_of(case: Case) -> np.ndarray:
    return np.diff(case.arrays["list_offsets"])


def test_battery_names_every_edge_case_and_every_k() -> None:
    names = {c.name for c in battery()}
    assert set(inputs.EDGE_CASES) <= names
    assert {"empty", "one_element", "all_equal", "identical", "disjoint", "long_runs", "skewed", "single_overlap",
            "first_last", "block_edges", "high_ids", "stopword", "shifted"} <= set(inputs.EDGE_CASES)
    assert {f"random_{d}/fresh" for d in inputs.SPEED_DISTRIBUTIONS} <= names
    for name in inputs.EDGE_CASES:
        assert {call["terms"].shape[1] for call in case_named(name).calls} >= {2, 3, 4, 5, 8}, name


def test_edge_case_empty_and_one_element() -> None:
    empty = case_named("empty")
    got = query_answers(empty)
    assert any(lengths_of(empty)[t].min() == 0 for t, _, _ in got)
    assert all(a.size == 0 for t, _, a in got if lengths_of(empty)[t].min() == 0)
    one = query_answers(case_named("one_element"))
    assert any(a.size == 1 for _, _, a in one) and any(a.size == 0 for _, _, a in one)
    assert min(lengths_of(case_named("one_element"))) == 1


def test_edge_cases_equal_identical_disjoint() -> None:
    for t, s, a in query_answers(case_named("identical")):
        assert len(set(t.tolist())) == 1 and len(set(s.tolist())) == 1
        assert a.size == lengths_of(case_named("identical"))[t[0]]
    equal = case_named("all_equal")
    assert any(len(set(t.tolist())) > 1 and a.size == 1_000 for t, _, a in query_answers(equal))
    disjoint = case_named("disjoint")
    answers = query_answers(disjoint)
    assert all(a.size == 0 for t, s, a in answers if s.max() == 0)
    # the pairwise-overlapping triple: every pair shares docs, all three none
    lists = reference.query_lists(disjoint.arrays["doc_ids"], disjoint.arrays["list_offsets"], np.array([4, 5, 6]),
                                  np.zeros(3, np.int64))
    assert all(reference.intersect([a, b]).size > 0 for a, b in itertools.combinations(lists, 2))
    assert reference.intersect(lists).size == 0


def test_edge_cases_runs_skew_single_overlap() -> None:
    runs = case_named("long_runs")
    first = runs.arrays["doc_ids"][:runs.arrays["list_offsets"][1]].astype(np.int64)
    ends = np.r_[-1, np.flatnonzero(np.diff(first) != 1), first.size - 1]
    assert np.max(np.diff(ends)) >= 1_000                                          # a run of 1,000+ consecutive ids
    skew = lengths_of(case_named("skewed"))
    assert skew.max() >= 500 * skew.min()
    assert lengths_of(case_named("stopword")).max() == 1_000_000
    single = query_answers(case_named("single_overlap"))
    assert all(a.size == 1 for _, _, a in single)


def test_edge_cases_first_last_block_edges_high_ids_shifts() -> None:
    fl = case_named("first_last")
    doc_ids, offsets = fl.arrays["doc_ids"], fl.arrays["list_offsets"]
    a = doc_ids[offsets[0]:offsets[1]]
    answers = [ans for t, s, ans in query_answers(fl) if s.max() == 0 and 0 in t]
    assert any(ans.tolist() == [a[0]] for ans in answers) and any(ans.tolist() == [a[-1]] for ans in answers)
    assert any(ans.tolist() == [a[0], a[-1]] for ans in answers)
    edges = case_named("block_edges")
    d, o = edges.arrays["doc_ids"], edges.arrays["list_offsets"]
    hits = np.isin(d[o[8]:o[9]], reference.intersect([d[o[8]:o[9]].astype(np.int64), d[o[9]:o[10]].astype(np.int64)]))
    assert hits[[127, 128, 255, 256]].all()                     # matches on both sides of block boundaries
    high = query_answers(case_named("high_ids"))
    assert max(int(a.max()) for _, _, a in high if a.size) == target.MAX_DOC_ID
    shifted = query_answers(case_named("shifted"))
    assert any(s.max() > 0 and a.size > 0 for _, s, a in shifted)                   # lists that meet only when shifted
    assert any(s.max() >= 100_000_000 for _, s, _ in shifted)


# --- inputs ----------------------------------------------------------------------------------------------

def test_fixtures_match_direct_generation() -> None:
    fx = inputs.fixtures()
    for name in ("block_edges", "random_dense"):
        cached, direct = inputs.cached_battery_case(fx, name), inputs.battery_case(name, CORRECTNESS_SEED)
        for key in ("doc_ids", "list_offsets"):
            np.testing.assert_array_equal(cached.index[key], direct.index[key])
        assert len(cached.calls) == len(direct.calls)
        for a, b in zip(cached.calls, direct.calls):
            np.testing.assert_array_equal(a["terms"], b["terms"])
            np.testing.assert_array_equal(a["shifts"], b["shifts"])
    skewed = inputs.flatten(inputs.speed_index(inputs.distribution("skewed"), SPEED_SEED))
    np.testing.assert_array_equal(fx["speed/skewed/doc_ids"], skewed["doc_ids"])


def test_every_index_is_sorted_unique_and_below_2_31() -> None:
    fx = inputs.fixtures()
    prefixes = {k.rsplit("/", 1)[0] for k in fx if k.endswith("/doc_ids")}
    for prefix in prefixes:
        doc_ids, offsets = fx[prefix + "/doc_ids"], fx[prefix + "/list_offsets"]
        assert doc_ids.dtype == np.uint32 and offsets.dtype == np.int64 and offsets[-1] == doc_ids.size
        for t in range(offsets.size - 1):
            lst = doc_ids[offsets[t]:offsets[t + 1]].astype(np.int64)
            assert np.all(np.diff(lst) > 0), (prefix, t)
    for case in battery():
        lengths = lengths_of(case)
        last = np.array([case.arrays["doc_ids"][o - 1] if n else 0
                         for o, n in zip(case.arrays["list_offsets"][1:], lengths)], dtype=np.int64)
        for call in case.calls:
            assert np.all(call["shifts"] >= 0)
            assert np.max(last[call["terms"]] + call["shifts"]) <= target.MAX_DOC_ID, case.name


def test_fresh_cases_and_speed_queries_are_deterministic() -> None:
    for dist in inputs.DISTRIBUTIONS:
        a, b, c = (inputs.fresh_case(dist, s) for s in (5, 5, 6))
        np.testing.assert_array_equal(a.index["doc_ids"], b.index["doc_ids"])
        assert a.index["doc_ids"].tobytes() != c.index["doc_ids"].tobytes()
        for k in inputs.SPEED_K:
            q1 = inputs.speed_queries(dist, k, 7, 3, dist.queries[k], dist.universe)
            q2 = inputs.speed_queries(dist, k, 7, 3, dist.queries[k], dist.universe)
            q3 = inputs.speed_queries(dist, k, 8, 3, dist.queries[k], dist.universe)
            for x, y in zip(q1, q2):
                np.testing.assert_array_equal(x["terms"], y["terms"])
                np.testing.assert_array_equal(x["shifts"], y["shifts"])
            assert q1[0]["shifts"].tobytes() != q3[0]["shifts"].tobytes()
            assert q1[0]["terms"].shape == (dist.queries[k], k)
            assert all(len(set(row.tolist())) == k for row in q1[0]["terms"])     # distinct lists per query
            assert q1[0]["shifts"].max() < dist.max_shift


def test_skewed_queries_pair_a_rare_list_with_long_ones() -> None:
    dist = inputs.distribution("skewed")
    fx = inputs.fixtures()
    lengths = np.diff(fx["speed/skewed/list_offsets"])
    call = inputs.speed_queries(dist, 3, 1, 1, 40, dist.universe)[0]
    rare, long = lengths[call["terms"][:, 0]], lengths[call["terms"][:, 1:]]
    assert rare.max() <= 128 and long.min() >= 20_000


def test_profile_sizes_hold_the_entries_they_claim() -> None:
    for shape in run_experiment.profile_shapes():
        q, e = shape.values["queries"][0], shape.values["entries"][0]
        w = shape.workload({"queries": q, "entries": e})
        call = w.queries(3, 1)[0]
        held = np.diff(w.arrays["list_offsets"])[call["terms"]].sum()
        assert call["terms"].shape == (q, int(shape.shape))
        assert 0.7 * e <= held <= 1.3 * e, (shape.shape, held, e)


# --- the op and the check: a wrong kernel fails in each tempting way, legal variants pass --------------

class NumpyKernel:
    """A legal variant: np.intersect1d folded per query."""

    answer: Callable[[list[np.ndarray]], np.ndarray] = staticmethod(intersect1d_fold)

    def __init__(self, doc_ids: np.ndarray, list_offsets: np.ndarray) -> None:
        self.doc_ids, self.list_offsets = doc_ids, list_offsets

    def lists(self, terms: np.ndarray, shifts: np.ndarray) -> list[np.ndarray]:
        return reference.query_lists(self.doc_ids, self.list_offsets, terms, shifts)

    def intersect(self, terms: np.ndarray, shifts: np.ndarray, out: np.ndarray, out_offsets: np.ndarray,
                  counts: np.ndarray) -> None:
        for q in range(terms.shape[0]):
            found = self.answer(self.lists(terms[q], shifts[q]))
            self.write(q, found, out, out_offsets, counts)

    def write(self, q: int, found: np.ndarray, out: np.ndarray, out_offsets: np.ndarray, counts: np.ndarray) -> None:
        out[out_offsets[q]:out_offsets[q] + found.size] = found
        counts[q] = found.size


class ScratchKernel(NumpyKernel):
    """Legal: uses its whole output slice as scratch, then restores the sentinel past the count."""

    def write(self, q: int, found: np.ndarray, out: np.ndarray, out_offsets: np.ndarray, counts: np.ndarray) -> None:
        lo, hi = out_offsets[q], out_offsets[q + 1]
        out[lo:hi] = 7
        out[lo:lo + found.size] = found
        out[lo + found.size:hi] = 0xFFFFFFFF
        counts[q] = found.size


def variant(name: str, **methods: object) -> type:
    return type(name, (NumpyKernel,), methods)


def _drop_last(lists: list[np.ndarray]) -> np.ndarray:        # a merge that stops one entry early
    short = [x[:-1] if x.size else x for x in lists]
    return intersect1d_fold(short)


WRONG = {
    "drops the last entry of each list": variant("DropLast", answer=staticmethod(_drop_last)),
    "ignores the shifts": variant("NoShift", lists=lambda self, t, s: reference.query_lists(
        self.doc_ids, self.list_offsets, t, np.zeros_like(s))),
    "only the two rarest lists": variant("TwoOnly", answer=staticmethod(
        lambda lists: intersect1d_fold(sorted(lists, key=len)[:2]))),
    "float32 ids (exact below 2**24 only)": variant("Float32", answer=staticmethod(
        lambda lists: intersect1d_fold([x.astype(np.float32) for x in lists]).astype(np.uint32))),
    "count one too many": variant("CountPlus", write=lambda self, q, f, out, oo, c: (
        NumpyKernel.write(self, q, f, out, oo, c), c.__setitem__(q, min(f.size + 1, oo[q + 1] - oo[q])))),
    "scratch left past the count": variant("Scratch", write=lambda self, q, f, out, oo, c: (
        out.__setitem__(slice(oo[q], oo[q + 1]), 7), NumpyKernel.write(self, q, f, out, oo, c))),
    "descending output": variant("Descending", answer=staticmethod(lambda lists: intersect1d_fold(lists)[::-1].copy())),
    "union, not intersection": variant("Union", answer=staticmethod(
        lambda lists: np.unique(np.concatenate(lists))[:min(x.size for x in lists)].astype(np.uint32))),
}


@pytest.mark.parametrize("flaw", sorted(WRONG))
def test_wrong_kernels_fail_the_battery(flaw: str) -> None:
    assert first_failure(WRONG[flaw]), flaw


def test_float32_ids_are_caught_where_ids_are_large() -> None:
    # float32 is exact below 2**24: the ids near 2**31 and the large shifts are what catch it
    flawed = WRONG["float32 ids (exact below 2**24 only)"]
    assert set(failures(flawed, (case_named("high_ids"), case_named("shifted")))) == {"high_ids", "shifted"}
    assert failures(flawed, (case_named("first_last"), case_named("block_edges"))) == {}


def test_legal_variants_pass_the_battery() -> None:
    # np.intersect1d per query, writing its whole output slice as scratch and restoring the sentinel
    assert failures(ScratchKernel) == {}


def test_check_messages_name_the_flaw() -> None:
    case = case_named("first_last")
    assert "count" in failures(WRONG["drops the last entry of each list"], (case,))["first_last"]
    assert "written past its count" in failures(WRONG["scratch left past the count"], (case,))["first_last"]
    assert "entry" in failures(WRONG["descending output"], (case,))["first_last"]
    assert "count 1" in run_experiment.judge({"counts": np.array([1]), "docs": np.array([5], np.uint32),
                                              "overrun": np.zeros(1, np.int64)}, [np.empty(0, np.uint32)],
                                             np.array([3]))
    bad = {"counts": np.array([1], np.int32), "docs": np.array([5], np.uint32), "overrun": np.zeros(1, np.int64)}
    assert "malformed" in run_experiment.judge(bad, [np.array([5], np.uint32)], np.array([3]))


def test_collect_counts_clips_and_finds_overruns() -> None:
    out = np.full(10, target.SENTINEL, dtype=np.uint32)
    layout = np.array([0, 4, 4, 10])
    out[0:3] = [1, 2, 3]
    out[5] = 9                                                    # query 2: past its count 0
    got = target.collect(out, layout, np.array([2, -1, 0]))
    assert got["counts"].tolist() == [2, -1, 0]
    assert got["docs"].tolist() == [1, 2]
    assert got["overrun"].tolist() == [1, 0, 1]
    big = target.collect(out, layout, np.array([99, 0, 0]))       # a count past the slice: clipped, judged by count
    assert big["docs"].tolist() == [1, 2, 3, 0xFFFFFFFF]


def test_op_layout_is_read_only_and_sized_by_the_shortest_list() -> None:
    seen = {}

    class Spy(NumpyKernel):
        def intersect(self, terms, shifts, out, out_offsets, counts):        # type: ignore[no-untyped-def]
            seen["writeable"] = out_offsets.flags.writeable
            seen["layout"] = out_offsets.copy()
            with pytest.raises(ValueError, match="WRITEABLE"):
                out_offsets.flags.writeable = True                # what a kernel could try
            super().intersect(terms, shifts, out, out_offsets, counts)

    index = inputs.flatten([np.arange(5, dtype=np.uint32), np.arange(3, dtype=np.uint32), np.empty(0, np.uint32)])
    inst = target.build(SimpleNamespace(PostingIntersect=Spy), {"lists": 3}, index)   # type: ignore[arg-type]
    target.OPS["speed"](inst, {"terms": np.array([[0, 1], [0, 2], [0, 0]]), "shifts": np.zeros((3, 2), np.int64)})
    assert seen["writeable"] is False and seen["layout"].tolist() == [0, 3, 3, 8]
    with pytest.raises(ValueError):
        target.build(SimpleNamespace(PostingIntersect=Spy), {"lists": 2}, index)     # type: ignore[arg-type]


# --- the offline playbook ----------------------------------------------------------------------------------

def test_playbook_replays_in_sequence() -> None:
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}   # 03: a unified diff


def _playbook_module(tmp_path: Path, entry: str) -> ModuleType:
    """The entry's kernel as the offline loop builds it: applied to the keep (01) unless it is the keep."""
    return load_unique(playbook_kernel(FOLDER, tmp_path, *dict.fromkeys((KEEP, entry))))


@pytest.mark.slow
@pytest.mark.parametrize("entry", [KEEP, "04-merge-only.md"])
def test_playbook_kernels_are_exact(tmp_path: Path, entry: str) -> None:
    assert failures(_playbook_module(tmp_path, entry)) == {}


@pytest.mark.slow
def test_playbook_wrong_kernel_fails_at_the_last_entry(tmp_path: Path) -> None:
    failed = failures(_playbook_module(tmp_path, "02-trim-to-common-range.md"))
    assert {"first_last", "identical", "all_equal"} <= set(failed)
    assert "count" in failed["first_last"]



@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    got = offline_run(repo, "posting-intersect", write_config(repo, cumulative=False))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.1
