"""PQ fixtures shared by pq-l2, pq-dot and pq-cosine: codebook training, encoding, cache layout.

One recipe behind every PQ fixture: k-means (random init + 2 Lloyd iterations, vectorised) on
the first 4,096 rows, seeded from the fixture's own seed, then every row encoded to its nearest
centroid in AoS layout. Each target brings its own distributions and battery queries; the
cached result is flat, ``battery/<shape>/<kind>/<name>`` and ``speed/<shape>/<dist>/<name>``.
Trusted side only: workers never import it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from targets.harness.pq import NUM_CENTROIDS, PqShape
from targets.harness.prng import CORRECTNESS_SEED, Stream, mix_seeds

TRAIN_ROWS = 4_096
LLOYD_ITERATIONS = 2


def _assign(sub: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Nearest centroid per row and sub-space: sub [M, R, sd], cb [M, 256, sd] -> [M, R]."""
    out = np.empty(sub.shape[:2], dtype=np.int64)
    block = max(1, (1 << 22) // (sub.shape[1] * NUM_CENTROIDS))   # bounds the [m, R, 256] temporary
    for lo in range(0, sub.shape[0], block):
        s, c = sub[lo:lo + block], cb[lo:lo + block]
        score = np.einsum("mkd,mkd->mk", c, c)[:, None, :] - 2.0 * np.matmul(s, c.transpose(0, 2, 1))
        out[lo:lo + block] = np.argmin(score, axis=2)
    return out


def train_codebook(shape: PqShape, train: np.ndarray, stream: Stream) -> np.ndarray:
    """Random init + Lloyd iterations, all sub-spaces at once. Returns f32 [M*256*sd]."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    sub = np.ascontiguousarray(train.reshape(-1, m_count, sd).transpose(1, 0, 2))     # [M, R, sd]
    rows = sub.shape[1]
    init = stream.integers(rows, m_count * NUM_CENTROIDS).reshape(m_count, NUM_CENTROIDS)
    cb = np.take_along_axis(sub, init[:, :, None], axis=1).astype(np.float32)       # [M, 256, sd]
    flat_offset = (np.arange(m_count) * NUM_CENTROIDS)[:, None]
    for _ in range(LLOYD_ITERATIONS):
        flat = (_assign(sub, cb) + flat_offset).ravel()
        counts = np.bincount(flat, minlength=m_count * NUM_CENTROIDS).reshape(m_count, NUM_CENTROIDS)
        sums = np.stack([np.bincount(flat, weights=sub[:, :, d].ravel(), minlength=m_count * NUM_CENTROIDS)
                         for d in range(sd)], axis=-1).reshape(m_count, NUM_CENTROIDS, sd)
        filled = counts > 0                       # an empty cluster keeps its old centroid
        cb[filled] = (sums[filled] / counts[filled][:, None]).astype(np.float32)
    return cb.reshape(-1)


def encode(shape: PqShape, codebook: np.ndarray, data: np.ndarray) -> np.ndarray:
    """uint8 codes in AoS layout [N][M], flattened."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    sub = np.ascontiguousarray(data.reshape(-1, m_count, sd).transpose(1, 0, 2))
    codes = _assign(sub, codebook.reshape(m_count, NUM_CENTROIDS, sd))
    return np.ascontiguousarray(codes.T, dtype=np.uint8).reshape(-1)


def train_and_encode(shape: PqShape, data: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, codes_aos): k-means on the first TRAIN_ROWS rows, seeded from ``base``, then
    every row encoded. The one recipe behind every PQ fixture (pq-l2, pq-dot, pq-cosine)."""
    codebook = train_codebook(shape, data[:TRAIN_ROWS], Stream(mix_seeds(base, "init")))
    return codebook, encode(shape, codebook, data)


def fixture_set(shapes: tuple[PqShape, ...], kinds: tuple[str, ...], dists: tuple[str, ...],
                case_arrays: Callable[[PqShape, str, int], dict[str, np.ndarray]],
                workload_arrays: Callable[[PqShape, str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A PQ target's fixed fixtures, flat for the cache: ``battery/<shape>/<kind>/<name>`` and
    ``speed/<shape>/<dist>/<name>`` (pq-l2, pq-dot and pq-cosine share this layout)."""
    out: dict[str, np.ndarray] = {}
    for shape in shapes:
        for kind in kinds:
            for name, arr in case_arrays(shape, kind, CORRECTNESS_SEED).items():
                out[f"battery/{shape.label}/{kind}/{name}"] = arr
        for dist in dists:
            for name, arr in workload_arrays(shape, dist).items():
                out[f"speed/{shape.label}/{dist}/{name}"] = arr
    return out


def codebook_from_vectors(shape: PqShape, vectors: np.ndarray) -> np.ndarray:
    """256 whole vectors as an untrained codebook: centroid k of sub-space m is sub-vector m of
    vector k, in the layout ``[M][256][sub_dim]``, flattened."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    return np.ascontiguousarray(vectors.reshape(NUM_CENTROIDS, m_count, sd).transpose(1, 0, 2)).reshape(-1)
