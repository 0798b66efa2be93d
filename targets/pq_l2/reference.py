"""The pq-l2 oracle: Lance's f32 operations, in Lance's order, written to be trusted by reading.

Upstream (lance-index/src/vector/pq/distance.rs): ``build_distance_table_l2`` computes, per
sub-vector m, ``l2_distance_batch(q_m, codebook_m)`` with lance-linalg's ``l2_scalar::<f32, 16>``
(the remainder after 16-wide chunks summed in order, 16 lane sums accumulated over the chunks,
result = remainder_sum + (lane sums added in order)); ``compute_pq_distance`` adds table entries
sub-vector by sub-vector, m ascending, into f32 accumulators. Every numpy operation below is an
element-wise f32 operation, so the rounding is exactly Lance's.
"""

from __future__ import annotations

import numpy as np

from targets.harness.pq import NUM_CENTROIDS, PqShape

LANES = 16


def l2_batch(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 from ``x`` (f32[sd]) to each row of ``centroids`` (f32[256, sd])."""
    sd = x.size
    full = sd - sd % LANES
    diff = centroids - x[None, :]
    sq = diff * diff                                           # f32, no fused multiply-add
    remainder = np.zeros(centroids.shape[0], dtype=np.float32)
    for d in range(full, sd):
        remainder += sq[:, d]
    lanes = np.zeros((centroids.shape[0], LANES), dtype=np.float32)
    for start in range(0, full, LANES):
        lanes += sq[:, start:start + LANES]
    lane_total = np.zeros(centroids.shape[0], dtype=np.float32)
    for lane in range(LANES):
        lane_total += lanes[:, lane]
    return remainder + lane_total


def distance_table(shape: PqShape, codebook: np.ndarray, query: np.ndarray) -> np.ndarray:
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m_count, NUM_CENTROIDS, sd)
    q = query.reshape(m_count, sd)
    table = np.empty((m_count, NUM_CENTROIDS), dtype=np.float32)
    for m in range(m_count):
        table[m] = l2_batch(q[m], cb[m])
    return table.reshape(-1)


def code_columns(shape: PqShape, codes_aos: np.ndarray, num_vectors: int) -> np.ndarray:
    """Codes as one contiguous row per sub-vector (u8[m, n]): the same values, gathered faster."""
    return np.ascontiguousarray(codes_aos.reshape(num_vectors, shape.num_sub_vectors).T)


def distances_from_columns(table: np.ndarray, columns: np.ndarray) -> np.ndarray:
    rows = table.reshape(columns.shape[0], NUM_CENTROIDS)
    acc = np.zeros(columns.shape[1], dtype=np.float32)
    for m in range(columns.shape[0]):
        acc += rows[m][columns[m]]
    return acc


def distances(shape: PqShape, table: np.ndarray, codes_aos: np.ndarray, num_vectors: int) -> np.ndarray:
    return distances_from_columns(table, code_columns(shape, codes_aos, num_vectors))


def top_k(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's top-k: the k smallest, ordered by (distance, id)."""
    n = distances.size
    idx = np.argpartition(distances, k - 1)[:k] if n > k else np.arange(n)
    order = np.lexsort((idx, distances[idx]))
    ids = idx[order].astype(np.int64)
    return ids, distances[ids].copy()
