"""Tests for the bitpack target: the oracle (the encoder's round trip against the original values,
the encoder against a literal port of FastLanes' pack! loop), the compiled baseline (Lance's
unpack! loop, every width of every T), the battery's edge cases by name, the check (unwritten
values, writes past the output, a wrong value, the digest of timed calls), and the playbook (its
wrong kernel rejected; the offline loop keeps its first entry, correct and faster than the baseline)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from numba import njit

from conftest import battery_failures, ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.bitpack import inputs, kernels, reference, run_experiment, target
from targets.bitpack.reference import CHUNK, DTYPES
from targets.harness.plan import Case

FOLDER = ROOT / "targets" / "bitpack"
KEEP = "01-rows-outside-lanes-inside.md"


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def case_named(name: str) -> Case:
    return next(c for c in battery() if c.name == name)


def failures(module: object, cases: tuple[Case, ...] | None = None) -> dict[str, str]:
    return battery_failures(target, run_experiment.check, cases or battery(), module, "BitpackDecoder")


# --- the oracle and the encoder --------------------------------------------------------------------

def lance_pack(values: np.ndarray, width: int, t: int) -> np.ndarray:
    """FastLanes' pack! macro (lib.rs) as written: lanes outside, rows inside, a running word."""
    lanes = CHUNK // t
    out = np.zeros(width * lanes, dtype=np.uint64)
    if width == 0:
        return out.astype(DTYPES[t])
    mask = (1 << width) - 1
    for lane in range(lanes):
        tmp = 0
        for row in range(t):
            src = int(values[int(reference.FL_ORDER[row // 8]) * 16 + (row % 8) * 128 + lane]) & mask
            tmp = src if row == 0 else tmp | ((src << ((row * width) % t)) & ((1 << t) - 1))
            curr_word, next_word = (row * width) // t, ((row + 1) * width) // t
            if next_word > curr_word:
                out[lanes * curr_word + lane] = tmp
                tmp = src >> (width - ((row + 1) * width) % t)
    return out.astype(DTYPES[t])


@pytest.mark.parametrize("t", inputs.BITS)
def test_encoder_round_trips_every_width(t: int) -> None:
    for width in range(t + 1):
        values = inputs.make_values("full_width", t, width, CHUNK, 100 + width)
        packed = inputs.pack_chunk(values, width, t)
        assert packed.dtype == DTYPES[t] and packed.size == width * CHUNK // t
        np.testing.assert_array_equal(reference.unpack_chunk(packed, width, t), values, err_msg=f"W={width}")


@pytest.mark.parametrize("t", inputs.BITS)
def test_encoder_matches_the_pack_macro(t: int) -> None:
    for width in sorted({1, 3, t // 2 + 1, t - 1, t}):
        values = inputs.make_values("full_width", t, width, CHUNK, 7 * width)
        np.testing.assert_array_equal(inputs.pack_chunk(values, width, t), lance_pack(values, width, t), err_msg=f"W={width}")


def test_layout_is_fastlanes_transposed_order() -> None:
    # value 1 (logical position 1) is row 0 of lane 1: the low bits of packed word 1
    values = np.zeros(CHUNK, dtype=np.uint32)
    values[1] = 5
    packed = inputs.pack_chunk(values, 3, 32)
    assert packed[1] == 5 and np.count_nonzero(packed) == 1
    values[:] = 0
    values[16 * 4] = 1                                  # FL_ORDER[1] = 4: row 8 of lane 0, bits 24..26
    assert inputs.pack_chunk(values, 3, 32)[0] == 1 << 24


@pytest.mark.parametrize("t", inputs.BITS)
def test_pages_encode_chunk_widths_headers_and_alignment(t: int) -> None:
    values = inputs.make_values("mixed_widths", t, t, 5 * CHUNK + 7, 3)
    words, starts = inputs.encode_page(values, t)
    assert starts.size == 6 and np.all(starts * (t // 8) % 8 == 0)
    for c, s in enumerate(starts.tolist()):
        assert int(words[s]) == inputs.bit_width(values[c * CHUNK:(c + 1) * CHUNK])
    np.testing.assert_array_equal(reference.decode_page(words, starts, values.size, t), values)


# --- the baseline --------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", inputs.BITS)
def test_baseline_unpack_matches_the_oracle_at_every_width(t: int) -> None:
    out = np.empty(CHUNK, dtype=DTYPES[t])
    for width in range(t + 1):
        values = inputs.make_values("full_width", t, width, CHUNK, 11 + width)
        packed = inputs.pack_chunk(values, width, t)
        kernels._unchecked_unpack(width, t, packed, out)
        np.testing.assert_array_equal(out, values, err_msg=f"W={width}")


def test_baseline_kernel_passes_the_battery() -> None:
    assert failures(kernels) == {}


# --- the battery ---------------------------------------------------------------------------------------

def test_battery_names_every_edge_case_for_every_width() -> None:
    names = {c.name for c in battery()}
    assert {f"{kind}/u{t}" for kind in inputs.EDGE_KINDS for t in inputs.BITS} | {f"fresh/u{t}" for t in inputs.BITS} == names


@pytest.mark.parametrize("t", inputs.BITS)
def test_edge_cases_are_what_they_say(t: int) -> None:
    fx = inputs.fixtures()

    def page(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = f"battery/{kind}/u{t}/"
        return fx[key + "values"], fx[key + "words"], fx[key + "starts"]

    values, words, starts = page("every_width")
    assert [int(words[s]) for s in starts.tolist()] == list(range(t + 1))
    for kind, extra in (("partial_last_1", 1), ("partial_last_1023", 1023)):
        assert page(kind)[0].size % CHUNK == extra
    values, words, starts = page("narrow_partial_last")
    assert values.size % CHUNK and int(words[starts[-1]]) == 0 and int(words[starts[0]]) == t
    assert page("one_value")[0].size == 1 and page("empty")[0].size == 0 and page("empty")[2].size == 0
    assert page("single_chunk")[0].size == CHUNK
    values, words, starts = page("max_values")
    assert np.all(values == np.iinfo(DTYPES[t]).max) and {int(words[s]) for s in starts.tolist()} == {t}
    values, words, starts = page("signed_minus_one")
    signed = values.view(np.dtype(f"<i{t // 8}"))
    assert (signed == -1).sum() > 100 and (signed >= 0).any() and {int(words[s]) for s in starts.tolist()} == {t}
    values, words, starts = page("sparse_zero")
    assert sum(int(words[s]) == 0 for s in starts.tolist()) >= starts.size // 2
    for name, (values, words, starts) in ((k, page(k)) for k in inputs.EDGE_KINDS):
        np.testing.assert_array_equal(reference.decode_page(words, starts, values.size, t), values, err_msg=name)


def test_fresh_pages_are_deterministic_and_vary() -> None:
    a, b, c = (inputs.fresh_page(32, s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.tobytes() != c.values.tobytes()


def test_speed_workloads_are_one_page_each_and_verify() -> None:
    loads = run_experiment.workloads()
    assert [w.combo for w in loads] == [f"{c.shape}/{c.distribution}" for c in inputs.SPEED_COMBOS]
    fx = inputs.fixtures()
    for w in loads:
        assert w.params["num_values"] == 1 << 20
        widths = {int(w.arrays["words"][s]) for s in w.arrays["chunk_starts"].tolist()}
        assert max(widths) == int(w.shape.split("-w")[1]) and (len(widths) > 1) == (w.distribution != "full_width")
    w = loads[3]
    call = w.queries(5, 2)[1]
    assert call["patch_pos"].size >= 24 and call["key"].dtype == np.uint64
    values = fx[f"speed/{w.shape}/{w.distribution}/values"]
    want = run_experiment.expected_values(w.arrays["words"], w.arrays["chunk_starts"], values.size, 32, call)
    assert np.count_nonzero(want != values) > 16                  # the patch changes values
    buf = target.empty_output(values.size, 32)
    buf[:values.size] = want
    check = w.verify(call)
    assert check({"digest": target.digest(buf, call["key"])}) is None
    buf[12345] ^= 1
    assert "digest" in str(check({"digest": target.digest(buf, call["key"])}))


# --- the check: wrong kernels fail, each in its own way ------------------------------------------------

class OracleDecoder:
    """A legal stand-in: the oracle's decode."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def decode(self, words: np.ndarray, chunk_starts: np.ndarray, num_values: int, out: np.ndarray) -> None:
        out[:] = reference.decode_page(words, chunk_starts, num_values, self.bits)


class Lazy(OracleDecoder):
    def decode(self, words: np.ndarray, chunk_starts: np.ndarray, num_values: int, out: np.ndarray) -> None:
        out[:-1] = reference.decode_page(words, chunk_starts, num_values, self.bits)[:-1]


@njit
def _write_at(out: np.ndarray, i: int) -> None:
    out[i] = 0                                      # no bounds check: past the end lands in the guard


class Overrun(OracleDecoder):
    def decode(self, words: np.ndarray, chunk_starts: np.ndarray, num_values: int, out: np.ndarray) -> None:
        super().decode(words, chunk_starts, num_values, out)
        _write_at(out, num_values)


class Unpatched(OracleDecoder):
    """Decodes the page as first seen (a kernel that caches its first decode)."""

    first: dict[int, np.ndarray] = {}

    def decode(self, words: np.ndarray, chunk_starts: np.ndarray, num_values: int, out: np.ndarray) -> None:
        key = id(self)
        if key not in self.first:
            self.first[key] = reference.decode_page(words, chunk_starts, num_values, self.bits)
        out[:] = self.first[key]


def test_legal_stand_in_passes() -> None:
    assert failures(OracleDecoder) == {}


def test_unwritten_value_past_the_end_and_stale_decode_fail() -> None:
    one = (case_named("one_value/u32"), case_named("max_values/u8"))
    assert all("never written" in p for p in failures(Lazy, one).values()) and len(failures(Lazy, one)) == 2
    over = failures(Overrun, (case_named("partial_last_1/u64"), case_named("empty/u16")))
    assert len(over) == 2 and all("written past" in p for p in over.values())
    assert "mixed_widths/u32" in failures(Unpatched, (case_named("mixed_widths/u32"),))


def test_wrong_dtype_or_size_fails() -> None:
    case = case_named("single_chunk/u16")
    good = {"values": reference.decode_page(case.arrays["words"], case.arrays["chunk_starts"], CHUNK, 16),
            "guard": target.empty_output(0, 16)}
    assert run_experiment.check(case, 0, good) is None
    assert run_experiment.check(case, 0, {**good, "values": good["values"].astype(np.uint32)}) is not None
    assert run_experiment.check(case, 0, {**good, "values": good["values"][:-1]}) is not None


def test_build_refuses_inconsistent_pages() -> None:
    case = case_named("every_width/u8")
    with pytest.raises(ValueError):
        target.build(kernels, {**case.params, "num_values": case.params["num_values"] + CHUNK}, case.arrays)
    with pytest.raises(ValueError):
        target.build(kernels, {**case.params, "bits": 16}, case.arrays)


def test_kernel_sees_a_read_only_page() -> None:
    case = case_named("mixed_widths/u16")

    class Writer(OracleDecoder):
        def decode(self, words: np.ndarray, chunk_starts: np.ndarray, num_values: int, out: np.ndarray) -> None:
            words[0] = 0

    inst = target.build(SimpleNamespace(BitpackDecoder=Writer), case.params, case.arrays)     # type: ignore[arg-type]
    with pytest.raises(ValueError):
        target.OPS["check"](inst, case.calls[0])


# --- the offline playbook --------------------------------------------------------------------------------

def test_playbook_replays_in_sequence() -> None:
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


def _playbook_path(tmp_path: Path, entry: str) -> Path:
    return playbook_kernel(FOLDER, tmp_path, *dict.fromkeys((KEEP, entry)), api=target.KERNEL_API)


def _playbook_module(tmp_path: Path, entry: str) -> ModuleType:
    return load_unique(_playbook_path(tmp_path, entry))


@pytest.mark.slow
def test_playbook_wrong_kernel_fails_on_zero_chunks(tmp_path: Path) -> None:
    # (the keep's exactness on the whole battery is the offline loop's correctness phase below)
    zeros = {f"{kind}/u{t}" for kind in ("every_width", "sparse_zero") for t in inputs.BITS}
    failed = failures(_playbook_module(tmp_path, "02-skip-zero-width.md"), tuple(c for c in battery() if c.name in zeros))
    assert set(failed) == zeros
    assert "never written" in failed["every_width/u8"]



@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    got = offline_run(repo, "bitpack", write_config(repo, cumulative=False))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.5
    # Per-target tests skip the report-only re-measure against the baseline (test_loop covers it).
    assert got[1].get("cumulative_speedup") is None and got[1].get("cumulative_error") is None
