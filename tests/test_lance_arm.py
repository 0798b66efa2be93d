"""Lance itself as a measured arm: strict timer parsing, the dataset that answers the fixture's
question (and refuses one that does not), and a whole vs-Lance trial through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from orchestrator import gate
from targets.harness import cache, lance, lance_arm, measure
from targets.harness.failures import TrialFailure
from targets.harness.prng import Stream
from targets.harness.result import parse_json
from targets.pq_l2 import inputs, reference
from targets.pq_l2.run_experiment import PLAN

PLAN_LINE = ("      ANNSubIndex: elapsed=3.1ms, name=vec_idx, k=10, deltas=1, metric=L2, metrics=[output_rows=10, "
             "index_comparisons=1.21 K, index_distance_topk_time=15.25µs, index_query_prepare_time=32.42µs, "
             "index_search_time={value}]")


@pytest.mark.parametrize("value, ns", [("74.13µs", 74130), ("74.13us", 74130), ("812ns", 812), ("1.5ms", 1_500_000),
                                       ("2s", 2_000_000_000)])
def test_the_timer_is_read_in_its_unit(value: str, ns: int) -> None:
    assert lance.timer_ns(PLAN_LINE.format(value=value), lance.SUB_INDEX_TIMER) == ns


@pytest.mark.parametrize("plan, why", [
    (PLAN_LINE.format(value="74.13µs").replace("index_search_time", "index_other_time"), "expected one index_search_time"),
    (PLAN_LINE.format(value="74.13 µs"), "expected one index_search_time"),
    (PLAN_LINE.format(value="74.13ks"), "expected one index_search_time"),
    (PLAN_LINE.format(value="74.13µs") + "\n" + PLAN_LINE.format(value="1µs"), "expected one ANNSubIndex"),
    (PLAN_LINE.format(value="74.13µs") + "\n  KNNVectorDistance: metric=l2", "refine step"),
    ("", "expected one ANNSubIndex"),
])
def test_a_plan_without_exactly_one_clean_timer_is_an_error(plan: str, why: str) -> None:
    with pytest.raises(lance.LanceError, match=why):
        lance.timer_ns(plan, lance.SUB_INDEX_TIMER)


@pytest.mark.parametrize("value", [None, np.array([5], np.int32), np.array([5, 6], np.int64), np.array([0], np.int64),
                                   np.array([-3], np.int64), np.array([4e12], np.int64), np.array(5.0)])
def test_an_arm_timing_itself_must_send_one_plausible_time(value: object) -> None:
    with pytest.raises(TrialFailure, match="no valid own time"):
        measure.own_time_ns(value, "lance")


def test_call_overhead_is_subtracted_and_fails_closed_when_it_dominates() -> None:
    ns = {"a": [np.array([300, 310, 320], np.int64)]}
    assert measure.without_call_overhead(ns, {"a": [100]}, ["a"])["a"][0].tolist() == [200, 210, 220]
    with pytest.raises(TrialFailure, match="over half"):
        measure.without_call_overhead(ns, {"a": [160]}, ["a"])


# ------------------------------------------------------------------------- the dataset

def _small_fixture(seed: int = 3) -> tuple[np.ndarray, np.ndarray, int, int]:
    shape = inputs.SHAPES[0]
    n, m = 1_000, shape.num_sub_vectors
    s = Stream(seed)
    codebook = s.normal(m * 256 * shape.sub_dim)
    codes = s.integers(256, n * m).astype(np.uint8)
    return codebook, codes, n, m


def test_lance_answers_the_fixtures_question(tmp_path: Path) -> None:
    codebook, codes, n, m = _small_fixture()
    shape = inputs.SHAPES[0]
    ds = lance_arm.open_or_build(tmp_path / "cache", "l2", codebook, codes, n, m)
    assert np.array_equal(lance.stored_pq_codes(ds, n, m), codes.reshape(n, m))
    query = Stream(9).normal(shape.dim)
    oracle = reference.distances(shape, reference.distance_table(shape, codebook, query), codes, n)
    ids, dists = lance.search(ds, query, n)
    by_row = np.empty(n, np.float32)
    by_row[ids] = dists
    assert np.allclose(by_row, oracle, rtol=1e-6, atol=1e-4)


def test_the_dataset_is_built_once_and_reopened(tmp_path: Path) -> None:
    codebook, codes, n, m = _small_fixture()
    lance_arm.open_or_build(tmp_path, "l2", codebook, codes, n, m)
    (built,) = tmp_path.glob("*.lance")
    stamp = built.stat().st_mtime_ns
    lance_arm.open_or_build(tmp_path, "l2", codebook, codes, n, m)
    assert [p.name for p in tmp_path.iterdir()] == [built.name] and built.stat().st_mtime_ns == stamp


def test_a_cached_dataset_that_answers_another_question_is_refused(tmp_path: Path) -> None:
    """Someone swaps the cached dataset for one with other codes: the open-time check catches it."""
    codebook, codes, n, m = _small_fixture()
    lance_arm.open_or_build(tmp_path / "a", "l2", codebook, codes, n, m)
    other = codes.copy()
    other[17 * m + 3] ^= 0x55
    lance_arm.open_or_build(tmp_path / "b", "l2", codebook, other, n, m)
    key = lance_arm.dataset_key("l2", str(m), codebook, codes)
    (tmp_path / "a" / f"{key}.lance").rename(tmp_path / "a" / "old")
    (tmp_path / "b" / f"{lance_arm.dataset_key('l2', str(m), codebook, other)}.lance").rename(tmp_path / "a" / f"{key}.lance")
    with pytest.raises(lance.LanceError, match="vector 17 sub-vector 3"):
        lance_arm.open_or_build(tmp_path / "a", "l2", codebook, codes, n, m)


def test_codes_that_differ_only_between_identical_centroids_are_the_same_answer(monkeypatch) -> None:
    codebook, codes, n, m = _small_fixture()
    cb = codebook.reshape(m, 256, -1).copy()
    cb[2, 9] = cb[2, 40]                       # two bit-identical centroids in sub-space 2
    stored = codes.reshape(n, m).copy()
    stored[stored[:, 2] == 9, 2] = 40
    monkeypatch.setattr(lance, "stored_pq_codes", lambda ds, n_, m_: stored)    # what Lance would have encoded
    assert lance_arm.codes_problem(object(), cb.reshape(-1), codes, n, m) is None
    stored[0, 5] = (int(stored[0, 5]) + 1) % 256
    assert "vector 0 sub-vector 5" in lance_arm.codes_problem(object(), cb.reshape(-1), codes, n, m)


def test_a_shared_cache_directory_is_refused(tmp_path: Path) -> None:
    codebook, codes, n, m = _small_fixture()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(lance.LanceError, match="not a private directory"):
        lance_arm.open_or_build(shared, "l2", codebook, codes, n, m)


# ------------------------------------------------------------------------- a whole vs-Lance trial

@pytest.mark.slow
def test_a_vs_lance_trial_measures_the_kernel_against_lance_and_checks_lances_answers(tmp_path: Path) -> None:
    # The machine's own cache: the nine datasets are built once for every test that needs them.
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "trial", "--target", "pq-l2", "--against-lance",
                           "--replicates", "1", "--sessions", "1", "--queries", "4", "--json",
                           "--out-dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 0 and data["mode"] == "paired" and "verdict" not in data
    assert data["anchor"].startswith(f"pylance {lance.version()}; Lance's own timer ANNSubIndex.index_search_time")
    combos = set(data["per_combo_speedup"])
    assert len(combos) == 9 and set(data["call_overhead_ns"]) == combos
    assert all(v > 0 for v in data["per_combo_speedup"].values())
    assert data["verified_calls"] >= 2 * 9              # Lance's answers were checked against the oracle too
    assert len(list((cache.cache_dir() / "lance").glob("*.lance"))) >= 9
    # Such a result is a measurement, never a verdict: the gate refuses it.
    result = parse_json((tmp_path / "out" / "result.json").read_text())
    verdict = gate.judge(result, gate.GateConfig(), 120.0, "", 0)
    assert not verdict.keep and "against Lance itself" in " ".join(verdict.reasons)


@pytest.mark.slow
def test_against_lance_and_against_a_kernel_are_exclusive() -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "trial", "--target", "pq-l2", "--against-lance",
                           "--against", str(ROOT / "targets" / "pq_l2" / "kernels.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "give one incumbent" in proc.stderr


@pytest.mark.slow
def test_a_target_lance_cannot_run_says_so() -> None:
    assert PLAN.lance_params == {"metric": "l2"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "trial", "--target", "ivf-partition",
                           "--against-lance"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Lance cannot run ivf-partition" in proc.stderr
