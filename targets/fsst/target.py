"""fsst's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one page of a Lance 2.1 miniblock string column compressed with FSST: the page's
one symbol table (2,312 bytes, Lance's layout: ``reference.py``), its compressed strings
(``in_bytes``), their offsets (``in_offsets``, int32 or int64 [n+1], absolute into ``in_bytes``:
they need not start at 0) and the rows where its miniblock chunks start (``chunk_rows``, int64
[chunks+1], from 0 to n). The kernel's ``__init__`` gets the table (untimed); one call decodes the
whole page, chunk after chunk, as Lance does.

The compressed bytes are sent once per workload into a memory file mapped twice: the kernel
gets a read-only view; before every call the op patches fresh bytes in through the other mapping
(codes replaced by codes of the same symbol length, literals by any byte: the decoded size stays
the same) and undoes them after, so no call repeats an earlier one.

The decoded size is the page's (``params["out_size"]``, computed by the runner from the inputs).
The op hands the kernel views of exactly ``out_size`` bytes and n+1 offsets (the input offsets'
dtype) of buffers that go on with a guard zone; everything is prefilled with poison before every
call (offsets -1; bytes a fill). A kernel that writes short leaves poison in its output, one that
writes past the end leaves its bytes in the guard: both fail the check instead of crashing
anything. ``check`` (the battery) runs the kernel twice, over the byte fills 0xFF and 0x00, and
returns whole buffers, guards included. ``speed`` (the timed op) runs it once and returns a keyed
digest of both whole buffers (key drawn per call, never shown to the kernel): shipping the page
back through the worker's pipe would cost more than decoding it.

Workers import only this module (plus the harness), so it imports nothing else from the project.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import digest_buffers, read_only_copy

TABLE_SIZE = 8 + 256 * 8 + 256                 # FSST_SYMBOL_TABLE_SIZE
FSST_MAGIC = 0x46535354 << 32
GUARD_BYTES = 4096                             # poison past the declared bytes
GUARD_OFFSETS = 64                             # poison past the declared offsets
POISON_OFFSET = -1                             # never an offset
CHECK_FILLS = (np.uint8(0xFF), np.uint8(0x00))  # the battery's two runs: every bit flipped
SPEED_FILL = np.uint8(0xA5)
OFFSET_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "FsstPageDecoder": {
        "__init__": ["self", "symbol_table"],
        "decode": ["self", "in_bytes", "in_offsets", "chunk_rows", "out_offsets", "out_bytes"],
    },
}



def digest(out_bytes: np.ndarray, out_offsets: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The keyed digest (uint64[2]) of the two whole buffers, guards included."""
    return digest_buffers([out_bytes, out_offsets], key)


def empty_outputs(out_size: int, rows: int, dtype: np.dtype[Any], fill: np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """The poisoned buffers: bytes (``out_size`` + the guard, rounded up to 8 bytes) and offsets
    (rows + 1 + the guard) of ``dtype``."""
    nbytes = -(-(out_size + GUARD_BYTES) // 8) * 8
    return (np.full(nbytes, fill, dtype=np.uint8),
            np.full(rows + 1 + GUARD_OFFSETS, POISON_OFFSET, dtype=dtype))


@dataclass
class Instance:
    kernel: Any
    rows: int
    out_size: int
    in_bytes: np.ndarray                       # the kernel's read-only view
    in_offsets: np.ndarray
    chunk_rows: np.ndarray
    _bytes_rw: np.ndarray
    _maps: tuple[mmap.mmap, ...]
    _out: tuple[np.ndarray, np.ndarray]        # allocated once, poisoned afresh before every call



def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    table, data, offsets, chunks = (arrays[k] for k in ("symbol_table", "in_bytes", "in_offsets", "chunk_rows"))
    out_size = int(params["out_size"])
    if table.dtype != np.uint8 or table.shape != (TABLE_SIZE,):
        raise ValueError(f"symbol_table: uint8 [{TABLE_SIZE}]")
    if int.from_bytes(table[:8].tobytes(), "little") & FSST_MAGIC != FSST_MAGIC:
        raise ValueError("symbol_table: no FSST magic")
    if data.dtype != np.uint8 or data.ndim != 1 or offsets.dtype not in OFFSET_DTYPES or offsets.ndim != 1:
        raise ValueError("in_bytes uint8 [B], in_offsets int32|int64 [n+1]")
    rows = offsets.size - 1
    if rows < 0 or np.any(np.diff(offsets.astype(np.int64)) < 0) or (rows >= 0 and offsets.size and (
            int(offsets[0]) < 0 or int(offsets[-1]) > data.size)):
        raise ValueError("in_offsets: non-decreasing, inside in_bytes")
    if (chunks.dtype != np.int64 or chunks.ndim != 1 or chunks.size < 1 or chunks[0] != 0 or chunks[-1] != rows
            or np.any(np.diff(chunks) < 0)):
        raise ValueError("chunk_rows: int64, non-decreasing from 0 to n")
    if not 0 <= out_size < 1 << 31:
        raise ValueError(f"out_size {out_size}: 0..2**31-1 bytes")
    ro, rw, maps = read_only_copy(data, "fsst-page")
    kernel = kernels.FsstPageDecoder(table)
    return Instance(kernel, rows, out_size, ro, offsets, chunks, rw, maps,
                    empty_outputs(out_size, rows, offsets.dtype, SPEED_FILL))


def _run(inst: Instance, arrays: dict[str, np.ndarray], fill: np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """One kernel call on the call's patched page: the whole (bytes, offsets) buffers, guards included."""
    pos, new = arrays["patch_pos"], arrays["patch_bytes"]
    data, offsets = inst._out
    data.fill(fill)
    offsets.fill(POISON_OFFSET)
    saved = inst._bytes_rw[pos]
    inst._bytes_rw[pos] = new
    try:
        inst.kernel.decode(inst.in_bytes, inst.in_offsets, inst.chunk_rows, offsets[:inst.rows + 1],
                           data[:inst.out_size])
    finally:
        inst._bytes_rw[pos] = saved
    return data, offsets


def _check(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for tag, fill in zip("ab", CHECK_FILLS):
        data, offsets = _run(inst, arrays, fill)
        out[f"bytes_{tag}"], out[f"offsets_{tag}"] = data.copy(), offsets.copy()
    return out


def _speed(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    data, offsets = _run(inst, arrays, SPEED_FILL)
    return {"digest": digest(data, offsets, arrays["key"])}


OPS = {"check": _check, "speed": _speed}
