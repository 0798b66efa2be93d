"""posting-intersect's oracle, written to be trusted by reading.

A query's answer is the set of doc ids present in every one of its lists, ascending: the docs of
the shortest list that a binary search finds in each other list. Doc ids are integers, so the
answer is exact and the check is bit for bit (tests cross-check it against ``np.intersect1d`` and
a two-finger merge).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def query_lists(doc_ids: np.ndarray, list_offsets: np.ndarray, terms: np.ndarray,
                shifts: np.ndarray) -> list[np.ndarray]:
    """One query's lists as int64 doc ids: index list ``terms[j]`` plus ``shifts[j]``."""
    return [doc_ids[list_offsets[t]:list_offsets[t + 1]].astype(np.int64) + np.int64(s)
            for t, s in zip(terms.tolist(), shifts.tolist())]


def intersect(lists: Sequence[np.ndarray]) -> np.ndarray:
    """The docs in every list (each sorted, unique), ascending, as uint32."""
    ordered = sorted(lists, key=len)
    found = ordered[0]
    for other in ordered[1:]:
        pos = np.searchsorted(other, found)
        hit = pos < other.size
        hit[hit] = other[pos[hit]] == found[hit]
        found = found[hit]
    return found.astype(np.uint32)


def answers(doc_ids: np.ndarray, list_offsets: np.ndarray, terms: np.ndarray,
            shifts: np.ndarray) -> list[np.ndarray]:
    """Every query's answer in a batch (``terms``/``shifts``: [Q, K])."""
    return [intersect(query_lists(doc_ids, list_offsets, terms[q], shifts[q])) for q in range(terms.shape[0])]
