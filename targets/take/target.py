"""take's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one dataset (Lance's fragments, their columns already decoded: ``__init__`` is
untimed): ``frag_ids`` uint32[F] (increasing; gaps are fragments that no longer exist),
``frag_rows`` int64[F+1] (fragment k holds dataset rows ``frag_rows[k]:frag_rows[k+1]``, its row
offsets 0..len-1), ``deleted`` uint8[N] (1 = the row is deleted: a fragment read does not return
it) and three columns: ``i64`` int64[N], ``vec`` float32[N, dim] (a FixedSizeList<f32>), and a
utf8 column ``str_offsets`` int32[N+1] (from 0) + ``str_bytes`` uint8.

A call is one request of row addresses (uint64[M], ``fragment_id << 32 | row_offset``, any order,
duplicates allowed, fresh per call) and the sizes of its outputs, which the runner computes from
the request and the dataset before the call: U unique addresses, G fragment groups, M' rows that
survive (requests whose row is missing are dropped) and the utf8 bytes B. The op allocates every
output at exactly its size plus a guard past the end, prefilled with a poison byte, and passes
the kernel views of exactly the declared size. A kernel that writes short leaves poison in its
output; one that writes past the end leaves its bytes in the guard; both fail the check and
nothing crashes.

Two ops: ``check`` (the battery) runs the kernel twice, over two complementary fills (0xFF, then
0x00), and returns every buffer whole, guards included. ``speed`` (the timed op) runs it once over
the fill 0xA5 and returns a keyed digest of every buffer (guards included), computed here after
the kernel with a key drawn per call and never shown to the kernel; the runner compares it with
the digest of the oracle's buffers. Workers import only this module (plus the harness).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import digest_buffers, immutable

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "Take": {
        "__init__": ["self", "frag_ids", "frag_rows", "deleted", "i64", "vec", "str_offsets", "str_bytes"],
        "take": ["self", "row_addrs", "out"],
    },
}

GUARD_BYTES = 4096                              # poison bytes past every declared output
CHECK_FILLS = (0xFF, 0x00)                      # the battery's two runs: every bit flipped
SPEED_FILL = 0xA5
# name -> (dtype, size key: the output's rows are that many of the call's sizes, +1 for offsets)
OUTPUTS: dict[str, tuple[str, str, int]] = {
    "flags": ("uint8", "two", 0),               # [sorted, contiguous] (check_row_addrs)
    "uniq_addrs": ("uint64", "U", 0),           # sorted unique requested addresses
    "frag_ids": ("uint32", "G", 0),             # fragment id of each group of uniq_addrs
    "frag_bounds": ("int64", "G", 1),           # [G+1]: group g is uniq_addrs[b[g]:b[g+1]]
    "remap": ("uint64", "M", 0),                # position in the returned rows of each kept request
    "i64": ("int64", "M", 0),
    "vec": ("float32", "M", 0),                 # [M', dim]
    "str_offsets": ("int32", "M", 1),           # [M'+1] from 0
    "str_bytes": ("uint8", "B", 0),
}
SIZE_KEYS = ("U", "G", "M", "B")                # the call's ``sizes`` int64[4], in this order


def output_shapes(sizes: np.ndarray, dim: int) -> dict[str, tuple[int, ...]]:
    """Each output's declared shape from the call's sizes [U, G, M', B]."""
    n = dict(zip(SIZE_KEYS, (int(v) for v in sizes)), two=2)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (_, key, extra) in OUTPUTS.items():
        rows = n[key] + extra
        shapes[name] = (rows, dim) if name == "vec" else (rows,)
    return shapes


def allocate(shapes: dict[str, tuple[int, ...]], fill: int) -> dict[str, np.ndarray]:
    """Every output as a whole buffer (declared elements, then at least GUARD_BYTES, a whole
    number of 8-byte words), every byte the fill."""
    out = {}
    for name, shape in shapes.items():
        dtype = np.dtype(OUTPUTS[name][0])
        nbytes = -(-(int(np.prod(shape)) * dtype.itemsize + GUARD_BYTES) // 8) * 8
        out[name] = np.full(nbytes, fill, dtype=np.uint8)
    return out


def declared(buffers: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The views of exactly the declared outputs the kernel gets."""
    views = {}
    for name, shape in shapes.items():
        dtype = np.dtype(OUTPUTS[name][0])
        count = int(np.prod(shape))
        views[name] = buffers[name][:count * dtype.itemsize].view(dtype).reshape(shape)
    return views


def digest(buffers: dict[str, np.ndarray], key: np.ndarray) -> np.ndarray:
    """The keyed digest of every output buffer (guards included), uint64[len(OUTPUTS)]."""
    return digest_buffers([buffers[name] for name in OUTPUTS], key)


@dataclass
class Instance:
    kernel: Any
    dim: int


DATASET = ("frag_ids", "frag_rows", "deleted", "i64", "vec", "str_offsets", "str_bytes")


def validate_dataset(a: dict[str, np.ndarray]) -> None:
    want = {"frag_ids": "uint32", "frag_rows": "int64", "deleted": "uint8", "i64": "int64", "vec": "float32",
            "str_offsets": "int32", "str_bytes": "uint8"}
    for name, dtype in want.items():
        if a[name].dtype != np.dtype(dtype) or a[name].ndim != (2 if name == "vec" else 1):
            raise ValueError(f"{name}: {dtype}, {'2-d' if name == 'vec' else '1-d'}")
    f, rows = a["frag_ids"], a["frag_rows"]
    n = int(rows[-1]) if rows.size else 0
    if rows.size != f.size + 1 or rows[0] != 0 or np.any(np.diff(rows) < 0) or np.any(np.diff(f.astype(np.int64)) <= 0):
        raise ValueError("frag_rows [F+1] from 0, non-decreasing; frag_ids increasing")
    if a["deleted"].size != n or a["i64"].size != n or a["vec"].shape[0] != n or a["str_offsets"].size != n + 1:
        raise ValueError("every column has N rows")
    off = a["str_offsets"]
    if off[0] != 0 or np.any(np.diff(off) < 0) or int(off[-1]) != a["str_bytes"].size:
        raise ValueError("str_offsets from 0, non-decreasing, ending at len(str_bytes)")


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    validate_dataset(arrays)
    # Memory no one can make writable: the kernel can neither keep state in the dataset nor change it.
    return Instance(kernels.Take(*(immutable(arrays[name]) for name in DATASET)), int(arrays["vec"].shape[1]))


def _run(inst: Instance, arrays: dict[str, np.ndarray], fill: int) -> dict[str, np.ndarray]:
    addrs, sizes = arrays["row_addrs"], arrays["sizes"]
    if addrs.dtype != np.uint64 or addrs.ndim != 1 or sizes.dtype != np.int64 or sizes.shape != (4,) or np.any(sizes < 0):
        raise ValueError("row_addrs uint64[M], sizes int64[4] >= 0")
    # Upstream gets ``&[u64]``: a kernel must not sort the request in place and skip the copy.
    addrs = immutable(addrs)
    shapes = output_shapes(sizes, inst.dim)
    buffers = allocate(shapes, fill)
    inst.kernel.take(addrs, declared(buffers, shapes))
    return buffers


def _check(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for tag, fill in zip("ab", CHECK_FILLS):
        for name, buf in _run(inst, arrays, fill).items():
            out[f"{name}_{tag}"] = buf
    return out


def _speed(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"digest": digest(_run(inst, arrays, SPEED_FILL), arrays["key"])}


OPS = {"check": _check, "speed": _speed}
