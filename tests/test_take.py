"""take: the oracle against pyarrow and np.unique, the encoder, the battery's checks (short and
past-the-end writes fail, never crash), the playbook, and the offline loop's keep."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import battery_failures, load_unique, offline_run, playbook_kernel, replay_playbook, write_config
from targets.harness.plan import Case
from targets.take import inputs, reference, run_experiment, target

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "targets" / "take"
KEEP = "01-row-table-and-slice-copies.md"


def failures(module: object, cases: list[Case] | None = None) -> dict[str, str]:
    return battery_failures(target, run_experiment.check, cases or run_experiment.cases(seed=11), module, "Take",
                            catch=(Exception,))


# --- the oracle, independently --------------------------------------------------------------------

def test_oracle_matches_pyarrow_take_and_np_unique() -> None:
    ds = inputs.battery_dataset()
    strings = pa.LargeStringArray.from_buffers(ds["str_offsets"].size - 1, pa.py_buffer(ds["str_offsets"].astype(np.int64)),
                                               pa.py_buffer(ds["str_bytes"])).cast(pa.string())
    for case in inputs.battery():
        for addrs in case.calls:
            got = reference.take(addrs, ds)
            uniq, inverse = np.unique(addrs, return_inverse=True)
            rows = reference.row_of(uniq, ds["frag_ids"], ds["frag_rows"], ds["deleted"])
            ret_pos = np.cumsum(rows >= 0) - 1                        # position among the returned rows
            kept = rows[inverse] >= 0
            assert np.array_equal(got["uniq_addrs"], uniq), case.name
            assert np.array_equal(got["remap"], ret_pos[inverse][kept].astype(np.uint64)), case.name
            taken = rows[inverse][kept]
            assert np.array_equal(got["frag_ids"], np.unique(uniq >> np.uint64(32)).astype(np.uint32))
            assert np.array_equal(got["i64"], pc.take(pa.array(ds["i64"]), pa.array(taken)).to_numpy())
            vec = pa.FixedSizeListArray.from_arrays(pa.array(ds["vec"].reshape(-1)), ds["vec"].shape[1])
            want_vec = pc.take(vec, pa.array(taken)).flatten().to_numpy().reshape(-1, ds["vec"].shape[1])
            assert np.array_equal(got["vec"], want_vec)
            want_str = pc.take(strings, pa.array(taken))
            assert [bytes(got["str_bytes"][a:b]).decode() for a, b in zip(got["str_offsets"][:-1], got["str_offsets"][1:])] \
                == want_str.to_pylist(), case.name


def test_flags_follow_check_row_addrs() -> None:
    a = inputs.addr
    assert reference.flags(np.zeros(0, np.uint64)).tolist() == [1, 1]
    assert reference.flags(a(3, [4, 5, 6])).tolist() == [1, 1]
    assert reference.flags(a([0, 1], [0xFFFF_FFFF, 0])).tolist() == [1, 0]     # +1 across fragments
    assert reference.flags(a(0, [1, 1])).tolist() == [0, 0]                    # repeats: not sorted
    assert reference.flags(a(0, [2, 1])).tolist() == [0, 0]


def test_encoder_round_trips_utf8() -> None:
    values = list(inputs.WORDS) + ["", "∑ü🙂"]
    offsets, data = inputs.encode_strings(values)
    assert [bytes(data[a:b]).decode() for a, b in zip(offsets[:-1], offsets[1:])] == values


def test_inputs_are_deterministic_and_named() -> None:
    names = [c.name for c in inputs.battery()]
    assert tuple(names) == inputs.BATTERY_NAMES
    ds = inputs.battery_dataset()
    assert np.array_equal(inputs.request("clustered", 500, ds, 3), inputs.request("clustered", 500, ds, 3))
    assert not np.array_equal(inputs.request("random_dup", 500, ds, 3), inputs.request("random_dup", 500, ds, 4))
    sizes = [reference.sizes(c, ds) for c in inputs.battery_requests(ds)["missing_rows_dropped"]]
    assert all(int(s[2]) < int(s[0]) + 1 for s in sizes) and int(sizes[1][2]) == 0      # every miss dropped


# --- the checks fail closed -------------------------------------------------------------------------

def test_baseline_passes_the_battery() -> None:
    # (the keep's exactness on the whole battery is the offline loop's correctness phase below)
    assert failures(load_unique(FOLDER / "kernels.py")) == {}


class _Oracle:
    """A stand-in kernel that writes the oracle's answer (or a damaged one)."""

    damage = ""

    def __init__(self, frag_ids, frag_rows, deleted, i64, vec, str_offsets, str_bytes):
        self.ds = {"frag_ids": frag_ids, "frag_rows": frag_rows, "deleted": deleted, "i64": i64, "vec": vec,
                   "str_offsets": str_offsets, "str_bytes": str_bytes}

    def take(self, row_addrs, out):
        want = reference.take(row_addrs, self.ds)
        for name, arr in out.items():
            arr[...] = want[name]
        if self.damage == "short" and out["str_bytes"].size:
            out["str_bytes"].base[out["str_bytes"].size - 1] = 0x5A if out["str_bytes"][-1] != 0x5A else 0x5B
        if self.damage == "past":
            out["remap"].base.view(np.uint8)[out["remap"].nbytes] = 7        # one byte into the guard


