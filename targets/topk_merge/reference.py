"""topk-merge's oracle, written to be trusted by reading.

A query's answer is what Lance's ``SortExec([_distance ASC, _rowid ASC]).with_fetch(k)`` returns:
its rows (every run's valid prefix) ordered by (IEEE totalOrder of the f32 distance, u64 row id),
the first ``min(k, rows)`` of them, values copied bit for bit. totalOrder is the order of the
distance's bits read as a sign-magnitude integer: -NaN < -inf < ... < -0.0 < +0.0 < ... < +inf <
+NaN. ``topk`` is the definition for one query (a lexicographic sort); ``merge`` computes the same
for a whole call at once (the checks use it; the tests hold it to ``topk`` and to a pure-Python
sort).
"""

from __future__ import annotations

import numpy as np


def total_order_key(dists: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is totalOrder of the f32 ``dists``: negative values have
    every bit flipped (larger magnitude sorts first), the rest only the sign bit."""
    bits = dists.view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def query_rows(dists: np.ndarray, row_ids: np.ndarray, lengths: np.ndarray, runs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """One query's rows: the valid prefix of each of its blocks (``runs``), concatenated."""
    idx = [b * dists.shape[1] + np.arange(lengths[b]) for b in runs]
    flat = np.concatenate(idx) if idx else np.empty(0, dtype=np.int64)
    return dists.reshape(-1)[flat], row_ids.reshape(-1)[flat]


def topk(dists: np.ndarray, row_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``min(k, rows)`` of one query's rows in (totalOrder(dist), row id) order."""
    order = np.lexsort((row_ids, total_order_key(dists)))[:k]
    return dists[order], row_ids[order]


def merge(dists: np.ndarray, row_ids: np.ndarray, lengths: np.ndarray, runs: np.ndarray, k: int
          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every query's answer (``runs``: [queries, runs] block indices into the pool), all queries at
    once: ``topk`` of ``query_rows``, computed on a [queries, runs x width] grid where a row past
    its block's length gets a key above every real one. Only rows whose key is at most the
    query's k-th smallest key can be in its answer; those (every row tied with the k-th key
    included) are sorted by (query, key, row id) and each query keeps its first min(k, rows)."""
    queries, width = runs.shape[0], dists.shape[1]
    grid = runs.shape[1] * width
    present = (np.arange(width)[None, None, :] < lengths[runs][:, :, None]).reshape(queries, grid)
    keys = np.where(present, total_order_key(dists[runs].reshape(queries, grid)).astype(np.int64), np.int64(1 << 32))
    rows = row_ids[runs].reshape(queries, grid)
    cut = min(k, grid) - 1
    kth = np.partition(keys, cut, axis=1)[:, cut] if grid else np.zeros(queries, dtype=np.int64)
    q, col = np.nonzero(present & (keys <= kth[:, None]))
    order = np.lexsort((rows[q, col], keys[q, col], q))
    q, col = q[order], col[order]
    rank = np.arange(q.size) - np.searchsorted(q, q)           # position within its query
    keep = rank < k
    q, col = q[keep], col[keep]
    picked_d, picked_r = dists[runs].reshape(queries, grid)[q, col], rows[q, col]
    bounds = np.searchsorted(q, np.arange(queries + 1))
    return [(picked_d[a:b], picked_r[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def patched(dists: np.ndarray, row_ids: np.ndarray, call: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pool as a call sees it: copies with the call's patches written in."""
    d, r = dists.copy(), row_ids.copy()
    d.reshape(-1)[call["patch_pos"]] = call["patch_dists"]
    r.reshape(-1)[call["patch_pos"]] = call["patch_row_ids"]
    return d, r
