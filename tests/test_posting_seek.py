"""Tests for the posting-seek target: the oracle (the step check against a one-op-at-a-time
simulation and a pure-Python cursor), the compiled baseline (Lance's `PostingIterator::next`,
bit for bit, and the old d2039d75 loop giving the same answers), the battery's edge cases by
name, the inputs' determinism and patterns, the check (every tempting wrong kernel fails, legal
variants pass), and the playbook (its keep exact and faster in a paired trial, its wrong kernel
rejected, the offline loop keeps its first entry)."""

from __future__ import annotations

import bisect
import functools
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.harness.plan import Case
from targets.harness.prng import CORRECTNESS_SEED
from targets.posting_seek import inputs, kernels, reference, run_experiment, target

FOLDER = ROOT / "targets" / "posting_seek"
KEEP = "01-two-level-block-rank.md"


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def case_named(name: str) -> Case:
    return next(c for c in battery() if c.name == name)


def run_case(module: object, case: Case) -> list[str | None]:
    """Every call's check; ``module`` is a kernels module or a class standing in for PostingSeek."""
    if isinstance(module, type):
        module = SimpleNamespace(PostingSeek=module)
    inst = target.build(module, case.params, case.arrays)                           # type: ignore[arg-type]
    return [run_experiment.check(case, i, target.OPS["check"](inst, call)) for i, call in enumerate(case.calls)]


def failures(module: object, cases: tuple[Case, ...] | None = None) -> dict[str, str]:
    out = {}
    for case in cases or battery():
        problems = [p for p in run_case(module, case) if p]
        if problems:
            out[case.name] = problems[0]
    return out


# --- the oracle --------------------------------------------------------------------------------------

