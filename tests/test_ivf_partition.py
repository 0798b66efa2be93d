"""Tests for the ivf-partition target: the oracle (bit-exact against a scalar port of Lance), the
compiled baseline (bit-exact distances, sort_to_indices semantics), the top-n check (ties,
tolerance, the precision trap), the inputs, and the playbook (its keep exact and faster in a paired
trial, its wrong kernel rejected)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, ROOT, load_unique, playbook_kernel, replay_playbook, target_trial
from lance_scalar import bits, dot_scalar, l2_scalar, normalize
from targets.ivf_partition import inputs, kernels, reference, run_experiment, target
from targets.ivf_partition.inputs import IvfShape

F32 = np.float32
FOLDER = ROOT / "targets" / "ivf_partition"
PLAYBOOK = FOLDER / "playbook"


@functools.lru_cache(maxsize=1)
def all_fixtures() -> dict[str, np.ndarray]:
    return inputs.fixtures()          # once per session (cached on disk too)


def _battery(shape: IvfShape, kind: str, dt: str) -> dict[str, np.ndarray]:
    prefix = f"battery/{shape.label}/{kind}/{dt}/"
    return {k[len(prefix):]: v for k, v in all_fixtures().items() if k.startswith(prefix)}


def _rng_case(nlist: int, dim: int, seed: int, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centroids = rng.uniform(-1, 1, (nlist, dim)).astype(F32)
    query = rng.uniform(-1, 1, dim).astype(F32)
    if spread:
        centroids *= (10.0 ** rng.integers(-3, 4, centroids.shape)).astype(F32)
        query *= (10.0 ** rng.integers(-3, 4, dim)).astype(F32)
    return centroids, query


def _judge(out: dict[str, np.ndarray], query: np.ndarray, centroids: np.ndarray, dt: str,
           nprobes: int | None) -> str | None:
    return run_experiment.judge(out, query, nprobes, centroids, dt)


# --- bit-exact Lance order: a pure-Python port, one numpy.float32 operation at a time ----------------

@pytest.mark.parametrize("dim", [1, 8, 15, 16, 17, 40, 48, 130])
@pytest.mark.parametrize("spread", [False, True])
def test_reference_bit_exact_against_scalar_port(dim: int, spread: bool) -> None:
    centroids, query = _rng_case(23, dim, seed=dim * 7 + spread, spread=spread)
    l2 = np.array([l2_scalar(query, c) for c in centroids], dtype=F32)
    dot = np.array([F32(F32(1.0) - dot_scalar(query, c)) for c in centroids], dtype=F32)
    unit = normalize(query)
    cos = np.array([l2_scalar(unit, c) for c in centroids], dtype=F32)
    np.testing.assert_array_equal(bits(reference.normalize(query)), bits(unit))
    for dt, expected in (("l2", l2), ("dot", dot), ("cosine", cos)):
        got = reference.distances(query, centroids, dt)
        assert got.dtype == F32 and got.shape == (23,)
        np.testing.assert_array_equal(bits(got), bits(expected), err_msg=dt)


def test_lance_order_matters_so_bit_test_has_teeth() -> None:
    # On wide-range data a plain sequential sum gives other f32 bits for some centroids.
    centroids, query = _rng_case(256, 40, seed=0, spread=True)
    diff = query - centroids
    sequential = np.zeros(256, dtype=F32)
    for d in range(40):
        sequential += diff[:, d] * diff[:, d]
    assert np.any(bits(sequential) != bits(reference.l2_distances(query, centroids)))


@pytest.mark.parametrize("dim", [8, 40, 256])
def test_reference_against_float64_brute_force(dim: int) -> None:
    centroids, query = _rng_case(300, dim, seed=dim)
    c64, q64 = centroids.astype(np.float64), query.astype(np.float64)
    unit = q64 / np.sqrt(q64 @ q64)
    expected = {"l2": ((c64 - q64) ** 2).sum(1), "dot": 1.0 - c64 @ q64, "cosine": ((c64 - unit) ** 2).sum(1)}
    for dt, want in expected.items():
        got = reference.distances(query, centroids, dt).astype(np.float64)
        assert np.all(np.abs(got - want) <= 1e-4 + 1e-5 * np.abs(want)), dt


# --- the top-n check: ties, tolerance, shapes ---------------------------------------------------------

def test_reference_selection_passes_and_breaks_ties_by_id() -> None:
    centroids = np.repeat(_rng_case(10, 16, seed=1)[0], 3, axis=0)        # ids 3k, 3k+1, 3k+2 tie
    query = _rng_case(1, 16, seed=2)[1]
    for nprobes in (1, 4, 30, None, 99):
        ids, dists = reference.find_partitions(query, centroids, "l2", nprobes)
        assert ids.dtype == np.uint32 and dists.dtype == F32
        assert ids.size == reference.probe_count(30, nprobes)
        assert _judge({"ids": ids, "dists": dists}, query, centroids, "l2", nprobes) is None
        assert np.all(ids[:3] // 3 == ids[0] // 3) and np.all(np.diff(ids[:3].astype(int)) > 0)


def test_exact_ties_may_come_in_any_order_and_either_side_of_the_cut() -> None:
    centroids = np.repeat(_rng_case(10, 16, seed=1)[0], 3, axis=0)
    query = _rng_case(1, 16, seed=2)[1]
    ids, dists = reference.find_partitions(query, centroids, "l2", 4)   # the 4th splits a tied triple
    swapped = ids.copy()
    swapped[:3] = swapped[:3][::-1]                                      # reorder a tied triple
    assert _judge({"ids": swapped, "dists": dists}, query, centroids, "l2", 4) is None
    other = ids.copy()
    triple = [i for i in range(30) if i // 3 == ids[3] // 3 and i not in ids]
    other[3] = triple[0]                                                 # the other twin at the cut
    assert _judge({"ids": other, "dists": dists}, query, centroids, "l2", 4) is None
    # A partition that is not tied with the cut is rejected.
    outside = reference.find_partitions(query, centroids, "l2", None)[0][6]
    wrong = ids.copy()
    wrong[3] = outside
    assert "top 4" in _judge({"ids": wrong, "dists": dists}, query, centroids, "l2", 4)


def test_near_ties_within_tolerance_only() -> None:
    centroids = np.zeros((3, 4), dtype=F32)
    centroids[:, 0] = [1.0, 1.0 + 2e-5, 1.1]          # distances to 0: 1, ~1.00004, 1.21
    query = np.zeros(4, dtype=F32)
    ref = reference.distances(query, centroids, "l2")
    close = {"ids": np.array([1], dtype=np.uint32), "dists": ref[[1]]}
    assert _judge(close, query, centroids, "l2", 1) is None                # 4e-5 apart: a tie
    far = {"ids": np.array([2], dtype=np.uint32), "dists": ref[[2]]}
    assert "does not make the top 1" in _judge(far, query, centroids, "l2", 1)


@pytest.mark.parametrize("change, message", [
    (lambda o: {**o, "ids": o["ids"].astype(np.int64)}, "dtype int64"),
    (lambda o: {**o, "dists": o["dists"].astype(np.float64)}, "dtype float64"),
    (lambda o: {"ids": o["ids"][:-1], "dists": o["dists"][:-1]}, "expected 5"),
    (lambda o: {**o, "ids": np.r_[o["ids"][:-1], o["ids"][:1]]}, "duplicate"),
    (lambda o: {**o, "ids": np.r_[o["ids"][:-1], np.uint32(1000)]}, "out of range"),
    (lambda o: {**o, "dists": np.r_[o["dists"][:-1], F32(np.nan)]}, "non-finite"),
    (lambda o: {"ids": o["ids"][::-1].copy(), "dists": o["dists"][::-1].copy()}, "not ascending"),
    (lambda o: {**o, "dists": o["dists"] + F32(0.01)}, "differs from the reference"),
    (lambda o: {"dists": o["dists"]}, "expected a 1-d numpy.ndarray"),
])
def test_check_rejects_malformed_outputs(change, message) -> None:
    centroids, query = _rng_case(200, 24, seed=9)
    ids, dists = reference.find_partitions(query, centroids, "dot", 5)
    assert _judge({"ids": ids, "dists": dists}, query, centroids, "dot", 5) is None
    problem = _judge(change({"ids": ids, "dists": dists}), query, centroids, "dot", 5)
    assert problem is not None and message in problem, problem


@pytest.mark.slow
def test_nprobes_none_above_nlist_and_a_single_centroid() -> None:
    centroids, query = _rng_case(7, 12, seed=4)
    k = kernels.IvfKernel(centroids, "cosine")
    for nprobes, n in ((None, 7), (7, 7), (50, 7), (1, 1)):
        out = target.OPS["check"](k, {"query": query, "nprobes": target.nprobes_array(nprobes)})
        assert out["ids"].size == n and _judge(out, query, centroids, "cosine", nprobes) is None
    one = kernels.IvfKernel(centroids[:1], "l2")
    out = target.OPS["check"](one, {"query": query, "nprobes": target.nprobes_array(20)})
    assert out["ids"].tolist() == [0]


# --- the precision trap and the dot tolerance ---------------------------------------------------------

def expanded(query: np.ndarray, centroids: np.ndarray, nprobes: int | None) -> dict[str, np.ndarray]:
    """The |q|² + |c|² − 2·C·q rewrite in f32, unverified (what a 'fast' kernel might return)."""
    d = np.dot(query, query) + np.einsum("ij,ij->i", centroids, centroids) - F32(2.0) * (centroids @ query)
    ids = np.argsort(d, kind="stable")[:reference.probe_count(d.size, nprobes)]
    return {"ids": ids.astype(np.uint32), "dists": d[ids].astype(F32)}


@pytest.mark.parametrize("shape", inputs.BATTERY_SHAPES, ids=lambda s: s.label)
def test_unverified_expansion_fails_large_dynamic_range_near_duplicate(shape: IvfShape) -> None:
    case = _battery(shape, "large_dynamic_range", "l2")
    centroids, near = case["centroids"], case["query_1"]
    assert "differs from the reference" in _judge(expanded(near, centroids, 1), near, centroids, "l2", 1)
    # ... while the baseline kernel and the reference pass the same check ...
    out = target.OPS["check"](kernels.IvfKernel(centroids, "l2"), {"query": near, "nprobes": target.nprobes_array(1)})
    assert _judge(out, near, centroids, "l2", 1) is None
    # ... and the rewrite passes on ordinary data: the battery's trap, not noise, rejects it.
    plain = _battery(shape, "gaussian", "l2")
    assert _judge(expanded(plain["query_0"], plain["centroids"], 20), plain["query_0"], plain["centroids"], "l2", 20) is None


def test_dot_tolerance_allows_blas_order_but_not_bf16() -> None:
    # large_dynamic_range dot products cancel: |1 − q·c| is far below Σ|q_i·c_i|, so a legal
    # reordering (BLAS) moves the result by more than 1e-5·|d|, but not by 1e-5 of the terms.
    case = _battery(IvfShape(1024, 256), "large_dynamic_range", "dot")
    centroids, query = case["centroids"], case["query_0"]

    def topn(d: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.argsort(d, kind="stable")[:20]
        return {"ids": ids.astype(np.uint32), "dists": d[ids].astype(F32)}

    ref = reference.distances(query, centroids, "dot").astype(np.float64)
    blas = F32(1.0) - centroids @ query
    assert np.max(np.abs(blas - ref) / (1e-4 + 1e-5 * np.abs(ref))) > 1.0        # a plain rtol fails it
    assert _judge(topn(blas), query, centroids, "dot", 20) is None
    bf16 = (centroids.view(np.uint32) & np.uint32(0xFFFF0000)).view(F32)       # truncated to bfloat16
    assert "differs from the reference" in _judge(topn(F32(1.0) - bf16 @ query), query, centroids, "dot", 20)


def test_baseline_kernel_passes_the_battery() -> None:
    for case in run_experiment.cases(seed=11):
        k = target.build(kernels, case.params, case.arrays)
        for i, call in enumerate(case.calls):
            assert run_experiment.check(case, i, target.OPS["check"](k, call)) is None, (case.name, i)


# --- the compiled baseline: Lance's order bit for bit, sort_to_indices semantics ---------------------

def _assert_exact_top(module, centroids: np.ndarray, query: np.ndarray, dt: str, nprobes: int | None) -> None:
    """The kernel's answer is the reference's top n with bit-identical distances: ascending, unique
    ids, each distance the reference's own for that id, the multiset of distances the n smallest."""
    ids, dists = module.IvfKernel(centroids, dt).find_partitions(query, nprobes)
    ref = reference.distances(query, centroids, dt)
    n = reference.probe_count(centroids.shape[0], nprobes)
    assert ids.dtype == np.uint32 and dists.dtype == F32 and ids.shape == dists.shape == (n,)
    assert np.unique(ids).size == n
    np.testing.assert_array_equal(bits(dists), bits(ref[ids]), err_msg=f"{dt} nprobes={nprobes}")
    np.testing.assert_array_equal(dists, np.sort(ref)[:n], err_msg=f"{dt} nprobes={nprobes}")


