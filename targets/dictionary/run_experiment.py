"""dictionary trial entry point: ``python -m targets.dictionary.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from targets.dictionary import inputs, reference, target
from targets.dictionary.inputs import BatteryCase
from targets.dictionary.target import CHECK_FILLS, GUARD_BYTES, GUARD_OFFSETS, POISON_BYTE, POISON_OFFSET, VALUE_WIDTH
from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload

KERNEL = Path(__file__).with_name("kernels.py")
PROFILE_DISTRIBUTION = "uniform"


def _case(case: BatteryCase) -> Case:
    return Case(name=case.name, params={"kind": case.kind}, arrays=case.arrays, calls=case.calls)


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case by name, random pages) plus one fresh case per kind
    from the trial seed."""
    fx = inputs.fixtures()
    out = [_case(inputs.cached_battery_case(fx, name)) for name in inputs.BATTERY_NAMES]
    return out + [_case(inputs.fresh_case(kind, seed)) for kind in ("varwidth", "fixed")]


# --- the checks ---------------------------------------------------------------------------------------

def _array(out: dict[str, np.ndarray], name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray | str:
    arr = out.get(name)
    if type(arr) is not np.ndarray:
        return f"{name}: expected a numpy.ndarray, got {type(arr).__name__}"
    if arr.dtype != dtype or arr.shape != shape:
        return f"{name}: dtype {arr.dtype} shape {arr.shape} (expected {np.dtype(dtype)} {shape})"
    return arr


def _guard(what: str, guard: np.ndarray, fill: int, declared: int, unit: str) -> str | None:
    """None when the guard zone past a declared output (``declared`` units long) still holds its
    fill everywhere; a unit is one element, or one row of a 2-d guard."""
    flat = guard.reshape(guard.shape[0], -1)
    bad = np.flatnonzero(np.any(flat != fill, axis=1))
    if bad.size:
        i = int(bad[0])
        return (f"wrote past the declared output: {what} {declared + i} (the page has {declared} {unit}) holds "
                f"{flat[i].tobytes().hex() if flat.shape[1] > 1 else hex(int(flat[i, 0]))}, not the fill {fill:#x} "
                f"({bad.size} {unit} past the end written)")
    return None


def _row_of(offsets: np.ndarray, position: int) -> int:
    return int(np.searchsorted(offsets.astype(np.int64), position, side="right")) - 1


def judge_varwidth(out: dict[str, np.ndarray], offsets: np.ndarray, data: np.ndarray) -> str | None:
    """Both runs of the battery op, bit for bit: offsets [N+1] and bytes [total] equal the
    oracle's, and the guard zones past them still hold their fill."""
    n, size = offsets.size - 1, data.size
    for tag, fill in zip("ab", CHECK_FILLS):
        got_off = _array(out, f"offsets_{tag}", np.uint32, (n + 1 + GUARD_OFFSETS,))
        got_data = _array(out, f"bytes_{tag}", np.uint8, (size + GUARD_BYTES,))
        for got in (got_off, got_data):
            if isinstance(got, str):
                return got
        assert isinstance(got_off, np.ndarray) and isinstance(got_data, np.ndarray)
        bad = np.flatnonzero(got_off[:n + 1] != offsets)
        if bad.size:
            r = int(bad[0])
            what = "never written" if got_off[r] == POISON_OFFSET else str(int(got_off[r]))
            return (f"offsets: row {r} of {n + 1}: got {what}, expected {int(offsets[r])} "
                    f"({bad.size} offsets differ)")
        bad = np.flatnonzero(got_data[:size] != data)
        if bad.size:
            p = int(bad[0])
            r = _row_of(offsets, p)
            return (f"bytes (run over fill {int(fill):#04x}): position {p} of {size} (row {r}, byte "
                    f"{p - int(offsets[r])} of {int(offsets[r + 1] - offsets[r])}): got {int(got_data[p]):#04x}, expected "
                    f"{int(data[p]):#04x}{' (the fill: never written?)' if got_data[p] == fill else ''} "
                    f"({bad.size} bytes differ)")
        for problem in (_guard("offset", got_off[n + 1:], int(POISON_OFFSET), n + 1, "offsets"),
                        _guard("byte", got_data[size:], int(fill), size, "bytes")):
            if problem:
                return problem
    return None


def judge_fixed(out: dict[str, np.ndarray], values: np.ndarray) -> str | None:
    """Both runs of the battery op, bit for bit: [N, 16] values, then the guard rows."""
    n = values.shape[0]
    for tag, fill in zip("ab", CHECK_FILLS):
        got = _array(out, f"values_{tag}", np.uint8, (n + GUARD_BYTES // VALUE_WIDTH, VALUE_WIDTH))
        if isinstance(got, str):
            return got
        bad = np.flatnonzero(np.any(got[:n] != values, axis=1))
        if bad.size:
            r = int(bad[0])
            return (f"values (run over fill {int(fill):#04x}): row {r} of {n}: got {got[r].tobytes().hex()}, "
                    f"expected {values[r].tobytes().hex()} ({bad.size} rows differ)")
        problem = _guard("row", got[n:], int(fill), n, "rows")
        if problem:
            return problem
    return None


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    c = case.calls[call]
    page = reference.window_indices(case.arrays["pool"], c)
    if case.params["kind"] == "varwidth":
        offsets, data = reference.decode_varwidth(page, case.arrays["dict_offsets"], case.arrays["dict_bytes"])
        return judge_varwidth(out, offsets, data)
    return judge_fixed(out, reference.decode_fixed(page, case.arrays["dictionary"]))


def judge_digest(out: dict[str, np.ndarray], want: np.ndarray, names: tuple[str, ...], rows: int) -> str | None:
    """A timed call: the keyed digest of each whole output buffer (guards included) equals the
    oracle's buffers' under the same key."""
    got = out.get("digest")
    if type(got) is not np.ndarray or got.dtype != np.uint64 or got.shape != want.shape:
        return f"digest: expected uint64{list(want.shape)}, got {got!r:.80}"
    bad = [name for name, g, w in zip(names, got, want) if g != w]
    if bad:
        return f"{' and '.join(bad)} (or the guard past them) differ from the oracle's (keyed digest, page of {rows} rows)"
    return None


# --- speed ----------------------------------------------------------------------------------------------

def workload(label: str, dist: str, arrays: dict[str, np.ndarray], rows: int = inputs.PAGE_ROWS) -> Workload:
    """One speed combo: its pool and dictionary, fresh pages of ``rows`` rows (the combo's own by
    default; the profile times fewer)."""
    varwidth = "dict_offsets" in arrays
    pool = arrays["pool"]
    prefix = None
    if varwidth:
        prefix = np.zeros(pool.size + 1, dtype=np.int64)
        np.cumsum(reference.value_lengths(arrays["dict_offsets"])[pool], out=prefix[1:])

    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return inputs.speed_calls(arrays, prefix, rows, seed, count)

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        page = reference.window_indices(pool, call)
        n = page.size
        if varwidth:
            offsets, data = reference.decode_varwidth(page, arrays["dict_offsets"], arrays["dict_bytes"])
            full_off = np.full(n + 1 + GUARD_OFFSETS, POISON_OFFSET, dtype=np.uint32)
            full_off[:n + 1] = offsets
            full_data = np.full(data.size + GUARD_BYTES, POISON_BYTE, dtype=np.uint8)
            full_data[:data.size] = data
            want = target.digest((full_off, full_data), call["key"])
            return lambda out: judge_digest(out, want, ("offsets", "bytes"), n)
        values = np.full((n + GUARD_BYTES // VALUE_WIDTH, VALUE_WIDTH), POISON_BYTE, dtype=np.uint8)
        values[:n] = reference.decode_fixed(page, arrays["dictionary"])
        want = target.digest((values,), call["key"])
        return lambda out: judge_digest(out, want, ("values",), n)

    return Workload(shape=label, distribution=dist, params={"kind": "varwidth" if varwidth else "fixed"},
                    arrays=arrays, queries=queries, verify=verify)


def workloads() -> list[Workload]:
    fx = inputs.fixtures()
    return [workload(label, dist, inputs.cached_speed_arrays(fx, label, dist))
            for label, _, _, _ in inputs.SPEED_SHAPES for dist in inputs.SPEED_DISTRIBUTIONS[label]]


def _profile_workload(fx: dict[str, np.ndarray], label: str, size: dict[str, int]) -> Workload:
    return workload(label, PROFILE_DISTRIBUTION, inputs.cached_speed_arrays(fx, label, PROFILE_DISTRIBUTION),
                    size["rows"])


def profile_shapes() -> list[ProfileShape]:
    """Per dictionary, on uniform indices: a quarter, half and all of a page's rows; the op's time
    splits into a fixed part per call and a cost per row (the index loop and its copies)."""
    fx = inputs.fixtures()
    rows = inputs.PAGE_ROWS
    return [ProfileShape(shape=label, distribution=PROFILE_DISTRIBUTION,
                         values={"rows": (rows // 4, rows // 2, rows)}, at={"rows": rows},
                         workload=partial(_profile_workload, fx, label))
            for label, _, _, _ in inputs.SPEED_SHAPES]


# A page is 2**19 rows (~12 MB decoded, 2-20 ms per call): five timed calls per combo and block,
# not eight, and the 16 blocks the CI resamples stay (2**20 rows took ~90 s a trial here, 2**18
# rows saved little: the trial's fixed part, 16 workers and their warm-up, dominates there).
PLAN = TargetPlan(name="dictionary", ops_module="targets.dictionary.target", cases=cases, check=check,
                  workloads=workloads, queries_per_combo=5,
                  profile=ProfileSpec(factors={"rows": "per row (index read, value copy, offset write)"},
                                      fixed_label="per call (output allocation and poison fill, patches)",
                                      shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