def python_cursor(doc_ids: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """The rules with bisect on a Python list: a second, independent computation."""
    docs = [int(d) for d in doc_ids]
    out = []
    index, base, fresh = 0, 0, True
    for op in ops.tolist():
        if op == -1:
            index, base, fresh = 0, 0, True
            out.append(-1)
            continue
        if index >= len(docs):
            out.append(-1)
            continue
        index = max(index, bisect.bisect_left(docs, (0 if fresh else base) + op))
        fresh = False
        base = docs[index] if index < len(docs) else -1
        out.append(base)
    return np.array(out, dtype=np.int64)


def test_simulation_matches_a_python_cursor_and_the_step_check_on_the_battery() -> None:
    checked = 0
    for case in battery():
        for call in case.calls:
            docs, ops = case.arrays["doc_ids"], call["ops"]
            truth = reference.simulate(docs, ops)
            np.testing.assert_array_equal(truth, python_cursor(docs, ops), err_msg=case.name)
            np.testing.assert_array_equal(reference.expected(docs, ops, truth), truth, err_msg=case.name)
            checked += ops.size
    assert checked > 20_000


@pytest.mark.parametrize("seed", range(5))
def test_step_check_finds_the_first_wrong_result_wherever_it_is(seed: int) -> None:
    rng = np.random.default_rng(seed)
    docs = np.unique(rng.integers(0, 5_000, 400)).astype(np.uint32)
    ops = rng.integers(0, 60, 300)
    ops[rng.integers(0, 300, 12)] = -1
    truth = reference.simulate(docs, ops)
    for i in rng.integers(0, 300, 20):
        wrong = truth.copy()
        wrong[i] = truth[i] + 1 if truth[i] >= 0 else int(docs[0])
        got = run_experiment.judge({"results": wrong}, docs, ops)
        assert got is not None and got.startswith(f"op {i} "), got


# --- the baseline: Lance's next(), exact; the old loop agrees ------------------------------------------

def test_baseline_kernel_passes_the_battery() -> None:
    assert failures(kernels) == {}


def d2039d75_next(first_docs: np.ndarray, docs: np.ndarray, index: int, least: int) -> int:
    """lancedb/lance d2039d75 PostingIterator::next: the sidecar scanned linearly without limit,
    then one entry at a time (a different loop, the same answer)."""
    block = index // 128
    while block + 1 < first_docs.size and int(first_docs[block + 1]) <= least:
        block += 1
    index = max(index, block * 128)
    while index < docs.size and int(docs[index]) < least:
        index += 1
    return index


@pytest.mark.parametrize("layout", inputs.LAYOUTS)
def test_baseline_next_matches_the_old_upstream_loop(layout: str) -> None:
    docs = inputs.make_list(layout, 3_000, 5)
    first = inputs.sidecar(docs)
    rng = np.random.default_rng(1)
    index = 0
    for _ in range(400):
        least = int(docs[min(index, docs.size - 1)]) + int(rng.integers(0, 40 * inputs.MEAN_GAP))
        new = kernels._next(first, docs, index, least)
        assert new == d2039d75_next(first, docs, index, least)
        index = 0 if new >= docs.size else new


# --- the battery: each edge case, by name ------------------------------------------------------------

def answers(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    case = case_named(name)
    return [(call["ops"], reference.simulate(case.arrays["doc_ids"], call["ops"])) for call in case.calls]


def test_battery_names_every_edge_case_and_pattern() -> None:
    names = {c.name for c in battery()}
    assert set(inputs.EDGE_CASES) <= names
    assert {f"{p}/fresh" for p in inputs.PATTERNS} <= names
    assert {f"random_{layout}_{b}" for layout in inputs.LAYOUTS for b in inputs.BATTERY_BLOCKS} <= names
    assert {"single_entry", "partial_block", "block_boundaries", "zero_delta", "past_end", "high_ids",
            "runs_and_gaps"} <= set(inputs.EDGE_CASES)


def test_edge_case_sizes() -> None:
    assert case_named("single_entry").arrays["doc_ids"].size == 1
    assert case_named("partial_block").arrays["doc_ids"].size < 128
    for n in (128, 129, 255, 256, 257):
        assert case_named(f"block_multiples_{n}").arrays["doc_ids"].size == n


def test_edge_case_block_boundaries_hit_first_last_and_gaps() -> None:
    case = case_named("block_boundaries")
    docs = case.arrays["doc_ids"].astype(np.int64)
    firsts, lasts = set(docs[::128].tolist()), set(docs[127::128].tolist())
    (_, walk_first), (_, walk_last), (ops, gaps), _ = answers("block_boundaries")
    assert set(walk_first.tolist()) == firsts and set(walk_last.tolist()) <= lasts and len(set(walk_last.tolist())) > 8
    assert set(gaps[1:].tolist()) <= firsts                       # targets in the gaps land on next blocks' firsts


def test_edge_cases_zero_delta_past_end_and_resets() -> None:
    (_, zeros), *_ = answers("zero_delta")
    assert np.unique(zeros).size == 1 and zeros[0] >= 0            # 50 seeks to the same doc
    results = answers("past_end")
    assert any((r == -1).sum() >= 3 and (o >= 0).sum() > (r >= 0).sum() for o, r in results)
    assert any(np.any((o[:-1] == -1) & (o[1:] == -1)) for o, _ in results)            # consecutive resets
    assert max(int(o.max()) for o, _ in results) >= (1 << 32) - 2


def test_edge_cases_high_ids_and_runs() -> None:
    docs = case_named("high_ids").arrays["doc_ids"]
    assert int(docs[-1]) == target.MAX_DOC_ID
    assert any(target.MAX_DOC_ID in r.tolist() for _, r in answers("high_ids"))
    runs = case_named("runs_and_gaps").arrays["doc_ids"].astype(np.int64)
    gaps = np.diff(runs)
    assert (gaps == 1).sum() > 2_000 and gaps.max() >= 990_000


def test_random_cases_cover_past_the_end_and_every_pattern() -> None:
    for layout in inputs.LAYOUTS:
        for blocks in inputs.BATTERY_BLOCKS:
            results = answers(f"random_{layout}_{blocks}")
            assert len(results) == len(inputs.PATTERNS)
            assert any(((r == -1) & (o >= 0)).any() for o, r in results)            # seeks past the end


# --- inputs ---------------------------------------------------------------------------------------------

def test_fixtures_match_direct_generation_and_lists_are_well_formed() -> None:
    fx = inputs.fixtures()
    for name in ("block_boundaries", "random_geo_40"):
        cached, direct = inputs.cached_battery_case(fx, name), inputs.battery_case(name, CORRECTNESS_SEED)
        np.testing.assert_array_equal(cached.doc_ids, direct.doc_ids)
        for a, b in zip(cached.calls, direct.calls, strict=True):
            np.testing.assert_array_equal(a, b)
    for layout in inputs.LAYOUTS:
        for blocks in inputs.SPEED_BLOCKS:
            docs = fx[f"speed/{layout}/{blocks}"]
            assert docs.dtype == np.uint32 and docs.size == blocks * 128
            assert np.all(np.diff(docs.astype(np.int64)) > 0) and int(docs[-1]) <= target.MAX_DOC_ID


def test_geometric_gaps_average_the_mean_gap() -> None:
    gaps = np.diff(inputs.make_list("geo", 200_000, 3).astype(np.int64))
    assert abs(gaps.mean() - inputs.MEAN_GAP) < 1.0 and gaps.min() >= 1 and gaps.std() > 30


@pytest.mark.parametrize("pattern", list(inputs.PATTERNS))
def test_sequences_move_as_their_pattern_says(pattern: str) -> None:
    docs = inputs.make_list("geo", 1_000 * 128, 4)
    ops = inputs.speed_queries(inputs.SpeedCombo(1_000, f"geo-{pattern}"), docs, 9, 1)[0]["ops"]
    assert ops.size == inputs.SEEKS_PER_CALL[pattern][1_000] and ops[0] == target.RESET
    res = reference.simulate(docs, ops)
    index = np.searchsorted(docs, res)
    moved = np.diff(index)[(res[1:] >= 0) & (res[:-1] >= 0) & (ops[1:] >= 0)]
    lo, hi = inputs.PATTERNS[pattern]
    if lo < 0:
        lo, hi = -hi * docs.size, -lo * docs.size
    assert lo * 0.6 <= np.median(moved) <= hi * 1.4, (pattern, np.median(moved))
    again = inputs.speed_queries(inputs.SpeedCombo(1_000, f"geo-{pattern}"), docs, 9, 1)[0]["ops"]
    np.testing.assert_array_equal(ops, again)
    other = inputs.speed_queries(inputs.SpeedCombo(1_000, f"geo-{pattern}"), docs, 10, 1)[0]["ops"]
    assert ops.tobytes() != other.tobytes()


def test_speed_combos_include_wand_shallow_on_every_list() -> None:
    combos = {w.combo for w in run_experiment.workloads()}
    for blocks in inputs.SPEED_BLOCKS:
        assert {f"{blocks}/geo-wand_shallow", f"{blocks}/even-wand_shallow"} <= combos
    assert len(combos) == 15


def test_fresh_cases_are_deterministic() -> None:
    a, b, c = (inputs.fresh_case("skip_shallow", s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    assert a.doc_ids.tobytes() != c.doc_ids.tobytes()


# --- the check: a wrong kernel fails in each tempting way, legal variants pass ----------------------------

class PythonSeek:
    """A legal variant: the rules with bisect."""

    def __init__(self, first_doc_ids: np.ndarray, doc_ids: np.ndarray) -> None:
        self.doc_ids = doc_ids

    def seek_sequence(self, ops: np.ndarray, out: np.ndarray) -> None:
        out[:] = self.answer(ops)

    def answer(self, ops: np.ndarray) -> np.ndarray:
        return python_cursor(self.doc_ids, ops)


class Vectorised(PythonSeek):
    """Legal: one searchsorted per run of seeks, each step's base from the last."""

    def answer(self, ops: np.ndarray) -> np.ndarray:
        return reference.simulate(self.doc_ids, ops)


def variant(name: str, **rules: object) -> type:
    """A PythonSeek whose cursor breaks one rule (see ``cursor``)."""
    return type(name, (PythonSeek,), {"answer": lambda self, ops: cursor(self.doc_ids, ops, **rules)})


def cursor(doc_ids: np.ndarray, ops: np.ndarray, *, chained: bool = True, side: str = "left",
           exhausts: bool = True, resets: bool = True, cross_blocks: bool = True,
           target_dtype: type = np.int64) -> np.ndarray:
    """The rules, with switches that break one each."""
    docs = doc_ids.astype(np.int64)
    out = []
    index, base, fresh = 0, 0, True
    for op in ops.tolist():
        if op == -1:
            if resets:
                index, base, fresh = 0, 0, True
            out.append(-1)
            continue
        if index >= docs.size:
            if exhausts:
                out.append(-1)
                continue
            index, base, fresh = 0, 0, True
        goal = int(np.array((0 if fresh or not chained else base) + op).astype(target_dtype))
        found = max(index, int(np.searchsorted(docs, goal, side=side)))
        if not cross_blocks and found < docs.size and found // 128 > index // 128:
            found = min(docs.size, (index // 128 + 1) * 128) - 1            # stays on its block's last entry
        index, fresh = found, False
        base = int(docs[index]) if index < docs.size else -1
        out.append(base)
    return np.array(out, dtype=np.int64)


WRONG = {
    "targets not chained (absolute)": variant("Absolute", chained=False),
    "first doc above the target": variant("Above", side="right"),
    "cursor revives after exhaustion": variant("Revive", exhausts=False),
    "reset not honoured": variant("NoReset", resets=False),
    "does not cross blocks": variant("NoCross", cross_blocks=False),
    "int32 targets": variant("Int32", target_dtype=np.int32),
}


@pytest.mark.parametrize("flaw", sorted(WRONG))
def test_wrong_kernels_fail_the_battery(flaw: str) -> None:
    assert failures(WRONG[flaw]), flaw


def test_int32_targets_are_caught_by_the_largest_ops() -> None:
    # targets past 2**31 - 1 wrap in int32: only the cases with ids or ops that large catch it
    assert set(failures(WRONG["int32 targets"])) == {"past_end", "high_ids"}


@pytest.mark.parametrize("legal", [PythonSeek, Vectorised])
def test_legal_variants_pass_the_battery(legal: type) -> None:
    assert failures(legal) == {}


def test_an_unwritten_result_fails() -> None:
    class Lazy(PythonSeek):
        def seek_sequence(self, ops: np.ndarray, out: np.ndarray) -> None:
            out[:-1] = self.answer(ops)[:-1]

    problem = failures(Lazy, (case_named("zero_delta"),))["zero_delta"]
    assert "never written" in problem


def test_build_refuses_a_wrong_sidecar() -> None:
    docs = np.arange(0, 600, 2, dtype=np.uint32)
    with pytest.raises(ValueError):
        target.build(kernels, {"length": docs.size}, {"first_doc_ids": docs[::64].copy(), "doc_ids": docs})
    with pytest.raises(ValueError):
        target.build(kernels, {"length": docs.size + 1}, inputs.list_arrays(docs))


# --- the offline playbook ----------------------------------------------------------------------------------

def test_playbook_replays_in_sequence() -> None:
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies",   # 03: stale SEARCH
                        "05": "applies"}


def _playbook_path(tmp_path: Path, entry: str) -> Path:
    """The entry's kernel as the offline loop builds it: applied to the keep (01) unless it is the keep."""
    return playbook_kernel(FOLDER, tmp_path, *dict.fromkeys((KEEP, entry)), api=target.KERNEL_API)


def _playbook_module(tmp_path: Path, entry: str) -> ModuleType:
    return load_unique(_playbook_path(tmp_path, entry))


@pytest.mark.slow
@pytest.mark.parametrize("entry", [KEEP, "04-binary-sidecar.md", "05-searchsorted-per-seek.md"])
def test_playbook_kernels_are_exact(tmp_path: Path, entry: str) -> None:
    assert failures(_playbook_module(tmp_path, entry)) == {}


@pytest.mark.slow
def test_playbook_wrong_kernel_fails_on_block_ends(tmp_path: Path) -> None:
    failed = failures(_playbook_module(tmp_path, "02-last-entry-shortcut.md"))
    assert any(name.startswith("block_multiples") for name in failed) and "block_boundaries" in failed



@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    got = offline_run(repo, "posting-seek", write_config(repo, cumulative=False))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.05
