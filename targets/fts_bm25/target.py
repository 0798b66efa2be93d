"""fts-bm25's fixed types and the op the worker runs around each kernel call (immutable in a run).

The op is what the runner times: one ``search`` call, Lance's per-partition full-text search
for each query of a small batch (each query's posting lists scored by BM25, its top k by score),
into output buffers allocated here: doc ids -1, scores NaN and counts -1, so an entry the kernel
never writes fails the check, and so does one it writes past a query's count. A batch holds
several queries only where one query is too short to time well against the harness's ~0.1 ms
round trip; its queries share no term. Workers import only this module (plus the harness), so it
imports nothing else from the project.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

BLOCK_SIZE = 128                  # postings per block (Lance's BitPacker4x::BLOCK_LEN)
NO_DOC = -1                       # out_ids' and out_counts' fill: an unwritten or past-the-count slot

# Modules kernels.py may import (the static policy's allowlist; the sandbox bundle holds no others
# from this project).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "Bm25Kernel": {
        "__init__": ["self", "num_docs", "total_tokens", "doc_lengths", "offsets", "doc_ids", "freqs",
                     "block_offsets", "block_max_scores", "max_scores"],
        "search": ["self", "query_terms", "query_offsets", "k", "out_ids", "out_scores", "out_counts"],
    },
}

# The index's arrays, as the kernel's __init__ takes them (after num_docs and total_tokens).
INDEX_ARRAYS = ("doc_lengths", "offsets", "doc_ids", "freqs", "block_offsets", "block_max_scores", "max_scores")


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """The kernel for one index (its ``__init__`` is untimed, as Lance's index load is)."""
    num_docs, total_tokens = int(params["num_docs"]), int(params["total_tokens"])
    if arrays["doc_lengths"].shape != (num_docs,):
        raise ValueError(f"doc_lengths has shape {arrays['doc_lengths'].shape}, expected ({num_docs},)")
    return kernels.Bm25Kernel(num_docs, total_tokens, *(arrays[name] for name in INDEX_ARRAYS))


def _search(kernel: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Query q's terms are ``query_terms[query_offsets[q]:query_offsets[q + 1]]``; ``k`` travels
    per call (the battery varies it). Each query's buffers hold k entries whatever its number of
    matching documents; the kernel writes how many it filled into ``out_counts[q]``."""
    k = int(arrays["k"])
    batch = arrays["query_offsets"].size - 1
    ids = np.full((batch, k), NO_DOC, dtype=np.int64)
    scores = np.full((batch, k), np.nan, dtype=np.float32)
    counts = np.full(batch, NO_DOC, dtype=np.int64)
    kernel.search(arrays["query_terms"], arrays["query_offsets"], k, ids, scores, counts)
    return {"ids": ids, "scores": scores, "counts": counts}


def k_array(k: int) -> np.ndarray:
    return np.array(k, dtype=np.int64)


OPS = {"check": _search, "speed": _search}
