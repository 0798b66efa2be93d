"""posting-intersect's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one posting-list index (T sorted, unique uint32 doc-id lists, flattened); its
``__init__`` is untimed, as Lance's index load. The op is one ``intersect`` call on a batch of
fresh AND queries: query q asks for the docs in every one of its K lists, list j being index list
``terms[q, j]`` with ``shifts[q, j]`` added to each doc id. The op allocates the output: one
slice per query of its shortest list's length, filled with a sentinel, and a count per query
filled with -1; the kernel writes each query's sorted result at the start of its slice and its
count. It then returns, per query, the count as written, the entries up to that count (clipped to
the slice) and how many entries past the count were written: a wrong count, a write past the
count or short of it fails the check, never the runner. Workers import only this module (plus the
harness), so it imports nothing else from the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import immutable

# Never a doc id: every shifted doc id is below 2**31 (as upstream's, which its AVX2 compare needs).
SENTINEL = np.uint32(0xFFFFFFFF)
MAX_DOC_ID = (1 << 31) - 1
MIN_CLAUSES, MAX_CLAUSES = 2, 8

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "PostingIntersect": {
        "__init__": ["self", "doc_ids", "list_offsets"],
        "intersect": ["self", "terms", "shifts", "out", "out_offsets", "counts"],
    },
}


@dataclass(frozen=True)
class Instance:
    kernel: Any
    lengths: np.ndarray          # int64[T]: each index list's length (the op sizes the output by it)


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    doc_ids, list_offsets = arrays["doc_ids"], arrays["list_offsets"]
    if doc_ids.dtype != np.uint32 or list_offsets.dtype != np.int64 or list_offsets.ndim != 1:
        raise ValueError("doc_ids must be uint32 and list_offsets 1-d int64")
    lengths = np.diff(list_offsets)
    if list_offsets.size != int(params["lists"]) + 1 or list_offsets[0] != 0 or list_offsets[-1] != doc_ids.size \
            or np.any(lengths < 0):
        raise ValueError("list_offsets do not delimit the doc_ids")
    return Instance(kernels.PostingIntersect(doc_ids, list_offsets), lengths)


def output_layout(lengths: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """Each query's output slice: out_offsets int64[Q+1], slice q of its shortest list's length."""
    offsets = np.zeros(terms.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths[terms].min(axis=1), out=offsets[1:])
    return offsets


def collect(out: np.ndarray, out_offsets: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """What the runner judges: the counts as written, the entries each count claims (clipped to
    its slice) and the entries written past each count. Vectorised over the queries: a batch's
    answers are small, its slices are not."""
    caps = np.diff(out_offsets)
    claimed = np.clip(counts, 0, caps)
    starts = out_offsets[:-1]
    written = np.zeros(counts.size, dtype=np.int64)            # non-sentinel entries per slice
    filled = caps > 0
    if filled.any():
        written[filled] = np.add.reduceat(out != SENTINEL, starts[filled], dtype=np.int64)
    first = np.cumsum(claimed) - claimed
    docs = out[np.repeat(starts - first, claimed) + np.arange(int(claimed.sum()))]
    unwritten = np.bincount(np.repeat(np.arange(counts.size), claimed)[docs == SENTINEL], minlength=counts.size)
    return {"counts": counts, "docs": docs, "overrun": written - (claimed - unwritten)}


def _intersect(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    terms, shifts = arrays["terms"], arrays["shifts"]
    out_offsets = output_layout(inst.lengths, terms)
    layout = immutable(out_offsets)          # collect() reads back the op's own layout
    out = np.full(int(out_offsets[-1]), SENTINEL, dtype=np.uint32)
    counts = np.full(terms.shape[0], -1, dtype=np.int64)
    inst.kernel.intersect(terms, shifts, out, layout, counts)
    return collect(out, out_offsets, counts)


OPS = {"check": _intersect, "speed": _intersect}