@pytest.mark.parametrize("dim", [1, 15, 16, 40, 130])
@pytest.mark.parametrize("spread", [False, True])
def test_baseline_distances_bit_exact_and_top_n(dim: int, spread: bool) -> None:
    centroids, query = _rng_case(301, dim, seed=dim * 3 + spread, spread=spread)
    for dt in inputs.DISTANCE_TYPES:
        for nprobes in (1, 2, 20, 299, 300, 301, None):
            _assert_exact_top(kernels, centroids, query, dt, nprobes)


@pytest.mark.parametrize("nlist", [2, 17, 21, 64, 1000, 4099])
def test_baseline_selection_with_heavy_ties(nlist: int) -> None:
    # Few distinct centroids (exact ties everywhere) and rounded values: the introselect's
    # equal-element partition, the insertion-sort cut-offs and the min/max scans at the ends.
    rng = np.random.default_rng(nlist)
    distinct = np.round(rng.uniform(-2, 2, (max(1, nlist // 7), 24))).astype(F32)
    centroids = distinct[rng.integers(0, distinct.shape[0], nlist)]
    query = np.round(rng.uniform(-2, 2, 24)).astype(F32)
    for nprobes in sorted({1, 2, nlist // 2 or 1, nlist - 1 or 1, nlist, None}, key=lambda v: (v is None, v or 0)):
        _assert_exact_top(kernels, centroids, query, "l2", nprobes)


def test_baseline_selection_on_sorted_and_reversed_distances() -> None:
    # ipnsort's existing-run check: already ascending or strictly descending distances.
    query = np.zeros(4, dtype=F32)
    for order in (1.0, -1.0):
        centroids = np.zeros((500, 4), dtype=F32)
        centroids[:, 0] = np.arange(500, dtype=F32)[::int(order)]
        _assert_exact_top(kernels, centroids, query, "l2", None)
        _assert_exact_top(kernels, centroids, query, "l2", 37)


# --- inputs -------------------------------------------------------------------------------------------

def test_fixture_keys_and_dtypes() -> None:
    f = all_fixtures()
    expected = {f"battery/{s.label}/{k}/{d}/{n}" for s in inputs.BATTERY_SHAPES for k in inputs.CORRECTNESS_KINDS
                for d in inputs.DISTANCE_TYPES for n in ("centroids", "query_0", "query_1")}
    expected |= {f"speed/{s.label}/{d}/{n}" for s in inputs.SPEED_SHAPES for d in inputs.DISTANCE_TYPES
                 for n in ("centroids", "centres")}
    assert set(f) == expected
    for shape in inputs.SPEED_SHAPES:
        for dt in inputs.DISTANCE_TYPES:
            c = f[f"speed/{shape.label}/{dt}/centroids"]
            assert c.dtype == F32 and c.shape == (shape.nlist, shape.dim) and c.flags.c_contiguous
            assert np.all(np.isfinite(c))


def test_fixture_battery_case_matches_direct_generation() -> None:
    shape = inputs.BATTERY_SHAPES[1]
    direct = inputs._case_arrays(shape, "sparse", "cosine", inputs.CORRECTNESS_SEED)
    for name, arr in direct.items():
        np.testing.assert_array_equal(_battery(shape, "sparse", "cosine")[name], arr)


@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
@pytest.mark.parametrize("dt", inputs.DISTANCE_TYPES)
def test_fresh_case_deterministic_and_well_formed(kind: str, dt: str) -> None:
    shape = inputs.BATTERY_SHAPES[1]
    a, b, c = (inputs.fresh_case(shape, kind, dt, s) for s in (5, 5, 6))
    for name in ("centroids", "query_0", "query_1"):
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].tobytes() != c[name].tobytes(), name
        assert a[name].dtype == F32 and np.all(np.isfinite(a[name]))
    assert a["centroids"].shape == (shape.nlist, shape.dim)
    if dt == "cosine":
        assert a["query_0"].any() and a["query_1"].any()       # a zero query is undefined for cosine
        norms = np.linalg.norm(a["centroids"].astype(np.float64), axis=1)
        assert np.all((np.abs(norms - 1.0) < 1e-6) | (norms == 0.0))


def test_duplicated_kind_repeats_each_centroid_three_times() -> None:
    c = inputs.battery_centroids("duplicated", "l2", 3, IvfShape(300, 40))
    assert np.unique(c, axis=0).shape[0] == 100
    np.testing.assert_array_equal(c[0], c[100])
    np.testing.assert_array_equal(c[0], c[200])


@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_near_duplicate_query_sits_next_to_a_centroid(kind: str) -> None:
    case = _battery(IvfShape(1024, 256), kind, "l2")
    c64, q64 = case["centroids"].astype(np.float64), case["query_1"].astype(np.float64)
    nearest = np.sqrt(((c64 - q64) ** 2).sum(1)).min()
    assert nearest <= 2e-3 * np.sqrt((q64 ** 2).sum()) + 1e-4
    assert not np.any(np.all(case["centroids"] == case["query_1"], axis=1))


def test_speed_queries_deterministic_and_prefix_stable() -> None:
    shape = inputs.SPEED_SHAPES[1]
    centres = all_fixtures()[f"speed/{shape.label}/l2/centres"]
    for dt in inputs.DISTANCE_TYPES:
        a = inputs.speed_queries(shape, dt, centres, 5, 6)
        assert a.shape == (6, shape.dim) and a.dtype == F32
        np.testing.assert_array_equal(a, inputs.speed_queries(shape, dt, centres, 5, 6))
        np.testing.assert_array_equal(a[:3], inputs.speed_queries(shape, dt, centres, 5, 3))
        assert not np.array_equal(a, inputs.speed_queries(shape, dt, centres, 6, 6))


def test_mips_rows_have_log_normal_norms() -> None:
    rows = inputs.mips_rows(7, 4000, 32)
    logs = np.log(np.linalg.norm(rows.astype(np.float64), axis=1))
    assert abs(logs.mean()) < 0.05 and abs(logs.std() - inputs.MIPS_LOG_NORM_SIGMA) < 0.05


# --- faiss agrees with the oracle on the speed data (skipped without faiss) ---------------------------

@pytest.mark.parametrize("dt", inputs.DISTANCE_TYPES)
def test_reference_top_n_matches_faiss_flat_index(dt: str) -> None:
    faiss = pytest.importorskip("faiss")
    shape = inputs.SPEED_SHAPES[1]
    centroids = all_fixtures()[f"speed/{shape.label}/{dt}/centroids"]
    queries = inputs.speed_queries(shape, dt, all_fixtures()[f"speed/{shape.label}/{dt}/centres"], 3, 3)
    index = (faiss.IndexFlatIP if dt == "dot" else faiss.IndexFlatL2)(shape.dim)
    index.add(centroids)
    for q in queries:
        probe = reference.normalize(q) if dt == "cosine" else q
        scores, ids = index.search(probe[None, :], shape.nprobes)
        dists = (F32(1.0) - scores[0]) if dt == "dot" else scores[0]
        order = np.argsort(dists, kind="stable")                    # 1 − ip: ascending as Lance's
        out = {"ids": ids[0][order].astype(np.uint32), "dists": dists[order].astype(F32)}
        assert _judge(out, q, centroids, dt, shape.nprobes) is None


# --- the offline playbook: its keep is exact and faster, its wrong kernel is rejected ----------------

KEEP = "01-blocked-layout-exact-screen.md"


def test_playbook_replays_in_sequence() -> None:
    # Each reply applies to the incumbent of its turn: only the keep (01) becomes the incumbent; the
    # wrong kernel (02) and the slower one (04) are discarded; the stale edit (03) fails to apply.
    # Every kernel passes the static policy and keeps the API.
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


@pytest.mark.slow
@pytest.mark.parametrize("entry", [KEEP, "04-row-scan-early-abandon.md"])
def test_playbook_kernels_are_exact(tmp_path: Path, entry: str) -> None:
    # The keep's blocked pass and exact screen, and the slower entry's early abandon, claim the
    # same ids and bits as Lance's order; check it where the screen runs (dim >= 64, nprobes <=
    # nlist/8), where it falls back (structureless data: too many survivors) and on the speed data.
    module = load_unique(playbook_kernel(FOLDER, tmp_path, entry))
    for nlist, dim, seed in ((2000, 64, 1), (700, 130, 2), (257, 96, 3)):
        centroids, query = _rng_case(nlist, dim, seed=seed, spread=seed == 3)
        for dt in inputs.DISTANCE_TYPES:
            for nprobes in (1, 5, nlist // 8, nlist // 8 + 1, nlist, None):
                _assert_exact_top(module, centroids, query, dt, nprobes)
    for shape in inputs.SPEED_SHAPES:
        for dt in inputs.DISTANCE_TYPES:
            prefix = f"speed/{shape.label}/{dt}/"
            centroids = all_fixtures()[prefix + "centroids"]
            for q in inputs.speed_queries(shape, dt, all_fixtures()[prefix + "centres"], 4, 2):
                _assert_exact_top(module, centroids, q, dt, shape.nprobes)


@pytest.mark.slow
def test_paired_trial_of_the_keep_is_faster_and_correct(tmp_path: Path) -> None:
    baseline = FOLDER / "kernels.py"
    keep = playbook_kernel(FOLDER, tmp_path, KEEP)
    out = tmp_path / "result.json"
    proc, result = target_trial("ivf_partition", "--kernel", str(keep), "--against", str(baseline), "--result-json", str(out), *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["correctness"] == "pass" and result["verified_calls"] > 0
    assert result["speedup_ci_90pct"][0] > 1.0, result["per_combo_speedup"]


@pytest.mark.slow
def test_paired_trial_rejects_the_unverified_expansion(tmp_path: Path) -> None:
    baseline = FOLDER / "kernels.py"
    wrong = playbook_kernel(FOLDER, tmp_path, KEEP, "02-gemv-expansion.md")
    out = tmp_path / "result.json"
    proc, result = target_trial("ivf_partition", "--kernel", str(wrong), "--against", str(baseline), "--result-json", str(out), *FAST)
    assert proc.returncode == 2 and result["correctness"] == "fail"
    assert "large_dynamic_range/l2" in result["failure"]
