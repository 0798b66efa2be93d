"""Tests for the fsst target: the oracle (the encoder's round trip against the original strings,
the byte loop against the vectorised run-parity classes), the compiled baseline (Lance's
decompress_bulk, every battery case), the battery's edge cases by name, the check (a short write,
a write past the end, a wrong offset dtype, the digest of timed calls), and the playbook (its
wrong kernel rejected; the offline loop keeps its first entry, correct and faster than the baseline)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import battery_failures, ROOT, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.fsst import inputs, kernels, reference, run_experiment, target
from targets.harness.plan import Case
from targets.harness.prng import Stream

FOLDER = ROOT / "targets" / "fsst"
KEEP = "01-one-loop-unchecked-stores.md"


@functools.lru_cache(maxsize=1)
def battery() -> tuple[Case, ...]:
    return tuple(run_experiment.cases(seed=11))


def failures(module: object, cases: tuple[Case, ...] | None = None) -> dict[str, str]:
    return battery_failures(target, run_experiment.check, cases or battery(), module, "FsstPageDecoder")


# --- the oracle and the encoder --------------------------------------------------------------------

def strings_of(page: dict[str, np.ndarray], data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[int(a):int(b)] for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.mark.parametrize("dist", [*inputs.GENERATORS, "multibyte_utf8"])
def test_round_trip_through_the_encoder(dist: str) -> None:
    gen = inputs.GENERATORS.get(dist, inputs.multibyte_utf8)
    s = gen(Stream(5), 300) + [b"", b"\xff", b"\xff\xff\xffa", b"ab\xff"]
    for symbols in (inputs.train(s), [], None):
        page = inputs.encode_page(s, symbols, before=b"\xff\x01")
        data, offsets = reference.decode(page["symbol_table"], page["in_bytes"], page["in_offsets"])
        assert strings_of(page, data, offsets) == s
        assert offsets[0] == 0 and offsets.dtype == np.int32


def test_table_layout_is_lances() -> None:
    table = inputs.symbol_table([b"ab", b"cdefghij"])
    assert table.size == 2312 == reference.TABLE_SIZE
    header = int.from_bytes(table[:8].tobytes(), "little")
    assert header >> 32 == 0x46535354 and header & (1 << 24) and header & 255 == 2
    assert table[8:16].tobytes() == b"ab\0\0\0\0\0\0" and table[24:26].tolist() == [2, 8]
    assert not int.from_bytes(inputs.symbol_table([], switch=False)[:8].tobytes(), "little") & (1 << 24)


def test_run_parity_classes_match_the_byte_loop() -> None:
    for case in battery():
        page = case.arrays
        if not reference.parse_table(page["symbol_table"])[0]:
            continue
        data, _ = reference.decode(page["symbol_table"], page["in_bytes"], page["in_offsets"])
        starts = reference.output_starts(page["symbol_table"], page["in_bytes"], page["in_offsets"])
        cls = reference.byte_classes(page["in_bytes"], page["in_offsets"])
        # walk the tokens as the byte loop does
        lens = [len(sym) for sym in reference.parse_table(page["symbol_table"])[1]]
        raw = page["in_bytes"].tolist()
        starts, cls = starts.tolist(), cls.tolist()
        o = 0
        for a, b in zip(page["in_offsets"][:-1].tolist(), page["in_offsets"][1:].tolist()):
            i = a
            while i < b:
                assert starts[i] == o, (case.name, i)
                if raw[i] == 255:
                    assert cls[i] == reference.ESCAPE and cls[i + 1] == reference.LITERAL
                    i, o = i + 2, o + 1
                else:
                    assert cls[i] == reference.CODE
                    o += lens[raw[i]]
                    i += 1
        assert o == data.size


def test_battery_names_every_edge_case() -> None:
    names = {c.name for c in battery()}
    for name in ("table_0_symbols", "table_255_symbols", "passthrough", "empty_strings", "raw_ff_bytes",
                 "ends_in_escape", "tail_1_3", "multibyte_utf8", "offsets_not_from_0", "int64_offsets",
                 "long_symbols_at_end", "n0"):
        assert name in names
    by = {c.name: c for c in battery()}
    assert by["table_255_symbols"].arrays["symbol_table"][0] == 255
    assert np.unique(by["table_255_symbols"].arrays["in_bytes"]).size == 256
    assert by["int64_offsets"].arrays["in_offsets"].dtype == np.int64
    assert by["offsets_not_from_0"].arrays["in_offsets"][0] > 0
    assert all(c.calls[1]["patch_pos"].size for c in battery() if c.params["out_size"] > 0)


def test_inputs_are_deterministic() -> None:
    a, b, c = inputs.fresh_page(3), inputs.fresh_page(3), inputs.fresh_page(4)
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in inputs.PAGE_KEYS)
    assert not all(a[1][k].shape == c[1][k].shape and np.array_equal(a[1][k], c[1][k]) for k in inputs.PAGE_KEYS)


# --- the baseline and the check --------------------------------------------------------------------

def test_baseline_passes_the_battery() -> None:
    assert failures(kernels) == {}


class _Short(kernels.FsstPageDecoder):
    def decode(self, in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes):    # type: ignore[no-untyped-def]
        super().decode(in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes[:max(0, out_bytes.size - 1)].copy())


class _Past(kernels.FsstPageDecoder):
    def decode(self, in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes):    # type: ignore[no-untyped-def]
        super().decode(in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes)
        base = out_bytes.base if out_bytes.base is not None else out_bytes
        base[out_bytes.size] = 7                     # one byte past the declared output


def test_check_fails_closed_on_short_and_past_the_end() -> None:
    cases = tuple(c for c in battery() if c.name in ("urls/i32", "long_symbols_at_end"))
    short = failures(_Short, cases)
    assert set(short) == {"urls/i32", "long_symbols_at_end"} and "never written" in short["urls/i32"]
    past = failures(_Past, cases)
    assert set(past) == {"urls/i32", "long_symbols_at_end"} and "past the declared output" in past["urls/i32"]


def test_timed_calls_are_checked_by_digest() -> None:
    w = run_experiment.workload("words", inputs.fixtures(), chunks=4)
    inst = target.build(kernels, w.params, w.arrays)                                    # type: ignore[arg-type]
    call = w.queries(9, 2)[1]
    assert call["patch_pos"].size > 0
    assert w.verify(call)(target.OPS["speed"](inst, call)) is None
    other = w.queries(9, 2)[0]
    got = target.OPS["speed"](inst, other)                     # another call's patches: another page
    assert "differ" in (w.verify(call)(got) or "")
    wrong = {"digest": got["digest"].astype(np.int64)}
    assert "uint64[2]" in (w.verify(call)(wrong) or "")


# --- the playbook ---------------------------------------------------------------------------------

def test_playbook_replays() -> None:
    got = replay_playbook(FOLDER, KEEP, target.KERNEL_API, target.ALLOWED_IMPORTS)
    assert got == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


def _playbook_module(tmp_path: Path, *entries: str) -> ModuleType:
    return load_unique(playbook_kernel(FOLDER, tmp_path, *entries, api=target.KERNEL_API))


@pytest.mark.slow
def test_playbook_keep_is_exact_and_wrong_kernel_fails_on_escape_runs(tmp_path: Path) -> None:
    assert failures(_playbook_module(tmp_path, KEEP)) == {}
    failed = failures(_playbook_module(tmp_path, KEEP, "02-skip-escape-runs.md"))
    assert {"raw_ff_bytes", "ends_in_escape"} <= set(failed)


@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    got = offline_run(repo, "fsst", write_config(repo, cumulative=False))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.2
