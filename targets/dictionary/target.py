"""dictionary's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one dictionary (the page's, decoded once when Lance loads the page: ``__init__``
is untimed) and a pool of int32 indices sent once per workload. A call names its page: a window
``(start, n)`` of the pool, a few patched indices (fresh per call, so nothing a kernel could keep
from an earlier call survives: the op writes them through a second, writable mapping of the
pool and undoes them after the call; the kernel sees a read-only one), and the output's size,
which the runner computes from the page and the dictionary before the call. The op allocates the
outputs at exactly that size, plus a guard zone past the end; everything is prefilled with poison
(offsets 0xFFFFFFFF, which no offset below 2**31 can be; bytes 0xFF, a byte UTF-8 never uses), and
the kernel gets views of exactly the declared size. A kernel that writes short leaves poison in
its output; one that writes past the end (within the guard) leaves its bytes in the guard; both
fail the check instead of crashing anything.

Two ops: ``check`` (the correctness battery) runs the kernel twice, once over each of two
complementary byte fills (0xFF, then 0x00), and returns both outputs whole, guards included, so
an unwritten byte is caught whatever value it should have held. ``speed`` (the timed op) runs it
once and returns a keyed digest of every whole output buffer, guards included (the key is drawn
per call and never shown to the kernel), because shipping a ~12 MB page back through the worker's
pipe would cost more than decoding it; the runner compares it with the oracle's under the same key.

Workers import only this module (plus the harness), so it imports nothing else from the project.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import digest_buffers, read_only_copy

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "VarWidthDictDecoder": {
        "__init__": ["self", "dict_offsets", "dict_bytes"],
        "decode": ["self", "indices", "out_offsets", "out_bytes"],
    },
    "FixedWidthDictDecoder": {
        "__init__": ["self", "dictionary"],
        "decode": ["self", "indices", "out"],
    },
}

VALUE_WIDTH = 16                                  # fixed-width values: 128 bits (dict.rs)
POISON_OFFSET = np.uint32(0xFFFF_FFFF)            # never an offset: pages stay below 2**31 bytes
POISON_BYTE = np.uint8(0xFF)                      # never in UTF-8 text (the speed pages)
CHECK_FILLS = (np.uint8(0xFF), np.uint8(0x00))    # the battery's two runs: every bit flipped
GUARD_BYTES = 4096                                # past the declared bytes (and fixed rows)
GUARD_OFFSETS = 1024                              # past the declared offsets
MAX_PAGE_BYTES = (1 << 31) - 1
KINDS = ("varwidth", "fixed")


@dataclass
class Instance:
    """One workload's kernel, its kind, its dictionary size and its pool: ``pool`` is the
    read-only view the kernel's pages are cut from, ``_pool_rw`` the op's writable view of the
    same pages (for the patches)."""

    kernel: Any
    kind: str
    entries: int
    pool: np.ndarray
    _pool_rw: np.ndarray
    _maps: tuple[mmap.mmap, ...]
    dict_offsets: np.ndarray | None = None        # varwidth only: to recheck sizes in ``check``



def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    """The kernel for one dictionary (its ``__init__`` is untimed) and the workload's pool."""
    kind, pool = params.get("kind"), arrays["pool"]
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    if pool.dtype != np.int32 or pool.ndim != 1:
        raise ValueError("pool: int32 [P] dictionary indices")
    if kind == "varwidth":
        offsets, data = arrays["dict_offsets"], arrays["dict_bytes"]
        if offsets.dtype != np.uint32 or data.dtype != np.uint8 or offsets.ndim != 1 or data.ndim != 1:
            raise ValueError("dict_offsets uint32 [D+1] and dict_bytes uint8")
        entries = offsets.size - 1
        if entries < 1 or offsets[0] != 0 or int(offsets[-1]) != data.size or np.any(np.diff(offsets.astype(np.int64)) < 0):
            raise ValueError("dict_offsets: from 0, non-decreasing, ending at len(dict_bytes), D >= 1")
    else:
        dictionary = arrays["dictionary"]
        if dictionary.dtype != np.uint8 or dictionary.ndim != 2 or dictionary.shape[1] != VALUE_WIDTH:
            raise ValueError(f"dictionary: uint8 [D, {VALUE_WIDTH}]")
        entries = dictionary.shape[0]
        if entries < 1:
            raise ValueError("dictionary: D >= 1")
    if pool.size and (int(pool.min()) < 0 or int(pool.max()) >= entries):
        raise ValueError(f"pool: indices must lie in 0..{entries - 1}")
    ro, rw, maps = read_only_copy(pool, "dictionary-pool")
    if kind == "varwidth":
        kernel = kernels.VarWidthDictDecoder(arrays["dict_offsets"], arrays["dict_bytes"])
        return Instance(kernel, kind, entries, ro, rw, maps, arrays["dict_offsets"])
    return Instance(kernels.FixedWidthDictDecoder(arrays["dictionary"]), kind, entries, ro, rw, maps)


