"""predicate trial entry point: ``python -m targets.predicate.run_experiment [--kernel F] [--against F]``.

Composes the shared runner with this target's inputs and oracle. Immutable during a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import runner
from targets.harness.plan import Case, ProfileShape, ProfileSpec, TargetPlan, Workload
from targets.predicate import inputs, reference
from targets.predicate.inputs import BatteryCase, SpeedCombo
from targets.predicate.target import (BUFFERS, CHECK_FILLS, GUARD_BYTES, GUARD_ROWS, POISON_BYTE, VALUE_DTYPES,
                                      probe_positions, selected_sizes, words_for)

KERNEL = Path(__file__).with_name("kernels.py")
DTYPES: dict[str, np.dtype[Any]] = {**VALUE_DTYPES, "s_offsets": np.dtype("<i4"), "s_bytes": np.dtype("u1"), "validity": np.dtype("<u8")}


def _case(case: BatteryCase) -> Case:
    return Case(name=case.name, params={}, arrays=case.arrays, calls=case.calls)


def cases(seed: int) -> list[Case]:
    """The fixed battery (every edge case by name) plus one fresh case from the trial seed."""
    return [_case(c) for c in inputs.battery()] + [_case(inputs.fresh_case(seed))]


def declared(arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    n = arrays["a"].size
    return {"a": (n, GUARD_ROWS), "b": (n, GUARD_ROWS), "x": (n, GUARD_ROWS), "y": (n, GUARD_ROWS),
            "s_offsets": (n + 1, GUARD_ROWS), "s_bytes": (arrays["s_bytes"].size, GUARD_BYTES),
            "validity": (words_for(n), GUARD_ROWS // 4)}


def expected_buffers(arrays: dict[str, np.ndarray], call: dict[str, np.ndarray], fill: np.uint8
                     ) -> tuple[int, dict[str, np.ndarray]]:
    """The oracle's count and every output buffer as it must be after the call: the selected rows'
    values, then the fill up to and through the guard."""
    batch = reference.with_patch(arrays, call)
    rows = reference.select(batch, call["lits_i"], call["lits_f"])
    want = reference.filtered(batch, rows)
    out = {}
    for name, (size, guard) in declared(arrays).items():
        shape = (5, size + guard) if name == "validity" else (size + guard,)
        buf = np.empty(shape, dtype=DTYPES[name])
        buf.view(np.uint8).fill(fill)
        if name == "validity":
            buf[:, :want[name].shape[1]] = want[name]
        else:
            buf[:want[name].size] = want[name]
        out[name] = buf
    return int(rows.size), out


def _units(name: str, arr: np.ndarray) -> np.ndarray:
    """uint8 [units, bytes per unit]: one row per element (per word position, all 5 columns, for validity)."""
    a = np.ascontiguousarray(arr.T if name == "validity" else arr)
    return a.view(np.uint8).reshape(a.shape[0], -1)


def _compare(name: str, got: object, want: np.ndarray, count: int, selected: int, size: int, fill: int) -> str | None:
    if type(got) is not np.ndarray or got.dtype != want.dtype or got.shape != want.shape:
        return f"{name}: expected {want.dtype} {want.shape}, got {getattr(got, 'dtype', type(got).__name__)} " \
               f"{getattr(got, 'shape', '')}"
    g, w = _units(name, got), _units(name, want)
    bad = np.flatnonzero(np.any(g != w, axis=1))
    if bad.size:
        i = int(bad[0])
        where = ("a selected row" if i < selected else
                 "past the selected part: must stay the fill" if i < size else
                 "the guard past the declared output: written past the end")
        unit = "word" if name == "validity" else "byte" if name == "s_bytes" else "offset" if name == "s_offsets" else "row"
        never = " (the fill: never written?)" if np.all(g[i] == fill) else ""
        return (f"{name}: {unit} {i} ({where}; count {count}): got {g[i].tobytes().hex()}{never}, expected "
                f"{w[i].tobytes().hex()} "
                f"({bad.size} {unit}s differ)")
    return None


def check(case: Case, call: int, out: dict[str, np.ndarray]) -> str | None:
    c = case.calls[call]
    sizes = declared(case.arrays)
    for tag, fill in zip("ab", CHECK_FILLS):
        count, want = expected_buffers(case.arrays, c, fill)
        got_count = out.get(f"count_{tag}")
        if type(got_count) is not np.ndarray or got_count.shape != (1,) or int(got_count[0]) != count:
            what = "not an integer in 0..N" if type(got_count) is np.ndarray and got_count.size and got_count[0] == -1 \
                else repr(got_count)
            return f"count (run over fill {int(fill):#04x}): got {what}, expected {count} of {case.arrays['a'].size} rows"
        sel = selected_sizes(count, int(want["s_offsets"][count]))
        for name in BUFFERS:
            problem = _compare(name, out.get(f"{name}_{tag}"), want[name], count, sel[name], sizes[name][0], int(fill))
            if problem:
                return f"{problem} (run over fill {int(fill):#04x})"
    return None


def workload(combo: SpeedCombo, arrays: dict[str, np.ndarray]) -> Workload:
    def queries(seed: int, count: int) -> list[dict[str, np.ndarray]]:
        return inputs.speed_calls(combo, seed, count)

    def verify(call: dict[str, np.ndarray]) -> Callable[[dict[str, np.ndarray]], str | None]:
        count, want = expected_buffers(arrays, call, POISON_BYTE)
        sizes = declared(arrays)
        bytes_end = int(want["s_offsets"][count])
        sel = selected_sizes(count, bytes_end)

        def judge(out: dict[str, np.ndarray]) -> str | None:
            got = out.get("count")
            if type(got) is not np.ndarray or got.shape != (1,) or int(got[0]) != count:
                return f"count: got {got!r:.60}, expected {count} of {arrays['a'].size} rows"
            end = out.get("bytes_end")
            if type(end) is not np.ndarray or end.shape != (1,) or int(end[0]) != bytes_end:
                return f"s_offsets[count]: got {end!r:.60}, expected {bytes_end}"
            for name in BUFFERS:
                size, _ = sizes[name]
                if size == 0:
                    continue
                at = probe_positions(call["probe"], sel[name], size) if sel[name] else \
                    probe_positions(call["probe"], size, size)
                full = want[name]
                for part, w in (("at", full[:, at] if name == "validity" else full[at]),
                                ("guard", full[:, size:] if name == "validity" else full[size:])):
                    g = out.get(f"{name}_{part}")
                    if type(g) is not np.ndarray or g.dtype != w.dtype or g.shape != w.shape:
                        return f"{name}_{part}: expected {w.dtype} {w.shape}, got {g!r:.60}"
                    diff = np.flatnonzero(np.any(_units(name, g) != _units(name, w), axis=1)) if g.size else g[:0]
                    if diff.size:
                        return (f"{name}: {'sampled positions' if part == 'at' else 'the guard past the declared output'}"
                                f" differ from the oracle's (count {count}; {diff.size} of {w.shape[-1] if name == 'validity' else w.shape[0]})")
            return None
        return judge

    return Workload(shape=combo.shape, distribution=combo.distribution, params={}, arrays=arrays,
                    queries=queries, verify=verify)


def workloads() -> list[Workload]:
    fx = inputs.speed_fixtures()
    return [workload(combo, inputs.speed_arrays(fx, combo)) for combo in inputs.SPEED_COMBOS]


def _profile_workload(fx: dict[str, np.ndarray], combo: SpeedCombo, size: dict[str, int]) -> Workload:
    arrays = inputs.speed_arrays(fx, combo)
    n = size["rows"]
    cut = {k: v[:n] for k, v in arrays.items() if k in VALUE_DTYPES}
    cut["s_offsets"] = arrays["s_offsets"][:n + 1]
    cut["s_bytes"] = arrays["s_bytes"][:int(arrays["s_offsets"][n])]
    valid = reference.unpack_validity(arrays["validity"], arrays["a"].size)[:, :n]
    cut["validity"] = reference.pack_validity(valid)
    cut["program"] = arrays["program"]
    sub = SpeedCombo(combo.shape, combo.distribution, combo.prog, combo.selectivity, n, combo.null_rate)
    return workload(sub, cut)


def profile_shapes() -> list[ProfileShape]:
    """Per 1M-row combo: the op at a quarter, half and all of the batch's rows; its time splits
    into a per-row cost (evaluation and compaction) and a fixed part per call."""
    fx = inputs.speed_fixtures()
    rows = inputs.SPEED_ROWS
    return [ProfileShape(shape=c.shape, distribution=c.distribution, values={"rows": (rows // 4, rows // 2, rows)},
                         at={"rows": rows}, workload=partial(_profile_workload, fx, c))
            for c in inputs.SPEED_COMBOS if c.rows == rows]


PLAN = TargetPlan(name="predicate", ops_module="targets.predicate.target", cases=cases, check=check,
                  workloads=workloads, queries_per_combo=5,
                  profile=ProfileSpec(factors={"rows": "per row (evaluate the predicate, compact the selected rows)"},
                                      fixed_label="per call (output allocation and poison fill, patches)",
                                      shapes=profile_shapes))

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
