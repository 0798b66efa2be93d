"""topk-merge's fixed types and the op the worker runs around each kernel call (immutable in a run).

The op is what the runner times: one ``merge`` call over a batch of queries, each the global top-k
of its runs (the per-partition results Lance's scanner feeds to DataFusion's ``SortExec`` with a
fetch). The runs' rows live in a pool of blocks sent once per workload (sending every call's rows
through the worker's pipe costs ~2 ns a byte, ~25 ns a row: ten times the merge itself), and a
call names, per query, the blocks that are its runs. Each call also patches a few pool rows with
fresh values (one per query, a winner of its query), so nothing a kernel could derive from the pool
survives from one call to the next. The kernel sees the pool through a read-only mapping it cannot
make writable; the op writes the patches through a second mapping of the same memory and undoes
them after the call.

Outputs are allocated here and filled with poison (a NaN pattern no input holds, the tombstone row
id ``u64::MAX``, count −1), so an entry the kernel never writes, or writes past its count, fails
the check. Workers import only this module (plus the harness), so it imports nothing else from the
project.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "TopkMergeKernel": {
        "__init__": ["self", "k"],
        "merge": ["self", "dists", "row_ids", "lengths", "runs", "out_dists", "out_row_ids", "out_counts"],
    },
}

# Poison for unwritten outputs: a negative quiet NaN with a payload no input uses, Lance's
# tombstone row address (u64::MAX, never a live row), and a count no query can have.
POISON_DIST_BITS = np.uint32(0xFFF0DEAD)
POISON_ROW_ID = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
POISON_COUNT = -1


@dataclass
class Instance:
    """One workload's kernel and its pool: ``dists``/``row_ids`` are the read-only views the kernel
    gets, ``_dists_rw``/``_rows_rw`` the op's writable views of the same pages (for the patches)."""

    kernel: Any
    k: int
    dists: np.ndarray
    row_ids: np.ndarray
    lengths: np.ndarray
    _dists_rw: np.ndarray
    _rows_rw: np.ndarray
    _maps: tuple[mmap.mmap, ...]


def _shared_pool(pool: tuple[np.ndarray, ...]) -> tuple[list[np.ndarray], list[np.ndarray], tuple[mmap.mmap, ...]]:
    """The pool's arrays copied into an anonymous memory file mapped twice: read-only (the kernel's
    views: their buffer is read-only, so numpy refuses to make them writable) and read-write (the
    op's, for the patches)."""
    offsets, size = [], 0
    for arr in pool:
        offsets.append(size)
        size += arr.nbytes + (-arr.nbytes) % 64
    fd = os.memfd_create("topk-merge-pool")
    try:
        os.ftruncate(fd, max(size, 1))
        rw = mmap.mmap(fd, max(size, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        ro = mmap.mmap(fd, max(size, 1), mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)

    def views(buf: mmap.mmap) -> list[np.ndarray]:
        return [np.frombuffer(buf, dtype=arr.dtype, count=arr.size, offset=off).reshape(arr.shape)
                for arr, off in zip(pool, offsets)]

    writable = views(rw)
    for dst, src in zip(writable, pool):
        dst[...] = src
    return views(ro), writable, (rw, ro)


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    """The kernel for one fetch ``k`` (its ``__init__`` is untimed) and the workload's pool."""
    k = int(params["k"])
    dists, row_ids, lengths = arrays["dists"], arrays["row_ids"], arrays["lengths"]
    if k < 1:
        raise ValueError(f"k = {k}: DataFusion's TopK needs k >= 1")
    if dists.dtype != np.float32 or row_ids.dtype != np.uint64 or lengths.dtype != np.int64:
        raise ValueError("pool dtypes: dists f32, row_ids u64, lengths i64")
    if dists.ndim != 2 or row_ids.shape != dists.shape or lengths.shape != dists.shape[:1]:
        raise ValueError(f"pool shapes {dists.shape} {row_ids.shape} {lengths.shape}")
    if np.any(lengths < 0) or np.any(lengths > dists.shape[1]):
        raise ValueError("block lengths must lie in 0..block size")
    (d_ro, r_ro, len_ro), (d_rw, r_rw, _), maps = _shared_pool((dists, row_ids, lengths))
    return Instance(kernels.TopkMergeKernel(k), k, d_ro, r_ro, len_ro, d_rw, r_rw, maps)


def empty_outputs(queries: int, k: int) -> dict[str, np.ndarray]:
    """Poison-filled outputs for ``queries`` queries of fetch ``k``."""
    return {"dists": np.full((queries, k), POISON_DIST_BITS, dtype=np.uint32).view(np.float32),
            "row_ids": np.full((queries, k), POISON_ROW_ID, dtype=np.uint64),
            "counts": np.full(queries, POISON_COUNT, dtype=np.int64)}


def _merge(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runs = arrays["runs"]
    pos = arrays["patch_pos"]
    out = empty_outputs(runs.shape[0], inst.k)
    flat_d, flat_r = inst._dists_rw.reshape(-1), inst._rows_rw.reshape(-1)
    saved_d, saved_r = flat_d[pos], flat_r[pos]
    flat_d[pos] = arrays["patch_dists"]
    flat_r[pos] = arrays["patch_row_ids"]
    try:
        inst.kernel.merge(inst.dists, inst.row_ids, inst.lengths, runs, out["dists"], out["row_ids"], out["counts"])
    finally:
        flat_d[pos] = saved_d
        flat_r[pos] = saved_r
    return out


OPS = {"check": _merge, "speed": _merge}
