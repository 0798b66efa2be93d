"""Tests for the topk-merge target: the oracle (against a pure-Python sort, the arrow-row encoding and
DataFusion itself), the op's pool and poison, the battery's edge cases, the inputs, the check
against every tempting wrong kernel (and legal variants passing), the compiled baseline, and the
playbook (its keep exact and faster in a paired trial, the loop keeping it)."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FAST, ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, target_trial, write_config
from targets.harness.plan import Case
from targets.harness.prng import CORRECTNESS_SEED, Stream
from targets.topk_merge import inputs, kernels, reference, run_experiment, target
from targets.topk_merge.inputs import MergeShape

F32 = np.float32
FOLDER = ROOT / "targets" / "topk_merge"
PLAYBOOK = FOLDER / "playbook"
KEEP = "01-fused-pass-replace-top.md"
WRONG = "02-raw-bits-order.md"
SLOWER = "04-one-composite-compare.md"
EDGE_CASES = ("nan", "signed_zeros", "infinities", "k_above_rows", "empty_runs", "one_run", "one_element",
              "all_equal", "k1", "no_rows", "ties_at_cut", "wide_row_ids", "short_runs", "run_orders")


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def case_named(prefix: str) -> Case:
    return next(c for c in battery() if c.name.startswith(prefix))


# --- the oracle ------------------------------------------------------------------------------------

def py_order(value: float) -> int:
    """IEEE totalOrder as a Python int: the f32's bits read as sign-magnitude."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return -(bits & 0x7FFFFFFF) - 1 if bits >> 31 else bits


def arrow_row_key(bits: int) -> int:
    """arrow-row's f32 encoding (fixed.rs: s ^ ((s >> 31) as u32 >> 1), sign bit flipped) as an int."""
    s = bits - (1 << 32) if bits >> 31 else bits
    flipped = s ^ ((s >> 31) & 0xFFFFFFFF) >> 1
    return (flipped & 0xFFFFFFFF) ^ 0x80000000


SPECIAL_BITS = [0xFFFFFFFF, 0xFFC00000, 0xFF800000, 0xBF800000, 0x80000001, 0x80000000, 0x00000000,
                0x00000001, 0x3F800000, 0x7F800000, 0x7FC00000, 0x7FFFFFFF]     # totalOrder, ascending


def test_total_order_key_is_total_order_and_arrow_rows() -> None:
    bits = np.array(SPECIAL_BITS, dtype=np.uint32)
    keys = reference.total_order_key(bits.view(F32))
    assert np.all(np.diff(keys.astype(np.int64)) > 0)                  # strictly ascending
    assert [int(k) for k in keys] == [arrow_row_key(int(b)) for b in bits]
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 1 << 32, 20_000, dtype=np.uint64).astype(np.uint32)
    keys = reference.total_order_key(sample.view(F32)).astype(np.int64)
    orders = np.array([py_order(float(v)) if not np.isnan(v) else 0 for v in sample.view(F32)])
    finite = ~np.isnan(sample.view(F32))
    by_key, by_order = np.argsort(keys[finite], kind="stable"), np.argsort(orders[finite], kind="stable")
    np.testing.assert_array_equal(keys[finite][by_key], keys[finite][by_order])
    assert [arrow_row_key(int(b)) for b in sample[:500]] == [int(k) for k in keys[:500]]


