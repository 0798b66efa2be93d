"""The ivf-partition oracle: Lance's f32 operations, in Lance's order, written to be trusted by reading.

Upstream (lance-index/src/vector/kmeans.rs ``kmeans_find_partitions``): the distances from the
query to every centroid, ``l2_distance_batch`` (lance-linalg ``l2_scalar::<f32, 16>``) or
``dot_distance_batch`` (``1 − dot_scalar::<f32, 16>``), then ``sort_to_indices(dists, None,
Some(nprobes))``: ascending, ties in no particular order. Both scalar kernels sum the remainder
after the last full 16-wide chunk first, in order, keep 16 lane sums over the chunks, and return
remainder + (lane sums added in order). Cosine is L2 on the query normalised by lance-linalg's
``normalize``: ``x / sqrt(Σx²)``, the sum sequential in f32, then a division (not a reciprocal
multiply). Every numpy operation below is an element-wise f32 operation or numpy's sequential
``cumsum``, so the rounding is exactly Lance's.
"""

from __future__ import annotations

import numpy as np

LANES = 16


def lane_sums(terms: np.ndarray) -> np.ndarray:
    """Row sums of ``terms`` (f32[rows, dim]) in the order of l2_scalar/dot_scalar::<f32, 16>."""
    rows, dim = terms.shape
    full = dim - dim % LANES
    remainder = np.zeros(rows, dtype=np.float32)
    for d in range(full, dim):
        remainder += terms[:, d]
    lanes = np.zeros((rows, LANES), dtype=np.float32)
    for start in range(0, full, LANES):
        lanes += terms[:, start:start + LANES]
    lane_total = np.zeros(rows, dtype=np.float32)
    for lane in range(LANES):
        lane_total += lanes[:, lane]
    return remainder + lane_total


def l2_distances(query: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 from ``query`` (f32[dim]) to each row of ``centroids`` (f32[nlist, dim])."""
    diff = query[None, :] - centroids                  # l2_scalar: from (the query) - to
    return lane_sums(diff * diff)                      # f32, no fused multiply-add


def dot_distances(query: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``1 − q·c`` for each row of ``centroids``."""
    return np.float32(1.0) - lane_sums(centroids * query[None, :])


def normalize(query: np.ndarray) -> np.ndarray:
    """lance-linalg ``normalize``: ``x / sqrt(Σx²)``, the sum sequential from 0 in f32."""
    norm = np.sqrt(np.cumsum(query * query, dtype=np.float32)[-1])
    return query / norm


def distances(query: np.ndarray, centroids: np.ndarray, distance_type: str) -> np.ndarray:
    """The distances upstream sorts: f32[nlist], smaller is nearer."""
    if distance_type == "l2":
        return l2_distances(query, centroids)
    if distance_type == "dot":
        return dot_distances(query, centroids)
    if distance_type == "cosine":
        return l2_distances(normalize(query), centroids)
    raise ValueError(f"unknown distance type {distance_type!r}")


def magnitudes(query: np.ndarray, centroids: np.ndarray, distance_type: str, dists: np.ndarray) -> np.ndarray:
    """The summed magnitude of the terms behind each distance (f64[nlist]): the scale any legal
    reordering's rounding error is relative to. For L2 and cosine that is the distance itself (its
    terms are squares); for dot it is 1 + Σ|q_i·c_i|, far above |1 − q·c| when the products cancel."""
    if distance_type == "dot":
        return 1.0 + np.einsum("ij,j->i", np.abs(centroids), np.abs(query)).astype(np.float64)   # no BLAS threads
    return np.abs(dists.astype(np.float64))


def probe_count(nlist: int, nprobes: int | None) -> int:
    """How many partitions a call returns: ``min(nprobes or nlist, nlist)``, as upstream."""
    return nlist if nprobes is None else min(nprobes, nlist)


def find_partitions(query: np.ndarray, centroids: np.ndarray, distance_type: str,
                    nprobes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The nearest partitions, ties broken by id (upstream leaves tie order unspecified)."""
    dists = distances(query, centroids, distance_type)
    order = np.lexsort((np.arange(dists.size), dists))[:probe_count(dists.size, nprobes)]
    return order.astype(np.uint32), dists[order]
