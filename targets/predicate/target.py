"""predicate's fixed types and the op the worker runs around each kernel call (immutable in a run).

What is timed: one ``filter`` call = DataFusion's ``FilterExec`` on one batch as Lance's scan runs
it (``LanceFilterExec``, rust/lance/src/io/exec/filter.rs at lancedb/lance d2039d750): evaluate the
predicate (a postfix program over the batch's columns, three-valued logic) and compact the selected
rows of every column (NULL counts as false), returning how many rows were selected.

The batch has a fixed schema of five columns (``COLUMNS``): ``a`` int64, ``b`` int32, ``x`` float32,
``y`` float32 and ``s`` utf8 (int32 offsets [N+1] and bytes), with one Arrow validity bitmap per
column (uint64 words, bit ``i % 64`` of word ``i // 64`` is row ``i``, 1 = valid; bits past N are
0). The predicate is data: ``program`` int32 [K, 4] rows ``(opcode, column, literal slot, count)``
in postfix order (``OPCODES``), and per call the literals ``lits_i`` (int64; the int columns'
literals and IN lists) and ``lits_f`` (float32; the float columns'). The program is given to
``__init__`` (untimed: DataFusion plans the physical expression once per scan); the batch and the
literals come with every call.

The batch is sent once per workload into memory files mapped twice (targets/harness/pages.py): the
kernel gets read-only views; before every call the op patches fresh values into a few rows through
the writable mapping (and undoes them after), and every call carries fresh literals, so no call
repeats an earlier one.

Outputs are sized from the input's metadata before the kernel runs, at the most the predicate can
select (all N rows; all the string bytes; ceil(N/64) validity words per column), each a view of a
longer buffer with a guard zone past it, everything prefilled with a poison byte. The kernel
returns the selected count; it must write rows [0, count) of each value column, offsets
[0, count], bytes [0, offsets[count]) and validity words [0, ceil(count/64)) (bits past count 0),
and nothing else: whatever it leaves, or writes, past those stays checkable as poison. ``check``
(the battery) runs the kernel twice over two complementary fills and returns every buffer whole;
``speed`` (timed) runs it once and returns the count, every buffer at secret sample positions (half
within the selected part, half anywhere in the buffer) and the guard zones whole.

Workers import only this module (plus the harness), so it imports nothing else from the project.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import read_only_copy

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "PredicateFilter": {
        "__init__": ["self", "program"],
        "filter": ["self", "a", "b", "x", "y", "s_offsets", "s_bytes", "validity", "lits_i", "lits_f",
                   "out_a", "out_b", "out_x", "out_y", "out_s_offsets", "out_s_bytes", "out_validity"],
    },
}

COLUMNS = ("a", "b", "x", "y", "s")             # column index in the program = position here
COL_A, COL_B, COL_X, COL_Y, COL_S = range(5)
VALUE_DTYPES: dict[str, np.dtype[Any]] = {"a": np.dtype("<i8"), "b": np.dtype("<i4"), "x": np.dtype("<f4"), "y": np.dtype("<f4")}

# Opcodes of the postfix program; each row is (opcode, column, slot, count).
LT, LE, GT, GE, EQ, NE = 0, 1, 2, 3, 4, 5       # column <op> literal (lits_i[slot] or lits_f[slot])
IN = 6                                          # column IN lits_i[slot:slot + count] (a, b only)
IS_NULL, IS_NOT_NULL = 7, 8                     # any column
AND, OR, NOT = 9, 10, 11                        # Kleene logic on the stack's top one or two
OPCODES = {"lt": LT, "le": LE, "gt": GT, "ge": GE, "eq": EQ, "ne": NE, "in": IN, "is_null": IS_NULL,
           "is_not_null": IS_NOT_NULL, "and": AND, "or": OR, "not": NOT}
MAX_PROGRAM = 32

POISON_BYTE = np.uint8(0xA5)                    # the timed op's fill
CHECK_FILLS = (np.uint8(0xA5), np.uint8(0x5A))  # the battery's two runs: every bit flipped
GUARD_ROWS = 256                                # past each declared output (values, offsets, words)
GUARD_BYTES = 4096                              # past the declared string bytes
BUFFERS = ("a", "b", "x", "y", "s_offsets", "s_bytes", "validity")


def words_for(n: int) -> int:
    return -(-n // 64)


def validate_program(program: np.ndarray) -> None:
    """A well-formed postfix program: known opcodes, typed columns, literal slots given, depth 1 at the end."""
    if program.dtype != np.int32 or program.ndim != 2 or program.shape[1] != 4 or not 1 <= program.shape[0] <= MAX_PROGRAM:
        raise ValueError(f"program: int32 [K, 4], 1 <= K <= {MAX_PROGRAM}")
    depth = 0
    for op, col, slot, count in program.tolist():
        if op in (AND, OR):
            depth -= 1
            if depth < 1:
                raise ValueError("program: AND/OR needs two operands")
        elif op == NOT:
            if depth < 1:
                raise ValueError("program: NOT needs an operand")
        elif op in (IS_NULL, IS_NOT_NULL):
            if not 0 <= col < 5:
                raise ValueError(f"program: column {col}")
            depth += 1
        elif LT <= op <= IN:
            if not 0 <= col < 4 or slot < 0 or (op == IN and (col > COL_B or count < 1)):
                raise ValueError(f"program: bad comparison {(op, col, slot, count)}")
            depth += 1
        else:
            raise ValueError(f"program: opcode {op}")
    if depth != 1:
        raise ValueError("program: must leave exactly one result")


@dataclass
class Instance:
    """One batch: the kernel (``__init__`` untimed), the read-only views it reads, the op's
    writable views of the same memory (for the patches)."""

    kernel: Any
    n: int
    ro: dict[str, np.ndarray]
    rw: dict[str, np.ndarray]
    _maps: tuple[mmap.mmap, ...]
    _out: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)   # per fill: allocated once
    _dirty: dict[int, dict[str, int]] = field(default_factory=dict)       # per fill: extents to refill


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    n = int(arrays["a"].size)
    for name, dtype in VALUE_DTYPES.items():
        if arrays[name].dtype != dtype or arrays[name].shape != (n,):
            raise ValueError(f"{name}: {dtype} [{n}]")
    off, data, valid = arrays["s_offsets"], arrays["s_bytes"], arrays["validity"]
    if off.dtype != np.int32 or off.shape != (n + 1,) or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError("s_offsets int32 [N+1], s_bytes uint8")
    if off[0] != 0 or int(off[-1]) != data.size or np.any(np.diff(off.astype(np.int64)) < 0):
        raise ValueError("s_offsets: from 0, non-decreasing, ending at len(s_bytes)")
    if valid.dtype != np.uint64 or valid.shape != (5, words_for(n)):
        raise ValueError(f"validity: uint64 [5, {words_for(n)}]")
    if n % 64 and np.any(valid[:, -1] >> np.uint64(n % 64)):
        raise ValueError("validity: bits past N must be 0")
    validate_program(arrays["program"])
    ro: dict[str, np.ndarray] = {}
    rw: dict[str, np.ndarray] = {}
    maps: list[mmap.mmap] = []
    for name in ("a", "b", "x", "y", "s_offsets", "s_bytes", "validity"):
        r, w, m = read_only_copy(arrays[name].reshape(-1), f"predicate-{name}")
        ro[name], rw[name] = r, w
        maps.extend(m)
    ro["validity"] = ro["validity"].reshape(5, words_for(n))
    return Instance(kernels.PredicateFilter(np.ascontiguousarray(arrays["program"])), n, ro, rw, tuple(maps))


def _sizes(inst: Instance) -> dict[str, tuple[int, int]]:
    """Per buffer: (declared size, guard) in elements; validity is per column (rows of words)."""
    n = inst.n
    return {"a": (n, GUARD_ROWS), "b": (n, GUARD_ROWS), "x": (n, GUARD_ROWS), "y": (n, GUARD_ROWS),
            "s_offsets": (n + 1, GUARD_ROWS), "s_bytes": (int(inst.ro["s_bytes"].size), GUARD_BYTES),
            "validity": (words_for(n), GUARD_ROWS // 4)}


def _outputs(inst: Instance, fill: np.uint8, whole: bool) -> dict[str, np.ndarray]:
    """The output buffers for a run over ``fill``, allocated once per instance and fill (a fresh
    ~30 MB allocation per call would cost its page faults on every call, the same for every
    kernel) and poisoned before every call: whole (``whole``, the battery), or (timed calls) from
    the start through what the previous call declared it wrote, the rest still holding the poison
    unless a kernel wrote past its declared output there, which then fails this call's check too
    (a 30 MB refill per call would be most of a low-selectivity op's time, for every kernel)."""
    key = int(fill)
    out = inst._out.get(key)
    if out is None:
        out = {}
        for name, (size, guard) in _sizes(inst).items():
            dtype: np.dtype[Any] = np.dtype(np.int32) if name == "s_offsets" else np.dtype(np.uint8) if name == "s_bytes" else \
                np.dtype(np.uint64) if name == "validity" else VALUE_DTYPES[name]
            out[name] = np.empty((5, size + guard) if name == "validity" else (size + guard,), dtype=dtype)
        inst._out[key] = out
        whole = True
    dirty = inst._dirty.get(key, {})
    for name, buf in out.items():
        if whole or name not in dirty:
            buf.view(np.uint8).fill(fill)
        elif name == "validity":
            buf[:, :dirty[name]].view(np.uint8).fill(fill)
        else:
            buf[:dirty[name]].view(np.uint8).fill(fill)
    return out


def _mark_dirty(inst: Instance, fill: np.uint8, count: int, out: dict[str, np.ndarray]) -> None:
    """What the next timed call must refill: the declared output of this one (everything when the
    count or the string end is invalid)."""
    sizes = _sizes(inst)
    end = int(out["s_offsets"][count]) if count >= 0 else -1
    if count < 0 or not 0 <= end <= sizes["s_bytes"][0]:
        inst._dirty.pop(int(fill), None)
        return
    sel = selected_sizes(count, end)
    inst._dirty[int(fill)] = {name: sel[name] for name in sizes}


def _count(value: Any, n: int) -> int:
    """The kernel's returned count, or -1 when it is not an integer in 0..N (a failure, not a crash)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) <= n:
        return int(value)
    return -1


def _run(inst: Instance, arrays: dict[str, np.ndarray], fill: np.uint8, whole: bool = True
         ) -> tuple[int, dict[str, np.ndarray]]:
    pos = arrays["patch_pos"]
    saved = {c: inst.rw[c][pos].copy() for c in VALUE_DTYPES}
    for c in VALUE_DTYPES:
        inst.rw[c][pos] = arrays[f"patch_{c}"]
    try:
        out = _outputs(inst, fill, whole)
        sizes = _sizes(inst)
        ro = inst.ro
        got = inst.kernel.filter(ro["a"], ro["b"], ro["x"], ro["y"], ro["s_offsets"], ro["s_bytes"], ro["validity"],
                                 arrays["lits_i"], arrays["lits_f"],
                                 *(out[c][:sizes[c][0]] for c in ("a", "b", "x", "y", "s_offsets", "s_bytes")),
                                 out["validity"][:, :sizes["validity"][0]])
    finally:
        for c in VALUE_DTYPES:
            inst.rw[c][pos] = saved[c]
    count = _count(got, inst.n)
    _mark_dirty(inst, fill, count, out)
    return count, out


def _check(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The battery's op: two runs over complementary fills; the count and every buffer whole."""
    res: dict[str, np.ndarray] = {}
    for tag, fill in zip("ab", CHECK_FILLS):
        count, out = _run(inst, arrays, fill)
        res[f"count_{tag}"] = np.array([count], dtype=np.int64)
        for name, buf in out.items():
            res[f"{name}_{tag}"] = buf.copy()
    return res


def probe_positions(fractions: np.ndarray, selected: int, size: int) -> np.ndarray:
    """Sample positions from the call's secret fractions (uint32): the first half within the
    ``selected`` part, the second half anywhere in the ``size``-element buffer (guards excluded)."""
    half = fractions.size // 2
    f = fractions.astype(np.uint64)
    inside = (f[:half] * np.uint64(selected)) >> np.uint64(32)
    anywhere = (f[half:] * np.uint64(size)) >> np.uint64(32)
    return np.concatenate([inside, anywhere]).astype(np.int64)


def selected_sizes(count: int, bytes_end: int) -> dict[str, int]:
    return {"a": count, "b": count, "x": count, "y": count, "s_offsets": count + 1, "s_bytes": bytes_end,
            "validity": words_for(count)}


def _speed(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The timed op: one run; the count, samples of every buffer and the guards."""
    count, out = _run(inst, arrays, POISON_BYTE, whole=False)
    sizes = _sizes(inst)
    res = {"count": np.array([count], dtype=np.int64)}
    if count < 0:
        return res
    end = int(out["s_offsets"][count])
    bytes_end = end if 0 <= end <= sizes["s_bytes"][0] else 0
    res["bytes_end"] = np.array([end], dtype=np.int64)
    sel = selected_sizes(count, bytes_end)
    for name, buf in out.items():
        size = sizes[name][0]
        if size == 0:
            continue
        at = probe_positions(arrays["probe"], sel[name], size) if sel[name] else \
            probe_positions(arrays["probe"], size, size)
        res[f"{name}_at"] = buf[:, at] if name == "validity" else buf[at]
        res[f"{name}_guard"] = buf[:, size:] if name == "validity" else buf[size:]
    return res


OPS = {"check": _check, "speed": _speed}
