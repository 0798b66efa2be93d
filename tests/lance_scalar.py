"""Lance's scalar f32 kernels (lance-linalg ``l2_scalar`` / ``dot_scalar::<f32, LANES>``) ported
one numpy.float32 operation at a time, plus the random PQ inputs their bit-exact tests use.

The order: the remainder after the last full chunk of LANES summed first, in order, from 0; LANES
lane sums accumulated over the full chunks; result = remainder + (lane0 + lane1 + ...), the lane
sum a sequential fold from 0. The targets' oracles must match these bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from targets.pq_l2.target import NUM_CENTROIDS, PqShape

F32 = np.float32


def _lane_sum(term: Callable[[int], np.float32], n: int, lanes: int) -> np.float32:
    full = n - n % lanes
    s = F32(0.0)
    for i in range(full, n):
        s = F32(s + term(i))
    sums = [F32(0.0)] * lanes
    for start in range(0, full, lanes):
        for j in range(lanes):
            sums[j] = F32(sums[j] + term(start + j))
    total = F32(0.0)
    for j in range(lanes):
        total = F32(total + sums[j])
    return F32(s + total)


def l2_scalar(x: np.ndarray, y: np.ndarray, lanes: int = 16) -> np.float32:
    """Squared L2 distance, l2_scalar::<f32, LANES>(from=x, to=y)."""
    def term(i: int) -> np.float32:
        d = F32(x[i]) - F32(y[i])
        return F32(d * d)
    return _lane_sum(term, len(x), lanes)


def dot_scalar(x: np.ndarray, y: np.ndarray, lanes: int = 16) -> np.float32:
    """The dot product, dot_scalar::<f32, LANES>."""
    return _lane_sum(lambda i: F32(F32(x[i]) * F32(y[i])), len(x), lanes)


def normalize(x: np.ndarray) -> np.ndarray:
    """lance-linalg normalize: sqrt of the sequential f32 sum of x², then x / norm (a division)."""
    s = F32(0.0)
    for v in x:
        s = F32(s + F32(F32(v) * F32(v)))
    norm = F32(np.sqrt(s))
    return np.array([F32(F32(v) / norm) for v in x], dtype=F32)


def bits(a: object) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def rng_pq_case(shape: PqShape, n: int, seed: int, scale_spread: bool = False) -> tuple[np.ndarray, ...]:
    """A random codebook, query and codes; ``scale_spread`` multiplies elements by 10^-3..10^3."""
    rng = np.random.default_rng(seed)
    m, sd = shape.num_sub_vectors, shape.sub_dim
    codebook = rng.uniform(-1, 1, m * NUM_CENTROIDS * sd).astype(F32)
    query = rng.uniform(-1, 1, shape.dim).astype(F32)
    if scale_spread:
        codebook *= (10.0 ** rng.integers(-3, 4, codebook.size)).astype(F32)
        query *= (10.0 ** rng.integers(-3, 4, query.size)).astype(F32)
    codes = rng.integers(0, NUM_CENTROIDS, n * m).astype(np.uint8)
    return codebook, query, codes
