"""fsst trial entry point: ``python -m targets.fsst.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from targets.fsst import inputs, reference
from targets.fsst.target import CHECK_FILLS, GUARD_OFFSETS, POISON_OFFSET, SPEED_FILL, digest, empty_outputs
from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.harness.prng import CORRECTNESS_SEED, Stream, mix_seeds

KERNEL = Path(__file__).with_name("kernels.py")


def patched(page: dict[str, np.ndarray], call: dict[str, np.ndarray]) -> np.ndarray:
    data = page["in_bytes"].copy()
    data[call["patch_pos"]] = call["patch_bytes"]
    return data


def _case(name: str, page: dict[str, np.ndarray], seed: int) -> Case:
    data, _ = reference.decode(page["symbol_table"], page["in_bytes"], page["in_offsets"])
    where = inputs.patch_candidates(page)
    calls = [inputs.patches(page, mix_seeds(seed, name, "call", i), count, where)
             for i, count in enumerate((0, inputs.BATTERY_PATCHES))]
    return Case(name=name, params={"out_size": int(data.size)}, arrays=page, calls=calls)


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case by name, random pages) plus one fresh page from the trial
    seed; each decoded as encoded and with fresh bytes patched in."""
    fx = inputs.fixtures()
    out = [_case(name, inputs.page_of(fx, f"battery/{name}"), CORRECTNESS_SEED) for name in inputs.BATTERY_NAMES]
    name, page = inputs.fresh_page(seed)
    return out + [_case(name, page, seed)]


# --- the checks ---------------------------------------------------------------------------------------

def _array(out: dict[str, np.ndarray], name: str, dtype: np.dtype, size: int) -> np.ndarray | str:
    arr = out.get(name)
    if type(arr) is not np.ndarray:
        return f"{name}: expected a numpy.ndarray, got {type(arr).__name__}"
    if arr.dtype != dtype or arr.shape != (size,):
        return f"{name}: dtype {arr.dtype} shape {arr.shape} (expected {np.dtype(dtype)} ({size},))"
    return arr


def _row_of(offsets: np.ndarray, position: int) -> int:
    return int(np.searchsorted(offsets.astype(np.int64), position, side="right")) - 1


def judge(out: dict[str, np.ndarray], data: np.ndarray, offsets: np.ndarray) -> str | None:
    """Both runs of the battery op, bit for bit: the decoded bytes and offsets equal the oracle's,
    and the guard zones past them still hold their poison."""
    n, size = offsets.size, data.size
    nbytes = empty_outputs(size, n - 1, offsets.dtype, SPEED_FILL)[0].size
    for tag, fill in zip("ab", CHECK_FILLS):
        got_data = _array(out, f"bytes_{tag}", np.dtype(np.uint8), nbytes)
        got_off = _array(out, f"offsets_{tag}", offsets.dtype, n + GUARD_OFFSETS)
        for got in (got_data, got_off):
            if isinstance(got, str):
                return got
        assert isinstance(got_off, np.ndarray) and isinstance(got_data, np.ndarray)
        bad = np.flatnonzero(got_off[:n] != offsets)
        if bad.size:
            r = int(bad[0])
            what = "never written" if got_off[r] == POISON_OFFSET else str(int(got_off[r]))
            return f"offsets: {r} of {n}: got {what}, expected {int(offsets[r])} ({bad.size} offsets differ)"
        bad = np.flatnonzero(got_data[:size] != data)
        if bad.size:
            p = int(bad[0])
            r = _row_of(offsets, p)
            return (f"bytes (run over fill {int(fill):#04x}): position {p} of {size} (string {r}, byte "
                    f"{p - int(offsets[r])} of {int(offsets[r + 1] - offsets[r])}): got {int(got_data[p]):#04x}, "
                    f"expected {int(data[p]):#04x}{' (the fill: never written?)' if got_data[p] == fill else ''} "
                    f"({bad.size} bytes differ)")
        bad = np.flatnonzero(got_data[size:] != fill)
        if bad.size:
            return (f"wrote past the declared output: byte {size + int(bad[0])} (the page decodes to {size} bytes) "
                    f"holds {int(got_data[size + int(bad[0])]):#04x} ({bad.size} bytes of the guard written)")
        bad = np.flatnonzero(got_off[n:] != POISON_OFFSET)
        if bad.size:
            return f"wrote past the declared offsets: offset {n + int(bad[0])} of {n} written ({bad.size} past the end)"
    return None


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    page = case.arrays
    data, offsets = reference.decode(page["symbol_table"], patched(page, case.calls[call]), page["in_offsets"])
    if data.size != int(case.params["out_size"]):
        return f"harness bug: the patched page decodes to {data.size} bytes, not {case.params['out_size']}"
    return judge(out, data, offsets)