def test_short_and_past_the_end_writes_fail_closed() -> None:
    cases = [c for c in run_experiment.cases(seed=1) if c.name in ("random", "strings_empty_and_multibyte")]
    assert failures(_Oracle, cases) == {}
    short = type("Short", (_Oracle,), {"damage": "short"})
    past = type("Past", (_Oracle,), {"damage": "past"})
    assert "str_bytes" in failures(short, cases)["random"]
    assert "wrote past the declared output" in failures(past, cases)["random"]


class _Mutator(_Oracle):
    """Answers right, but first tries to make an input writable (the dataset or the request)."""

    target = ""

    def take(self, row_addrs, out):
        arr = row_addrs if self.target == "row_addrs" else self.ds[self.target]
        arr.flags.writeable = True            # what a kernel would do to sort in place or keep state
        arr[0] = arr[0]
        super().take(row_addrs, out)


@pytest.mark.parametrize("name", ["row_addrs", "i64", "vec", "str_bytes"])
def test_inputs_cannot_be_made_writable(name: str) -> None:
    cases = [c for c in run_experiment.cases(seed=1) if c.name == "random"]
    failed = failures(type("M", (_Mutator,), {"target": name}), cases)
    assert "cannot set WRITEABLE flag" in failed["random"], failed


def test_playbook_replays_in_sequence() -> None:
    outcomes = replay_playbook(FOLDER, KEEP, target.KERNEL_API, tuple(target.ALLOWED_IMPORTS))
    assert outcomes == {"01": "applies", "02": "applies", "03": "edit_failed", "04": "applies"}


def _playbook_module(tmp_path: Path, entry: str) -> ModuleType:
    return load_unique(playbook_kernel(FOLDER, tmp_path, *dict.fromkeys((KEEP, entry)), api=target.KERNEL_API))


def test_wrong_kernel_fails_on_the_max_u32_offset(tmp_path: Path) -> None:
    cases = [c for c in run_experiment.cases(seed=2) if c.name in ("max_u32_offset", "fragment_boundary", "random")]
    failed = failures(_playbook_module(tmp_path, "02-contiguous-without-fragment-test.md"), cases)
    assert set(failed) == {"max_u32_offset"}
    assert failed["max_u32_offset"].startswith("(run over fill 0xff) flags: element 1")


@pytest.mark.slow
def test_offline_loop_keeps_the_first_entry(repo: Path) -> None:
    # 2 blocks x 4 queries: every block sends each arm the 65 MB dataset once per combo, the bulk of
    # a trial's time; the keep's margin (1.36-1.40x, worst combo 1.08-1.12x, load ~1) allows it.
    got = offline_run(repo, "take", write_config(repo, cumulative=False, trial_sessions=2, trial_queries=4))
    assert [got[n]["reason"] for n in sorted(got)] == ["keep"]
    assert got[1]["speedup"] > 1.0
