"""Tests for the dictionary target: the oracle (against Python byte strings, and a round trip
through the encoder, Lance's `dictionary_encode`), the digest check of timed calls, the compiled
baseline (Lance's per-row append loop) on the battery, the battery's edge cases by name, the
inputs' sizes and determinism, the checks (unwritten, short, past-the-end and wrong outputs fail,
never crash), and the playbook (its keep exact, its wrong kernel
caught writing past the output, the offline loop keeps its first entry, faster than the baseline)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.dictionary import inputs, kernels, reference, run_experiment, target
from targets.harness.plan import Case
from targets.harness.prng import CORRECTNESS_SEED

FOLDER = ROOT / "targets" / "dictionary"
KEEP = "01-wide-chunk-copies.md"


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def case_named(name: str) -> Case:
    return next(c for c in battery() if c.name == name)


def run_case(module: object, case: Case) -> list[str | None]:
    inst = target.build(module, case.params, case.arrays)                          # type: ignore[arg-type]
    return [run_experiment.check(case, i, target.OPS["check"](inst, call)) for i, call in enumerate(case.calls)]


def failures(module: object, cases: tuple[Case, ...] | None = None) -> dict[str, str]:
    out = {}
    for case in cases or battery():
        problems = [p for p in run_case(module, case) if p]
        if problems:
            out[case.name] = problems[0]
    return out


def values(case: Case) -> list[bytes]:
    return inputs.values_of(case.arrays["dict_offsets"], case.arrays["dict_bytes"])


# --- the oracle and the encoder -------------------------------------------------------------------------

def test_oracle_matches_python_byte_strings_on_every_varwidth_case() -> None:
    checked = 0
    for case in battery():
        if case.params["kind"] != "varwidth":
            continue
        vals = values(case)
        for call in case.calls:
            page = reference.window_indices(case.arrays["pool"], call)
            offsets, data = reference.decode_varwidth(page, case.arrays["dict_offsets"], case.arrays["dict_bytes"])
            rows = [vals[i] for i in page.tolist()]
            assert offsets.dtype == np.uint32 and data.dtype == np.uint8
            assert data.tobytes() == b"".join(rows), case.name
            assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(r) for r in rows])]).tolist()
            assert int(call["out_size"][0]) == data.size
            checked += page.size
    assert checked > 200_000


def test_fixed_oracle_matches_python_rows() -> None:
    for case in battery():
        if case.params["kind"] == "fixed":
            dictionary = case.arrays["dictionary"]
            for call in case.calls:
                page = reference.window_indices(case.arrays["pool"], call)
                got = reference.decode_fixed(page, dictionary)
                assert got.shape == (page.size, 16)
                assert got.tobytes() == b"".join(dictionary[i].tobytes() for i in page.tolist())


@pytest.mark.parametrize("profile", ["text24", "multibyte", "binary", "short", "around16", "long"])
def test_round_trip_through_the_encoder(profile: str) -> None:
    vocab = inputs.vocabulary(profile, 300, 7)
    assert len(set(vocab)) == 300
    column = [vocab[i] for i in inputs.column_ids("zipf", 4000, 300, 8).tolist()] + [b""]
    pool, offsets, data = inputs.dictionary_encode(column)
    assert pool.dtype == np.int32 and offsets.dtype == np.uint32 and offsets[0] == 0
    out_off, out_bytes = reference.decode_varwidth(pool, offsets, data)
    assert inputs.values_of(out_off, out_bytes) == column


def test_encoder_is_lances_first_occurrence_order() -> None:
    pool, offsets, data = inputs.dictionary_encode([b"b", b"a", b"b", b"", b"c", b"a", b""])
    assert pool.tolist() == [0, 1, 0, 2, 3, 1, 2]
    assert inputs.values_of(offsets, data) == [b"b", b"a", b"", b"c"]
    uu = inputs.uuids(50, 3)
    ids = inputs.column_ids("uniform", 2000, 50, 4)
    pool, dictionary = inputs.dictionary_encode_fixed(uu[ids])
    order = list(dict.fromkeys(ids.tolist()))                 # vocabulary ids by first occurrence
    np.testing.assert_array_equal(dictionary, uu[order])
    np.testing.assert_array_equal(reference.decode_fixed(pool, dictionary), uu[ids])


def test_text_is_utf8_with_multibyte_characters() -> None:
    text = inputs.vocabulary("text24", 2000, 1)
    joined = b"".join(text)
    joined.decode("utf-8")
    assert any(b >= 0xF0 for b in joined) and any(0xE0 <= b < 0xF0 for b in joined) and 0xFF not in joined
    assert 18 <= np.mean([len(v) for v in text]) <= 30
    for v in inputs.vocabulary("multibyte", 500, 2):
        assert all(ord(ch) >= 0xA0 for ch in v.decode("utf-8"))


# --- the battery ----------------------------------------------------------------------------------------

def test_battery_names_every_edge_case() -> None:
    names = {c.name for c in battery()}
    assert set(inputs.BATTERY_NAMES) | {"varwidth/fresh", "fixed/fresh"} == names
    for edge in ("dict_1", "dict_1_empty", "dict_65536", "empty_strings", "multibyte_utf8", "escape_bytes", "ends",
                 "n0", "n1", "n100", "fixed_dict_1", "fixed_dict_65536", "fixed_sizes"):
        assert edge in names


def test_edge_cases_hold_what_their_names_say() -> None:
    def entries(name: str) -> int:
        c = case_named(name)
        return c.arrays["dict_offsets"].size - 1 if "dict_offsets" in c.arrays else c.arrays["dictionary"].shape[0]

    assert entries("dict_1") == entries("dict_1_empty") == entries("fixed_dict_1") == 1
    assert values(case_named("dict_1_empty")) == [b""]
    assert entries("dict_65536") == entries("fixed_dict_65536") == 1 << 16
    for name in ("dict_65536", "ends", "fixed_dict_65536"):
        pool = case_named(name).arrays["pool"]
        assert pool[0] == 0 and pool[-1] == entries(name) - 1
    empty = values(case_named("empty_strings")).index(b"")
    pool = case_named("empty_strings").arrays["pool"]
    assert pool[0] == pool[-1] == empty and (pool == empty).sum() > 1000
    assert all(len(v.decode("utf-8")) < len(v) for v in values(case_named("multibyte_utf8")))
    raw = b"".join(values(case_named("escape_bytes")))
    assert b"\x00" in raw and b"\xff" in raw and b"\\" in raw
    for name, n in (("n0", 0), ("n1", 1), ("n100", 100)):
        assert {int(c["window"][1]) for c in case_named(name).calls} == {n}
    assert {int(c["window"][1]) for c in case_named("fixed_sizes").calls} >= {0, 1, 100, 1023, 1025}
    lengths = [len(v) for v in values(case_named("long_values"))]
    assert min(lengths) >= 100 and max(lengths) > 4000
    assert max(len(v) for v in values(case_named("short_values"))) <= 2
    around = case_named("lengths_around_16")
    vals = values(around)
    tail = [len(vals[i]) for i in around.arrays["pool"][-2:]]
    assert tail == [65, 1]                                       # a short last row right after a long one
    assert any(c["patch_pos"].size for c in case_named("patched").calls)


def test_fixtures_match_direct_generation() -> None:
    fx = inputs.fixtures()
    for name in ("ends", "patched", "fixed_bytes"):
        cached, direct = inputs.cached_battery_case(fx, name), inputs.battery_case(name, CORRECTNESS_SEED)
        assert cached.kind == direct.kind and cached.arrays.keys() == direct.arrays.keys()
        for key in direct.arrays:
            np.testing.assert_array_equal(cached.arrays[key], direct.arrays[key])
        for a, b in zip(cached.calls, direct.calls, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_fresh_cases_are_deterministic() -> None:
    a, b, c = (inputs.fresh_case("varwidth", s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.arrays["pool"], b.arrays["pool"])
    assert a.arrays["dict_bytes"].tobytes() != c.arrays["dict_bytes"].tobytes()


# --- speed workloads ------------------------------------------------------------------------------------

def test_speed_workloads_and_their_calls() -> None:
    ws = run_experiment.workloads()
    assert {w.combo for w in ws} == {"str-D1k/uniform", "str-D1k/zipf", "str-D1k/runs", "str-D64k/uniform",
                                     "str-D64k/zipf", "str-D64k/runs", "uuid-D64k/uniform", "uuid-D64k/runs"}
    for w in ws:
        pool = w.arrays["pool"]
        assert pool.size == inputs.POOL_ROWS and pool.dtype == np.int32
        calls = w.queries(5, 2)
        assert calls[0]["window"][0] != calls[1]["window"][0]
        again = w.queries(5, 2)
        for key in calls[0]:
            np.testing.assert_array_equal(calls[0][key], again[0][key])
        c = calls[0]
        page = reference.window_indices(pool, c)
        assert page.size == inputs.PAGE_ROWS and c["patch_pos"].size > inputs.PAGE_ROWS // inputs.PATCH_EVERY // 2
        if "dict_offsets" in w.arrays:
            assert int(c["out_size"][0]) == reference.output_size(page, w.arrays["dict_offsets"])
        assert c["key"].dtype == np.uint64 and c["key"].shape == (2,)
        assert not np.array_equal(c["key"], calls[1]["key"])          # fresh per call
    entries = {w.combo: w.arrays["dict_offsets"].size - 1 for w in ws if "dict_offsets" in w.arrays}
    assert entries["str-D64k/uniform"] > 65_000 and entries["str-D1k/uniform"] == 1000     # 65,536 drawn from


def test_timed_call_check_catches_a_wrong_byte_and_a_guard_write() -> None:
    for combo in ("str-D1k/zipf", next(w.combo for w in run_experiment.workloads() if "dict_offsets" not in w.arrays)):
        w = next(w for w in run_experiment.workloads() if w.combo == combo)
        call = w.queries(9, 1)[0]
        inst = target.build(kernels, w.params, w.arrays)
        assert w.verify(call)(target.OPS["speed"](inst, call)) is None
        buffers = target._run(inst, call, target.POISON_BYTE)
        declared = buffers[-1].size - target.GUARD_BYTES         # bytes (varwidth) or values (fixed), in bytes
        for pos in (declared - 1, declared + 3):                  # the last declared byte, then one in the guard
            bad = [b.copy() for b in buffers]
            bad[-1].reshape(-1)[pos] ^= 1
            problem = w.verify(call)({"digest": target.digest(tuple(bad), call["key"])})
            assert "differ from the oracle's" in (problem or ""), (combo, pos)


# --- the baseline and the checks -------------------------------------------------------------------------

def test_baseline_kernel_passes_the_battery() -> None:
    assert failures(kernels) == {}


class Python:
    """A legal variant: the oracle through the API."""

    class VarWidthDictDecoder:
        def __init__(self, dict_offsets: np.ndarray, dict_bytes: np.ndarray) -> None:
            self.dict_offsets, self.dict_bytes = dict_offsets, dict_bytes

        def decode(self, indices: np.ndarray, out_offsets: np.ndarray, out_bytes: np.ndarray) -> None:
            offsets, data = reference.decode_varwidth(indices, self.dict_offsets, self.dict_bytes)
            self.write(offsets, data, out_offsets, out_bytes)

        def write(self, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray, out_bytes: np.ndarray) -> None:
            out_offsets[:] = offsets
            out_bytes[:] = data

    class FixedWidthDictDecoder:
        def __init__(self, dictionary: np.ndarray) -> None:
            self.dictionary = dictionary

        def decode(self, indices: np.ndarray, out: np.ndarray) -> None:
            out[:] = reference.decode_fixed(indices, self.dictionary)


def with_write(write) -> SimpleNamespace:          # type: ignore[no-untyped-def]
    cls = type("Wrong", (Python.VarWidthDictDecoder,), {"write": write})
    return SimpleNamespace(VarWidthDictDecoder=cls, FixedWidthDictDecoder=Python.FixedWidthDictDecoder)


def _past_end(self: object, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray, out_bytes: np.ndarray) -> None:
    out_offsets[:] = offsets
    out_bytes[:] = data
    if out_bytes.size:                                        # a 16-byte store at the last row, as a wide copy would
        base = out_bytes.base if out_bytes.base is not None else out_bytes
        base[out_bytes.size:out_bytes.size + 3] = data[-1]


def _short(self: object, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray, out_bytes: np.ndarray) -> None:
    out_offsets[:] = offsets
    out_bytes[:-1] = data[:-1]


def _no_first_offset(self: object, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray,
                     out_bytes: np.ndarray) -> None:
    out_offsets[1:] = offsets[1:]
    out_bytes[:] = data


def _starts_not_ends(self: object, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray,
                     out_bytes: np.ndarray) -> None:
    out_offsets[:-1] = offsets[:-1]
    out_offsets[-1] = offsets[-2] if offsets.size > 1 else 0
    out_bytes[:] = data


def _zero_bytes_as_is(self: object, offsets: np.ndarray, data: np.ndarray, out_offsets: np.ndarray,
                      out_bytes: np.ndarray) -> None:
    out_offsets[:] = offsets
    keep = data != 0                                         # "the buffer is zeroed already": skip NUL bytes
    out_bytes[keep] = data[keep]


WRONG = {"writes past the end": _past_end, "one byte short": _short, "no first offset": _no_first_offset,
         "last offset wrong": _starts_not_ends, "skips NUL bytes": _zero_bytes_as_is}


@pytest.mark.parametrize("flaw", sorted(WRONG))
def test_wrong_kernels_fail_the_battery(flaw: str) -> None:
    assert failures(with_write(WRONG[flaw])), flaw


def test_writing_past_the_end_is_named_as_such() -> None:
    problem = failures(with_write(_past_end), (case_named("dict_1"),))["dict_1"]
    assert "wrote past the declared output" in problem
    assert "never written" in failures(with_write(_no_first_offset), (case_named("n1"),))["n1"]
    skipped = failures(with_write(_zero_bytes_as_is), (case_named("escape_bytes"), case_named("dict_65536")))
    assert set(skipped) == {"escape_bytes"} and "(run over fill 0xff)" in skipped["escape_bytes"]


def test_legal_variant_passes_the_battery() -> None:
    assert failures(Python) == {}


def test_build_refuses_a_bad_dictionary() -> None:
    case = case_named("ends")
    arrays = dict(case.arrays)
    with pytest.raises(ValueError):
        target.build(kernels, {"kind": "varwidth"}, {**arrays, "dict_offsets": arrays["dict_offsets"].astype(np.int64)})
    with pytest.raises(ValueError):
        target.build(kernels, {"kind": "varwidth"}, {**arrays, "dict_offsets": arrays["dict_offsets"][:-1]})
    with pytest.raises(ValueError):
        target.build(kernels, {"kind": "varwidth"}, {**arrays, "pool": arrays["pool"] + 1})
    with pytest.raises(ValueError):
        target.build(kernels, {"kind": "other"}, arrays)


# --- the offline playbook -----------------------------------------------------------------------------

def test_playbook_replays_in_sequence() -> None:
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


def _playbook_path(tmp_path: Path, entry: str) -> Path:
    return playbook_kernel(FOLDER, tmp_path, *dict.fromkeys((KEEP, entry)), api=target.KERNEL_API)


def _playbook_module(tmp_path: Path, entry: str) -> ModuleType:
    return load_unique(_playbook_path(tmp_path, entry))


def test_playbook_keep_is_exact_and_its_overrun_is_caught(tmp_path: Path) -> None:
    assert failures(_playbook_module(tmp_path, KEEP)) == {}
    assert failures(_playbook_module(tmp_path, "04-slice-assignment-copy.md")) == {}      # exact, only slower
    failed = failures(_playbook_module(tmp_path, "02-wide-copies-everywhere.md"))
    assert "lengths_around_16" in failed and all("wrote past the declared output" in p for p in failed.values())



@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    got = offline_run(repo, "dictionary", write_config(repo, cumulative=False))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.05