def _page(inst: Instance, arrays: dict[str, np.ndarray]) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(start, n, patch positions in the pool, patch values) of a call, validated."""
    start, n = (int(v) for v in arrays["window"])
    pos, idx = arrays["patch_pos"], arrays["patch_idx"]
    if start < 0 or n < 0 or start + n > inst.pool.size:
        raise ValueError(f"window ({start}, {n}) outside the pool of {inst.pool.size}")
    if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= n or idx.dtype != np.int32
                     or int(idx.min()) < 0 or int(idx.max()) >= inst.entries):
        raise ValueError("patches: positions in the window, int32 indices in the dictionary")
    return start, n, start + pos, idx


def _run(inst: Instance, arrays: dict[str, np.ndarray], fill: np.uint8) -> tuple[np.ndarray, ...]:
    """One kernel call on the call's page: the whole output buffers, guards included."""
    start, n, pos, idx = _page(inst, arrays)
    saved = inst._pool_rw[pos]
    inst._pool_rw[pos] = idx
    try:
        indices = inst.pool[start:start + n]
        if inst.kind == "varwidth":
            size = int(arrays["out_size"][0])
            if not 0 <= size <= MAX_PAGE_BYTES:
                raise ValueError(f"out_size {size}: 0..2**31-1 bytes")
            offsets = np.full(n + 1 + GUARD_OFFSETS, POISON_OFFSET, dtype=np.uint32)
            data = np.full(size + GUARD_BYTES, fill, dtype=np.uint8)
            inst.kernel.decode(indices, offsets[:n + 1], data[:size])
            return offsets, data
        out = np.full((n + GUARD_BYTES // VALUE_WIDTH, VALUE_WIDTH), fill, dtype=np.uint8)
        inst.kernel.decode(indices, out[:n])
        return (out,)
    finally:
        inst._pool_rw[pos] = saved


def _check(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The battery's op: two runs, each over one of the complementary fills; whole outputs."""
    if inst.kind == "varwidth":
        assert inst.dict_offsets is not None
        start, n, pos, idx = _page(inst, arrays)
        page = inst._pool_rw[start:start + n].copy()
        page[pos - start] = idx
        lengths = np.diff(inst.dict_offsets.astype(np.int64))
        if int(lengths[page.astype(np.int64)].sum()) != int(arrays["out_size"][0]):
            raise ValueError("out_size is not the decoded page's size (a harness bug)")
    out: dict[str, np.ndarray] = {}
    for tag, fill in zip("ab", CHECK_FILLS):
        if inst.kind == "varwidth":
            out[f"offsets_{tag}"], out[f"bytes_{tag}"] = _run(inst, arrays, fill)
        else:
            (out[f"values_{tag}"],) = _run(inst, arrays, fill)
    return out


def _speed(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The timed op: one run; the keyed digest of every whole output buffer, guards included."""
    return {"digest": digest(_run(inst, arrays, POISON_BYTE), arrays["key"])}


def digest(buffers: tuple[np.ndarray, ...], key: np.ndarray) -> np.ndarray:
    """uint64[2] (varwidth: offsets, bytes) or uint64[1] (fixed: values), guards included."""
    return digest_buffers(list(buffers), key)


OPS = {"check": _check, "speed": _speed}
