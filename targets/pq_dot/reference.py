"""The pq-dot oracle: Lance's f32 operations, in Lance's order, written to be trusted by reading,
plus the error bounds the checks allow around it.

Upstream: ``build_distance_table_dot`` (lance-index/src/vector/pq/distance.rs) computes, per
sub-vector m, ``dot_distance_batch(q_m, codebook_m)`` = ``1 − dot`` with lance-linalg's
``dot_scalar::<f32, 16>`` (the remainder after 16-wide chunks summed in order, 16 lane sums
accumulated over the chunks, dot = remainder_sum + (lane sums added in order));
``compute_pq_distance`` adds table entries sub-vector by sub-vector, m ascending, into f32
accumulators from 0; ``PQDistCalculator::distance_all`` (pq/storage.rs, Dot branch) subtracts
``M as f32 − 1.0`` from each sum. Every numpy operation of the oracle is an element-wise f32
operation, so its rounding is exactly that of Lance's portable kernel; the error bounds at the end
are float64.
"""

from __future__ import annotations

import numpy as np

from targets.pq_dot.target import NUM_CENTROIDS, PqShape

LANES = 16
# Unit roundoff of float32: one rounding moves a value by at most UNIT·|value|.
UNIT = 2.0**-24
ABS_TOL = 1e-4


def dot_rows(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``dot_scalar::<f32, 16>`` from each ``x[m]`` (f32[M, sd]) to each row of ``centroids[m]``
    (f32[M, 256, sd]): f32[M, 256]. All M sub-vectors at once, each value in Lance's order."""
    sd = x.shape[-1]
    full = sd - sd % LANES
    prod = centroids * x[:, None, :]                           # f32, no fused multiply-add
    remainder = np.zeros(centroids.shape[:2], dtype=np.float32)
    for d in range(full, sd):
        remainder += prod[:, :, d]
    lanes = np.zeros((*centroids.shape[:2], LANES), dtype=np.float32)
    for start in range(0, full, LANES):
        lanes += prod[:, :, start:start + LANES]
    lane_total = np.zeros(centroids.shape[:2], dtype=np.float32)
    for lane in range(LANES):
        lane_total += lanes[:, :, lane]
    return remainder + lane_total


def dot_batch(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``dot_scalar::<f32, 16>`` from ``x`` (f32[sd]) to each row of ``centroids`` (f32[256, sd])."""
    return dot_rows(x[None, :], centroids[None])[0]


def distance_table(shape: PqShape, codebook: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``1 − dot`` per sub-vector and centroid, f32[M*256] (``dot_distance_batch``)."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    dots = dot_rows(query.reshape(m_count, sd), codebook.reshape(m_count, NUM_CENTROIDS, sd))
    return (np.float32(1.0) - dots).reshape(-1)


def code_columns(shape: PqShape, codes_aos: np.ndarray, num_vectors: int) -> np.ndarray:
    """Codes as one contiguous row per sub-vector (u8[m, n]): ``storage.rs::transpose``."""
    return np.ascontiguousarray(codes_aos.reshape(num_vectors, shape.num_sub_vectors).T)


def flat_index(columns: np.ndarray) -> np.ndarray:
    """Table positions ``256·m + code`` (intp[m, n]): the same lookups, gathered faster."""
    offsets = (np.arange(columns.shape[0], dtype=np.intp) * NUM_CENTROIDS)[:, None]
    return columns.astype(np.intp) + offsets


def distances_from_flat(table: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``compute_pq_distance`` (f32 accumulators from 0, m ascending), then ``v − (M as f32 − 1)``."""
    acc = np.zeros(flat.shape[1], dtype=np.float32)
    for m in range(flat.shape[0]):
        acc += table.take(flat[m])
    return acc - np.float32(flat.shape[0] - 1)


def distances(shape: PqShape, table: np.ndarray, codes_aos: np.ndarray, num_vectors: int) -> np.ndarray:
    return distances_from_flat(table, flat_index(code_columns(shape, codes_aos, num_vectors)))


# --- error bounds ----------------------------------------------------------------------------------
#
# Any legal evaluation order (BLAS, einsum, FMA, pairwise or split accumulators) may differ from the
# reference by a bounded amount; a relative bound on the result is not one, because dot products
# and the final −(M−1) cancel. Each bound below is Higham's for a sum: n roundings, each at most
# UNIT times the sum of the magnitudes of the terms, between one order and the exact value. The
# kernel and the reference are two such orders, so they may differ by twice that: worst cases are
# real here (small terms added to a large partial sum are rounded away in the same direction; on
# large_dynamic_range tables even the correctly rounded dot sits 0.59 of a bound from Lance's).
ORDERS = 2


def table_slack(shape: PqShape, codebook: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Per table entry, one order's bound: (sub_dim + 1)·UNIT·(1 + Σ_d |q_d·c_d|) — sub_dim
    roundings of the dot, one of ``1 − dot``. float64, layout [M*256]."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    cb = np.abs(codebook.reshape(m_count, NUM_CENTROIDS, sd).astype(np.float64))
    q = np.abs(query.reshape(m_count, sd, 1).astype(np.float64))
    return ((sd + 1) * UNIT * (1.0 + np.matmul(cb, q)[:, :, 0])).reshape(-1)


def table_tolerance(slack: np.ndarray) -> np.ndarray:
    return ABS_TOL + ORDERS * slack


def distance_weights(table: np.ndarray, slack: np.ndarray, num_sub_vectors: int) -> np.ndarray:
    """Per table entry, its share of a distance's tolerance: M·UNIT·|table| (the sum's roundings)
    plus the entry's slack (the two tables differ too, and the sum carries that), for both orders."""
    return ORDERS * (num_sub_vectors * UNIT * np.abs(table.astype(np.float64)) + slack)


def distance_tolerance(weights: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """tol_j = 1e-4 + 2·M·UNIT·(M − 1) + Σ_m weights[m, code_mj], ``flat`` from ``flat_index``.
    The distance is a sum of M + 1 terms (M entries and −(M−1)) in any order, so the −(M−1) term
    counts in the magnitude sum too: a kernel may start its accumulators at −(M−1) instead of
    subtracting at the end."""
    m_count = flat.shape[0]
    tol = np.full(flat.shape[1], ABS_TOL + ORDERS * m_count * UNIT * (m_count - 1))
    for m in range(m_count):
        tol += weights.take(flat[m])
    return tol