def python_topk(dists: np.ndarray, row_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one Python comparison at a time: sort rows by (totalOrder, row id), take k."""
    rows = sorted(zip(dists.view(np.uint32).tolist(), row_ids.tolist()),
                  key=lambda row: (arrow_row_key(row[0]), row[1]))[:k]
    return (np.array([r[0] for r in rows], dtype=np.uint32).view(F32), np.array([r[1] for r in rows], dtype=np.uint64))


@pytest.mark.parametrize("seed", range(6))
def test_reference_topk_matches_a_python_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    bits = rng.choice(np.array(SPECIAL_BITS + [0x3F000000, 0xBF000000], dtype=np.uint32), n)
    dists = np.where(rng.random(n) < 0.5, bits.view(F32), rng.integers(-3, 4, n).astype(F32))
    row_ids = rng.permutation(n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15 % (1 << 50))
    for k in (1, 7, n, n + 5):
        got, want = reference.topk(dists, row_ids, k), python_topk(dists, row_ids, k)
        np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
        np.testing.assert_array_equal(got[1], want[1])


def test_batched_merge_equals_per_query_topk_on_the_battery() -> None:
    for case in battery():
        k = int(case.params["k"])
        for call in case.calls:
            d, r = reference.patched(case.arrays["dists"], case.arrays["row_ids"], call)
            batched = reference.merge(d, r, case.arrays["lengths"], call["runs"], k)
            for q, runs in enumerate(call["runs"]):
                one = reference.topk(*reference.query_rows(d, r, case.arrays["lengths"], runs), k)
                np.testing.assert_array_equal(batched[q][0].view(np.uint32), one[0].view(np.uint32), err_msg=case.name)
                np.testing.assert_array_equal(batched[q][1], one[1], err_msg=case.name)


def test_oracle_equals_datafusion_order_by_limit_on_the_battery() -> None:
    # DataFusion is the engine Lance's scanner runs this merge in (SortExec with a fetch): its
    # answer, NaN, ±0.0 and row-id ties included, is the oracle's on every battery query.
    datafusion = pytest.importorskip("datafusion")
    pa = pytest.importorskip("pyarrow")
    ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(1))
    for case in battery():
        k, lengths = int(case.params["k"]), case.arrays["lengths"]
        for call in case.calls:
            d, r = reference.patched(case.arrays["dists"], case.arrays["row_ids"], call)
            expected = run_experiment.expected_for(case.arrays, call, k)
            for q, runs in enumerate(call["runs"]):
                batches = [pa.record_batch([pa.array(d[b, :lengths[b]]), pa.array(r[b, :lengths[b]])], names=["d", "r"])
                           for b in runs]
                ctx.register_record_batches("t", [batches])
                out = ctx.sql(f"SELECT d, r FROM t ORDER BY d, r LIMIT {k}").collect()
                ctx.deregister_table("t")
                got_d = pa.Table.from_batches(out).column("d").to_numpy() if out else np.empty(0, F32)
                got_r = pa.Table.from_batches(out).column("r").to_numpy() if out else np.empty(0, np.uint64)
                np.testing.assert_array_equal(got_d.view(np.uint32), expected[q][0].view(np.uint32), err_msg=case.name)
                np.testing.assert_array_equal(got_r, expected[q][1], err_msg=case.name)


# --- the op: pool, patches, poison ----------------------------------------------------------------

class Recorder:
    """A kernel that records what it was given (and optionally fails)."""

    def __init__(self, k: int) -> None:
        self.k, self.seen, self.fail = k, [], False

    def merge(self, dists, row_ids, lengths, runs, out_dists, out_row_ids, out_counts) -> None:
        self.seen.append((dists.copy(), row_ids.copy(), dists, row_ids))
        if self.fail:
            raise RuntimeError("kernel failed")


def test_pool_is_read_only_and_patches_are_undone() -> None:
    case = case_named("uniform/16x8/k5")
    inst = target.build(SimpleNamespace(TopkMergeKernel=Recorder), case.params, case.arrays)
    call = case.calls[0]
    out = target.OPS["check"](inst, call)
    seen_d, seen_r, view_d, view_r = inst.kernel.seen[0]
    # The kernel saw the patched pool ...
    want_d, want_r = reference.patched(case.arrays["dists"], case.arrays["row_ids"], call)
    np.testing.assert_array_equal(seen_d.view(np.uint32), want_d.view(np.uint32))
    np.testing.assert_array_equal(seen_r, want_r)
    # ... cannot write it, nor make it writable ...
    for view in (view_d, view_r, inst.lengths):
        with pytest.raises(ValueError):
            view.reshape(-1)[0] = 0
        with pytest.raises(ValueError):
            view.flags.writeable = True
    # ... and after the call the pool is the fixture again, also when the kernel raises.
    np.testing.assert_array_equal(inst.dists.view(np.uint32), case.arrays["dists"].view(np.uint32))
    inst.kernel.fail = True
    with pytest.raises(RuntimeError):
        target.OPS["check"](inst, case.calls[1])
    np.testing.assert_array_equal(inst.row_ids, case.arrays["row_ids"])
    # Unwritten outputs are poison, and the check says so.
    assert np.all(out["dists"].view(np.uint32) == target.POISON_DIST_BITS) and np.all(out["counts"] == -1)
    assert "the poison: never written" in run_experiment.check(case, 0, out)


# --- the battery and the inputs ---------------------------------------------------------------------

def test_battery_holds_every_edge_case() -> None:
    names = [c.name for c in battery()]
    for edge in EDGE_CASES:
        assert any(n.startswith(edge + "/") for n in names), edge

    def answers(prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
        case = case_named(prefix)
        return [a for call in case.calls for a in run_experiment.expected_for(case.arrays, call, int(case.params["k"]))]

    pool = case_named("nan/").arrays["dists"]
    assert np.isnan(pool[np.signbit(pool)]).any() and np.isnan(pool[~np.signbit(pool)]).any()   # NaN of both signs
    assert any(np.isnan(d[np.signbit(d)]).any() for d, _ in answers("nan/"))           # -NaN sorts first
    assert any(np.isnan(d[~np.signbit(d)]).any() for d, _ in answers("k_above_rows/"))  # +NaN last, still in
    zeros = {int(b) for d, _ in answers("signed_zeros/") for b in d.view(np.uint32) if b in (0, 0x80000000)}
    assert zeros == {0, 0x80000000}                                                          # -0.0 and +0.0
    assert any(np.isinf(d).any() for d, _ in answers("infinities/"))
    assert all(d.size < 50 for d, _ in answers("k_above_rows/"))                             # fewer rows than k
    assert case_named("k1/").params["k"] == 1
    assert all(c.calls[0]["runs"].shape[1] == 1 for c in battery() if c.name.startswith(("one_run", "one_element")))
    one = case_named("one_element/")
    assert one.arrays["dists"].shape == (3, 1) and [d.size for d, _ in answers("one_element/")].count(1) >= 1
    assert all(d.size == 0 for d, _ in answers("no_rows/"))
    empty = case_named("empty_runs/")
    assert np.mean(empty.arrays["lengths"] == 0) > 0.5 and any(d.size == 0 for d, _ in answers("empty_runs/"))
    equal = case_named("all_equal/16x8")
    assert np.unique(equal.arrays["dists"][:, 0]).size == 1
    wide = case_named("wide_row_ids/").arrays["row_ids"]
    assert wide.max() > np.uint64(1 << 63) and wide.min() < np.uint64(1 << 62)
    short = case_named("short_runs/16x8")
    assert np.any((short.arrays["lengths"] > 0) & (short.arrays["lengths"] < 8))


def test_inputs_are_deterministic_and_the_fixtures_match() -> None:
    shape = MergeShape(6, 9, 4, 3)
    a, b, c = (inputs.make_pool(shape, "nan", s) for s in (5, 5, 6))
    for name in a:
        np.testing.assert_array_equal(a[name].view(np.uint8), b[name].view(np.uint8))
    assert not np.array_equal(a["row_ids"], c["row_ids"])
    calls_a, calls_b = inputs.make_calls(a, shape, 9, 3), inputs.make_calls(a, shape, 9, 3)
    for x, y in zip(calls_a, calls_b):
        for name in x:
            np.testing.assert_array_equal(x[name].view(np.uint8), y[name].view(np.uint8))
    assert not np.array_equal(inputs.make_calls(a, shape, 10, 1)[0]["runs"], calls_a[0]["runs"])
    fx = inputs.fixtures()
    name, shape, kind = inputs.battery_specs()[4]
    direct = inputs.make_pool(shape, kind, CORRECTNESS_SEED)
    for key, arr in direct.items():
        np.testing.assert_array_equal(fx[f"battery/{name}/{key}"].view(np.uint8), arr.view(np.uint8))


@pytest.mark.parametrize("shape", inputs.SPEED_SHAPES, ids=lambda s: s.label)
def test_speed_calls_keep_the_contract(shape: MergeShape) -> None:
    fx = inputs.fixtures()
    for dist in inputs.SPEED_DISTRIBUTIONS:
        pool = inputs.pool_of(fx, f"speed/{shape.label}/{dist}/")
        assert pool["dists"].shape == (shape.runs * shape.queries, shape.width)
        assert np.all(pool["lengths"] == shape.width) and pool["row_ids"].min() >= np.uint64(1 << 32)
        keys = reference.total_order_key(pool["dists"]).astype(np.int64)
        for i in range(1, shape.width):                   # every block is a max-heap (FlatIndex's order)
            assert np.all(keys[:, (i - 1) // 2] >= keys[:, i])
        call = inputs.make_calls(pool, shape, 3, 1)[0]
        runs = call["runs"]
        assert runs.dtype == np.uint16 and runs.shape == (shape.queries, shape.runs)
        assert np.unique(runs).size == runs.size                        # no block twice in a call
        assert np.all(runs // shape.queries == np.arange(shape.runs))  # run j from band j
        expected = run_experiment.expected_for(pool, call, shape.k)
        patched = set(call["patch_row_ids"].tolist())
        assert len(patched) == shape.queries and all(int(r[0]) in patched for _, r in expected)
        # Patches sit at leaves of their block, inside its length.
        pos = call["patch_pos"] % shape.width
        assert np.all(pos >= shape.width // 2)


# --- the check: wrong kernels fail, legal ones pass -------------------------------------------------

def numpy_kernel(order_key: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]] | None = None,
                 whole_blocks: bool = False, drop_ties: bool = False, cache: bool = False) -> SimpleNamespace:
    """A plain numpy kernel: every query's rows sorted by ``order_key`` (lexsort keys, last primary),
    optionally with a tempting bug."""
    def default_key(d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
        return r, reference.total_order_key(d)

    key_of = order_key or default_key

    class Kernel:
        def __init__(self, k: int) -> None:
            self.k, self.memo = k, {}

        def merge(self, dists, row_ids, lengths, runs, out_dists, out_row_ids, out_counts) -> None:
            for q, blocks in enumerate(runs):
                parts = []
                for b in blocks:
                    n = dists.shape[1] if whole_blocks else lengths[b]
                    if cache and int(b) in self.memo:
                        parts.append(self.memo[int(b)])
                        continue
                    parts.append((dists[b, :n].copy(), row_ids[b, :n].copy()))
                    if cache:
                        self.memo[int(b)] = parts[-1]
                d = np.concatenate([p[0] for p in parts])
                r = np.concatenate([p[1] for p in parts])
                order = np.lexsort(key_of(d, r))
                if drop_ties and d.size > self.k:
                    keys = reference.total_order_key(d)
                    first = np.argpartition(keys, self.k - 1)[:self.k]        # ties at the cut lost here
                    order = first[np.lexsort((r[first], keys[first]))]
                n = min(self.k, d.size)
                out_dists[q, :n], out_row_ids[q, :n], out_counts[q] = d[order[:n]], r[order[:n]], n

    return SimpleNamespace(TopkMergeKernel=Kernel)


def battery_failures(module: SimpleNamespace) -> list[str]:
    failed = []
    for case in battery():
        inst = target.build(module, case.params, case.arrays)
        for i, call in enumerate(case.calls):
            if run_experiment.check(case, i, target.OPS["check"](inst, call)) is not None:
                failed.append(case.name)
                break
    return failed


WRONG_KERNELS = {
    "float compare (-0.0 == +0.0, NaN unordered)": (numpy_kernel(lambda d, r: (r, d)), ("signed_zeros", "nan")),
    "raw bits as the key": (numpy_kernel(lambda d, r: (r, d.view(np.uint32))), ("uniform",)),
    "row id truncated to 32 bits": (numpy_kernel(lambda d, r: (r & np.uint64(0xFFFFFFFF), reference.total_order_key(d))),
                                    ("wide_row_ids", "all_equal")),
    "row id compared signed": (numpy_kernel(lambda d, r: (r.view(np.int64), reference.total_order_key(d))),
                               ("wide_row_ids",)),
    "ties at the k-th dropped": (numpy_kernel(drop_ties=True), ("all_equal", "ties_at_cut")),
    "reads past a run's length": (numpy_kernel(whole_blocks=True), ("short_runs", "empty_runs")),
    "caches runs across calls": (numpy_kernel(cache=True), ("uniform",)),
}


@pytest.mark.parametrize("name", WRONG_KERNELS)
def test_tempting_wrong_kernels_fail_the_battery(name: str) -> None:
    module, must_fail = WRONG_KERNELS[name]
    failed = battery_failures(module)
    for kind in must_fail:
        assert any(f.startswith(kind + "/") for f in failed), (name, kind, failed)


def test_legal_numpy_kernel_passes_the_battery() -> None:
    assert battery_failures(numpy_kernel()) == []


@pytest.mark.parametrize("change, message", [
    (lambda o: {**o, "counts": o["counts"] + 1}, "count"),
    (lambda o: {**o, "row_ids": o["row_ids"].astype(np.int64)}, "dtype int64"),
    (lambda o: {**o, "dists": o["dists"][:, :-1].copy()}, "shape"),
    (lambda o: {**o, "row_ids": np.where(np.arange(o["row_ids"].shape[1]) == 0, o["row_ids"][:, ::-1], o["row_ids"])},
     "position 0"),
    (lambda o: {k: v for k, v in o.items() if k != "counts"}, "counts: expected a numpy.ndarray"),
])
def test_check_rejects_malformed_outputs(change, message) -> None:
    case = case_named("uniform/16x8/k5")
    inst = target.build(numpy_kernel(), case.params, case.arrays)
    out = target.OPS["check"](inst, case.calls[0])
    assert run_experiment.check(case, 0, out) is None
    problem = run_experiment.check(case, 0, change(out))
    assert problem is not None and message in problem, problem


def test_check_rejects_a_write_past_the_count_and_a_quieted_nan() -> None:
    case = case_named("k_above_rows/")
    inst = target.build(numpy_kernel(), case.params, case.arrays)
    out = target.OPS["check"](inst, case.calls[0])
    n = int(out["counts"][0])
    past = {**out, "row_ids": out["row_ids"].copy()}
    past["row_ids"][0, n] = 7
    assert "written past the count" in run_experiment.check(case, 0, past)
    nan = case_named("nan/16x8")
    inst = target.build(numpy_kernel(), nan.params, nan.arrays)
    for i, call in enumerate(nan.calls):
        out = target.OPS["check"](inst, call)
        bits = out["dists"].view(np.uint32)
        loud = (bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
        payload = loud & ((bits & np.uint32(0x7FFFFF)) != np.uint32(0x400000)) & ((bits & np.uint32(0x7FFFFF)) != 0)
        if payload.any():                              # a NaN with a payload: canonicalise it
            bits[payload] = np.uint32(0x7FC00000) | (bits[payload] & np.uint32(0x80000000))
            assert "position" in run_experiment.check(nan, i, out)
            return
    raise AssertionError("no NaN with a payload in the nan case's answers")


# --- the compiled baseline --------------------------------------------------------------------------

def test_baseline_kernel_passes_the_battery() -> None:
    assert battery_failures(SimpleNamespace(TopkMergeKernel=kernels.TopkMergeKernel)) == []


def test_baseline_row_key_is_arrow_rows() -> None:
    bits = np.array(SPECIAL_BITS, dtype=np.uint32)
    assert [int(kernels._row_key(b)) for b in bits] == [arrow_row_key(int(b)) for b in bits]


@pytest.mark.parametrize("shape", inputs.SPEED_SHAPES, ids=lambda s: s.label)
def test_baseline_exact_on_the_speed_data(shape: MergeShape) -> None:
    fx = inputs.fixtures()
    for dist in inputs.SPEED_DISTRIBUTIONS:
        w = run_experiment.workload(fx, shape, dist, shape.runs, shape.k)
        inst = target.build(kernels, w.params, w.arrays)
        call = w.queries(4, 1)[0]
        assert w.verify(call)(target.OPS["speed"](inst, call)) is None


# --- the playbook -----------------------------------------------------------------------------------

def test_playbook_replays_in_sequence() -> None:
    # Each reply applies to the incumbent of its turn: only the keep (01) becomes it; the wrong kernel
    # (02) and the slower one (04) edit the keep; 03 has no code. Every kernel passes the static
    # policy and keeps the API.
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


@pytest.mark.slow
@pytest.mark.parametrize("entries", [(KEEP,), (KEEP, SLOWER), (KEEP, WRONG)], ids=["keep", "slower", "wrong"])
def test_playbook_kernels_on_the_battery_and_speed_data(tmp_path: Path, entries: tuple[str, ...]) -> None:
    module = load_unique(playbook_kernel(FOLDER, tmp_path, *entries))
    failed = battery_failures(SimpleNamespace(TopkMergeKernel=module.TopkMergeKernel))
    if WRONG in entries:                       # raw bits: negative distances order backwards
        assert "uniform/16x8/k5" in failed and "signed_zeros/16x8/k5" in failed
        return
    assert failed == []
    fx = inputs.fixtures()
    for shape in inputs.SPEED_SHAPES:
        for dist in inputs.SPEED_DISTRIBUTIONS:
            w = run_experiment.workload(fx, shape, dist, shape.runs, shape.k)
            inst = target.build(module, w.params, w.arrays)
            for call in w.queries(int(Stream(7).integers(1000, 1)[0]), 2):
                assert w.verify(call)(target.OPS["speed"](inst, call)) is None, w.combo



@pytest.mark.slow
def test_paired_trial_rejects_the_raw_bits_kernel(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc, result = target_trial("topk_merge", "--kernel", str(playbook_kernel(FOLDER, tmp_path, KEEP, WRONG)),
                                "--against", str(FOLDER / "kernels.py"), "--result-json", str(out), *FAST)
    assert proc.returncode == 2 and result["correctness"] == "fail" and result["failure_kind"] == "incorrect"


@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    # One attempt: the keep (1.15-1.20x overall), judged by one worker pair over 8 blocks of 5
    # queries per combo (no re-measure against the baseline). Its thinnest combos sit at
    # 1.03-1.10x (64x100, 1024x10/heavy_ties), so one load spike on a shared CI machine sank
    # 64x100/iid_uniform to 0.92x under the 0.95x worst-combo guard while the whole was 1.17x
    # [1.15, 1.18]. This test is about the loop keeping a faster kernel; the guard has its own
    # tests (test_gate), so here it allows 0.85x. Smaller trials sink combos further: 4 blocks of
    # 3 queries saw 0.41x. A trial not kept on a busy machine is measured again once the core is
    # quiet: wait for that at most 30 s (the default 300 s made one run of this test take 309 s).
    config = write_config(repo, cumulative=False, trial_sessions=8, trial_queries=5, quiet_wait_seconds=30,
                          gate={"worst_combo_min": 0.85})
    got = offline_run(repo, "topk-merge", config)
    record = {k: got[1].get(k) for k in ("reason", "reasons", "speedup", "speedup_ci", "worst_combo")}
    # A modest win (1.07-1.20x overall in CI; one combo fell to 0.76x once): the gate may miss it on
    # a busy machine, as pq-cosine's; the loop must measure it correct and faster either way.
    assert got[1]["sources"] == [KEEP] and got[1]["reason"] in ("keep", "worst_combo", "tradeoff", "not_faster"), record
    assert got[1]["speedup"] > 1.0, record