# --- speed ----------------------------------------------------------------------------------------------

def expected_outputs(page: dict[str, np.ndarray], base: np.ndarray, starts: np.ndarray,
                     call: dict[str, np.ndarray]) -> np.ndarray:
    """The decoded bytes after the call's patch: ``base`` (the unpatched page's) with each patched
    token's output rewritten (``starts``: where each compressed byte's output starts)."""
    _, symbols = reference.parse_table(page["symbol_table"])
    out = base.copy()
    for p, b, cls in zip(call["patch_pos"].tolist(), call["patch_bytes"].tolist(), call["patch_class"].tolist()):
        s = int(starts[p])
        if cls == reference.LITERAL:
            out[s] = b
        else:
            sym = np.frombuffer(symbols[b], dtype=np.uint8)
            out[s:s + sym.size] = sym
    return out


def workload(dist: str, fx: dict[str, np.ndarray], chunks: int | None = None) -> Workload:
    """One speed combo: its page (or its first ``chunks`` chunks), fresh patches and a key per call."""
    page = inputs.page_of(fx, f"speed/{dist}")
    base, base_off = fx[f"speed/{dist}/out_bytes"], fx[f"speed/{dist}/out_offsets"]
    if chunks is not None and chunks < page["chunk_rows"].size - 1:
        rows = int(page["chunk_rows"][chunks])
        page = {"symbol_table": page["symbol_table"], "in_bytes": page["in_bytes"][:int(page["in_offsets"][rows])],
                "in_offsets": page["in_offsets"][:rows + 1], "chunk_rows": page["chunk_rows"][:chunks + 1]}
        base, base_off = base[:int(base_off[rows])], base_off[:rows + 1]
    rows = page["in_offsets"].size - 1
    where = inputs.patch_candidates(page)
    cls_at = dict(zip(where[0].tolist(), where[1].tolist()))
    starts = reference.output_starts(page["symbol_table"], page["in_bytes"], page["in_offsets"])

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        stream = Stream(mix_seeds(seed, "keys", dist, rows))
        return [{**inputs.patches(page, mix_seeds(seed, "speed", dist, rows, i), inputs.SPEED_PATCHES, where),
                 "key": stream.u64(2)} for i in range(count)]

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        marked = {**call, "patch_class": np.array([cls_at[p] for p in call["patch_pos"].tolist()], dtype=np.int8)}
        data, offsets = empty_outputs(base.size, rows, base_off.dtype, SPEED_FILL)
        data[:base.size] = expected_outputs(page, base, starts, marked)
        offsets[:rows + 1] = base_off
        want = digest(data, offsets, call["key"])

        def check_digest(out: dict[str, np.ndarray]) -> str | None:
            got = out.get("digest")
            if type(got) is not np.ndarray or got.dtype != np.uint64 or got.shape != (2,):
                return f"digest: expected uint64[2], got {got!r:.80}"
            if got[0] != want[0]:
                return ("the decoded bytes (or the guard after them) differ from the oracle's: keyed digest "
                        f"{int(got[0]):#x}, expected {int(want[0]):#x}")
            if got[1] != want[1]:
                return ("the offsets (or the guard after them) differ from the oracle's: keyed digest "
                        f"{int(got[1]):#x}, expected {int(want[1]):#x}")
            return None
        return check_digest

    return Workload(shape="page-1MB", distribution=dist, params={"out_size": int(base.size)}, arrays=page,
                    queries=queries, verify=verify)


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(dist, fx) for dist in inputs.SPEED_DISTRIBUTIONS]


def _profile_workload(fx: dict[str, np.ndarray], dist: str, size: dict[str, int]) -> Workload:
    return workload(dist, fx, chunks=size["chunks"])


def profile_shapes() -> list[ProfileShape]:
    """Per distribution: the op timed on the first quarter, half and all of its page's chunks; its
    time splits into a per-chunk cost (decode, the op's poison fill and digest) and a fixed part."""
    fx = inputs.fixtures()
    out = []
    for dist in inputs.SPEED_DISTRIBUTIONS:
        full = fx[f"speed/{dist}/chunk_rows"].size - 1
        out.append(ProfileShape(shape="page-1MB", distribution=dist, values={"chunks": (full // 4, full // 2, full)},
                                at={"chunks": full}, workload=partial(_profile_workload, fx, dist)))
    return out


PLAN = TargetPlan(name="fsst", ops_module="targets.fsst.target", cases=cases, check=check,
                  workloads=workloads, queries_per_combo=6,
                  profile=ProfileSpec(factors={"chunks": "per ~4 KiB miniblock chunk (decode; the op's fill and digest)"},
                                      fixed_label="per call (patches, table)", shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
