"""pq-cosine inputs: unit-norm embeddings at embedding-model sizes, from seeded SplitMix64.

Data and queries are normalised the way Lance does (``reference.normalize_rows``) before the
kernel sees them. Battery: 3 shapes x 5 kinds at N=4,096; each case asks a query of its kind and
a near-duplicate of a stored vector (distances near 0). Speed: 3 shapes x 3 distributions at
N=10,000 vectors per partition. Generators are pq-l2's; training and encoding the shared PQ recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.harness import cache, pq, pq_fixtures
from targets.harness.pq import NUM_CENTROIDS, PqShape
from targets.harness.pq_fixtures import codebook_from_vectors, fixture_set, train_and_encode
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.pq_cosine.reference import normalize_rows
from targets.pq_l2 import inputs as l2_inputs

# MiniLM / BERT / OpenAI-style embedding sizes, sub-vector dims 8, 8 and 16.
SHAPES = (PqShape(384, 48), PqShape(768, 96), PqShape(1536, 96))
SPEED_DISTRIBUTIONS = ("clustered", "gaussian", "anisotropic")
CORRECTNESS_KINDS = ("gaussian", "uniform", "sparse", "clustered", "anisotropic")
SPEED_NUM_VECTORS = 10_000
CORRECTNESS_NUM_VECTORS = 4_096
NEAR_DUPLICATE_JITTER = 1e-3

_SOURCES = (Path(__file__), Path(__file__).with_name("reference.py"), Path(l2_inputs.__file__), Path(pq.__file__),
            Path(pq_fixtures.__file__), Path(__file__).parent.parent / "harness" / "prng.py")


def generate(kind: str, seed: int, rows: int, dim: int, centres: np.ndarray | None = None) -> np.ndarray:
    """Unit-norm rows of one distribution: pq-l2's generators, plus ``anisotropic`` (a few
    dimensions dominate before normalising, as in many real embeddings)."""
    if kind == "anisotropic":
        raw = l2_inputs.generate("gaussian", seed, rows, dim)
        scale = np.exp(-np.arange(dim, dtype=np.float32) / np.float32(dim / 8)).astype(np.float32)
        raw = raw * scale[Stream(mix_seeds(seed, "perm")).integers(dim, dim)]
    else:
        raw = l2_inputs.generate(kind, seed, rows, dim, centres)
    return normalize_rows(raw)


def _centres(seed: int, dim: int) -> np.ndarray:
    return l2_inputs.centres_for(seed, dim)


def near_duplicate(data: np.ndarray, stream: Stream) -> np.ndarray:
    """A stored vector nudged by a relative 1e-3 and renormalised: its distance is ~1e-6."""
    row = data[stream.integers(data.shape[0], 1)[0]]
    jitter = np.float32(NEAR_DUPLICATE_JITTER) * stream.normal(row.size) * np.abs(row)
    return normalize_rows((row + jitter)[None, :])[0]


def _case_arrays(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    base = mix_seeds(seed, "cosine", shape.label, kind)
    centres = _centres(base, shape.dim)
    data = generate(kind, mix_seeds(base, "data"), CORRECTNESS_NUM_VECTORS, shape.dim, centres)
    codebook, codes = train_and_encode(shape, data, base)
    return {"codebook": codebook, "codes_aos": codes,
            "query_0": generate(kind, mix_seeds(base, "query"), 1, shape.dim, centres)[0],
            "query_1": near_duplicate(data, Stream(mix_seeds(base, "near")))}


def _workload_arrays(shape: PqShape, dist: str) -> dict[str, np.ndarray]:
    base = mix_seeds(SPEED_SEED, "cosine", shape.label, dist)
    centres = _centres(base, shape.dim)
    data = generate(dist, mix_seeds(base, "data"), SPEED_NUM_VECTORS, shape.dim, centres)
    codebook, codes = train_and_encode(shape, data, base)
    return {"codebook": codebook, "codes_aos": codes, "centres": centres}


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("pq_cosine", key, lambda: fixture_set(
        SHAPES, CORRECTNESS_KINDS, SPEED_DISTRIBUTIONS, _case_arrays, _workload_arrays))


def fresh_case(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    """An untrained per-trial case: 256 fresh unit vectors as the codebook, random codes."""
    base = mix_seeds(seed, "cosine-fresh", shape.label, kind)
    centres = _centres(base, shape.dim)
    vectors = generate(kind, mix_seeds(base, "codebook"), NUM_CENTROIDS, shape.dim, centres)
    codebook = codebook_from_vectors(shape, vectors)
    codes = Stream(mix_seeds(base, "codes")).integers(NUM_CENTROIDS, CORRECTNESS_NUM_VECTORS * shape.num_sub_vectors)
    return {"codebook": codebook, "codes_aos": codes.astype(np.uint8),
            "query_0": generate(kind, mix_seeds(base, "query"), 1, shape.dim, centres)[0],
            "query_1": near_duplicate(vectors, Stream(mix_seeds(base, "near")))}


def speed_queries(shape: PqShape, dist: str, centres: np.ndarray, seed: int, count: int) -> np.ndarray:
    """``count`` fresh unit-norm queries of one combo from a per-trial seed: [count, dim] f32."""
    return generate(dist, mix_seeds(seed, "cosine-queries", shape.label, dist), count, shape.dim, centres)
