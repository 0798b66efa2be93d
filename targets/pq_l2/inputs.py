"""pq-l2 inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

Battery: 3 shapes x 5 kinds at N=4,096, each case asked two queries (one from the data's
distribution, one placed next to a centroid in every sub-space; at the magnitudes of
large_dynamic_range the q²+c²−2qc rewrite cancels catastrophically there, and four vectors
are re-coded to exactly those centroids, so the loss shows in the top of the answer). Speed: 3 shapes x 3 distributions at N=20,000. Codebooks are trained
by the shared PQ recipe (``targets.harness.pq_fixtures``: random init + 2 Lloyd iterations on
4,096 rows; cached on disk by a hash of the sources, the PRNG and the seed). Fresh per-trial
cases use a per-trial seed and skip training (any codebook is a codebook), so they cost nothing
to make.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.harness import cache, pq, pq_fixtures
from targets.harness.pq import NUM_CENTROIDS, PqShape
from targets.harness.pq_fixtures import codebook_from_vectors, fixture_set, train_and_encode
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

SHAPES = (PqShape(128, 16), PqShape(256, 16), PqShape(768, 96))
SPEED_DISTRIBUTIONS = ("clustered", "uniform", "sparse")
CORRECTNESS_KINDS = ("gaussian", "uniform", "sparse", "large_dynamic_range", "mostly_zero")
SPEED_NUM_VECTORS = 20_000
CORRECTNESS_NUM_VECTORS = 4_096
NUM_CLUSTERS = 32
CLUSTER_NOISE = 0.1
PLANTED_ROWS = 4          # battery vectors re-coded to the near-centroid query's own centroids

_SOURCES = (Path(__file__), Path(pq.__file__), Path(pq_fixtures.__file__),
            Path(__file__).parent.parent / "harness" / "prng.py")


def generate(kind: str, seed: int, rows: int, dim: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``rows`` x ``dim`` float32 vectors of one distribution.

    Each ingredient (noise, mask, cluster pick, scale) has its own sub-stream drawn in row order,
    so generating in row chunks (to bound memory) gives the same array as generating at once.
    """
    out = np.empty((rows, dim), dtype=np.float32)
    streams = {name: Stream(mix_seeds(seed, name)) for name in ("value", "mask", "pick", "scale")}
    chunk = max(1, (1 << 20) // dim)
    for lo in range(0, rows, chunk):
        out[lo:lo + chunk] = _generate_rows(kind, streams, min(chunk, rows - lo), dim, centres)
    return out


def _generate_rows(kind: str, s: dict[str, Stream], rows: int, dim: int, centres: np.ndarray | None) -> np.ndarray:
    n = rows * dim
    if kind == "clustered":
        assert centres is not None
        pick = s["pick"].integers(centres.shape[0], rows)
        return centres[pick] + np.float32(CLUSTER_NOISE) * s["value"].normal(n).reshape(rows, dim)
    if kind == "uniform":
        values = s["value"].uniform(-1.0, 1.0, n)
    elif kind == "sparse":
        values = s["value"].uniform(-1.0, 1.0, n) * (s["mask"].f32(n) >= np.float32(0.9))
    elif kind == "gaussian":
        values = s["value"].normal(n)
    elif kind == "large_dynamic_range":
        values = s["value"].normal(n) * np.array([1e-3, 1.0, 1e3], dtype=np.float32)[s["scale"].integers(3, n)]
    elif kind == "mostly_zero":
        values = s["value"].normal(n) * (s["mask"].f32(n) >= np.float32(0.99))
    else:
        raise ValueError(f"unknown distribution {kind!r}")
    return values.reshape(rows, dim)


def centres_for(seed: int, dim: int) -> np.ndarray:
    return Stream(mix_seeds(seed, "centres")).uniform(-1.0, 1.0, NUM_CLUSTERS * dim).reshape(NUM_CLUSTERS, dim)


def near_centroid_query(shape: PqShape, codebook: np.ndarray, stream: Stream) -> np.ndarray:
    """A query whose every sub-vector sits a relative 1e-3 away from one centroid: distances are
    tiny next to |q|², so any q²+c²−2qc rewrite loses them to cancellation."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m_count, NUM_CENTROIDS, sd)
    pick = cb[np.arange(m_count), stream.integers(NUM_CENTROIDS, m_count)]            # [M, sd]
    jitter = np.float32(1e-3) * stream.normal(m_count * sd).reshape(m_count, sd)
    return np.ascontiguousarray(pick + jitter * (np.abs(pick) + np.float32(1e-3)), dtype=np.float32).reshape(-1)


def plant_nearest(shape: PqShape, codebook: np.ndarray, codes_aos: np.ndarray, query: np.ndarray,
                  stream: Stream, rows: int = PLANTED_ROWS) -> np.ndarray:
    """``codes_aos`` with ``rows`` random vectors re-coded to the query's nearest centroid in every
    sub-space (found in float64), so their distances are the query's tiny near-centroid terms
    summed: a table that loses those terms to cancellation shows in the answer, not only in the
    table (which the harness never sees)."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m_count, NUM_CENTROIDS, sd).astype(np.float64)
    q = query.reshape(m_count, 1, sd).astype(np.float64)
    nearest = np.argmin(((cb - q) ** 2).sum(axis=2), axis=1).astype(np.uint8)
    out = codes_aos.reshape(-1, m_count).copy()
    out[stream.integers(out.shape[0], rows)] = nearest
    return out.reshape(-1)


def _case_arrays(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    base = mix_seeds(seed, shape.label, kind)
    data = generate(kind, mix_seeds(base, "data"), CORRECTNESS_NUM_VECTORS, shape.dim)
    codebook, codes = train_and_encode(shape, data, base)
    query = generate(kind, mix_seeds(base, "query"), 1, shape.dim)[0]
    near = near_centroid_query(shape, codebook, Stream(mix_seeds(base, "near")))
    return {"codebook": codebook, "codes_aos": plant_nearest(shape, codebook, codes, near, Stream(mix_seeds(base, "plant"))),
            "query_0": query, "query_1": near}


def _workload_arrays(shape: PqShape, dist: str) -> dict[str, np.ndarray]:
    base = mix_seeds(SPEED_SEED, shape.label, dist)
    centres = centres_for(base, shape.dim)
    data = generate(dist, mix_seeds(base, "data"), SPEED_NUM_VECTORS, shape.dim, centres)
    codebook, codes = train_and_encode(shape, data, base)
    return {"codebook": codebook, "codes_aos": codes, "centres": centres}


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("pq_l2", key, lambda: fixture_set(SHAPES, CORRECTNESS_KINDS, SPEED_DISTRIBUTIONS,
                                                                 _case_arrays, _workload_arrays))


def fresh_case(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    """An untrained per-trial case: a codebook made of 256 fresh vectors, random codes."""
    base = mix_seeds(seed, "fresh", shape.label, kind)
    codebook = codebook_from_vectors(shape, generate(kind, mix_seeds(base, "codebook"), NUM_CENTROIDS, shape.dim))
    codes = Stream(mix_seeds(base, "codes")).integers(NUM_CENTROIDS, CORRECTNESS_NUM_VECTORS * shape.num_sub_vectors)
    query = generate(kind, mix_seeds(base, "query"), 1, shape.dim)[0]
    near = near_centroid_query(shape, codebook, Stream(mix_seeds(base, "near")))
    return {"codebook": codebook, "query_0": query, "query_1": near,
            "codes_aos": plant_nearest(shape, codebook, codes.astype(np.uint8), near, Stream(mix_seeds(base, "plant")))}


def speed_queries(shape: PqShape, dist: str, centres: np.ndarray, seed: int, count: int) -> np.ndarray:
    """``count`` fresh queries of one combo from a per-trial seed: [count, dim] f32."""
    return generate(dist, mix_seeds(seed, "queries", shape.label, dist), count, shape.dim, centres)
