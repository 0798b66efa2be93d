"""pq-dot inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

Distributions are those of inner-product search: ``mips`` (Gaussian directions with log-normal
norms, so a few long vectors win most queries), ``normalized`` (unit-norm embeddings: every table
entry is near 1, the distances near 1 − small, the case where the −(M−1) cancels hardest) and
pq-l2's ``clustered``; the battery adds pq-l2's ``gaussian``, ``large_dynamic_range`` and
``mostly_zero``. Battery: 3 shapes x 5 kinds at N=4,096, each case asked two queries (one of its
kind, one equal to a stored vector's PQ reconstruction, the shape of a real MIPS hit). Speed: 3
shapes x 3 distributions at N=20,000. Codebooks: the shared PQ trainer (random init + 2 Lloyd
iterations on 4,096 rows) and encoder, cached on disk; fresh per-trial cases skip training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.harness import cache, pq, pq_fixtures
from targets.harness.pq_fixtures import codebook_from_vectors, fixture_set, train_and_encode
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.pq_dot.target import NUM_CENTROIDS, PqShape
from targets.pq_l2 import inputs as l2_inputs

SHAPES = (PqShape(128, 16), PqShape(256, 16), PqShape(768, 96))
SPEED_DISTRIBUTIONS = ("mips", "normalized", "clustered")
CORRECTNESS_KINDS = ("mips", "normalized", "gaussian", "large_dynamic_range", "mostly_zero")
SPEED_NUM_VECTORS = 20_000
CORRECTNESS_NUM_VECTORS = 4_096
# Log-normal norms exp(σ·z): with σ = 0.5 the middle 95 % of norms span 0.38..2.7 (a 7x range).
NORM_SIGMA = 0.5

_SOURCES = (Path(__file__), Path(pq.__file__), Path(pq_fixtures.__file__), Path(l2_inputs.__file__),
            Path(__file__).parent.parent / "harness" / "prng.py")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (norms in float64; all-zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64)))
    return (x / np.where(norms > 0.0, norms, 1.0)[:, None]).astype(np.float32)


def generate(kind: str, seed: int, rows: int, dim: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``rows`` x ``dim`` float32 vectors of one distribution; row i depends only on (seed, i)."""
    if kind == "normalized":
        return unit_rows(l2_inputs.generate("gaussian", mix_seeds(seed, "direction"), rows, dim))
    if kind == "mips":
        directions = unit_rows(l2_inputs.generate("gaussian", mix_seeds(seed, "direction"), rows, dim))
        norms = np.exp(np.float32(NORM_SIGMA) * Stream(mix_seeds(seed, "norm")).normal(rows))
        return (directions * norms[:, None]).astype(np.float32)
    return l2_inputs.generate(kind, seed, rows, dim, centres)


def reconstruction_query(shape: PqShape, codebook: np.ndarray, codes_aos: np.ndarray,
                         stream: Stream) -> np.ndarray:
    """A stored vector's PQ reconstruction (its M centroids, concatenated): the query of a real
    MIPS hit, with that vector (and any sharing its codes) near the top of the ranking."""
    m_count, sd = shape.num_sub_vectors, shape.sub_dim
    n = codes_aos.size // m_count
    row = codes_aos.reshape(n, m_count)[stream.integers(n, 1)[0]].astype(np.intp)
    cb = codebook.reshape(m_count, NUM_CENTROIDS, sd)
    return np.ascontiguousarray(cb[np.arange(m_count), row].reshape(-1), dtype=np.float32)


def _case_arrays(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    base = mix_seeds(seed, "dot", shape.label, kind)
    data = generate(kind, mix_seeds(base, "data"), CORRECTNESS_NUM_VECTORS, shape.dim)
    codebook, codes = train_and_encode(shape, data, base)
    query = generate(kind, mix_seeds(base, "query"), 1, shape.dim)[0]
    return {"codebook": codebook, "codes_aos": codes, "query_0": query,
            "query_1": reconstruction_query(shape, codebook, codes, Stream(mix_seeds(base, "hit")))}


def _workload_arrays(shape: PqShape, dist: str) -> dict[str, np.ndarray]:
    base = mix_seeds(SPEED_SEED, "dot", shape.label, dist)
    centres = l2_inputs.centres_for(base, shape.dim)
    data = generate(dist, mix_seeds(base, "data"), SPEED_NUM_VECTORS, shape.dim, centres)
    codebook, codes = train_and_encode(shape, data, base)
    return {"codebook": codebook, "codes_aos": codes, "centres": centres}


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("pq_dot", key, lambda: fixture_set(
        SHAPES, CORRECTNESS_KINDS, SPEED_DISTRIBUTIONS, _case_arrays, _workload_arrays))


def fresh_case(shape: PqShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    """An untrained per-trial case: a codebook made of 256 fresh vectors, random codes."""
    base = mix_seeds(seed, "dot-fresh", shape.label, kind)
    vectors = generate(kind, mix_seeds(base, "codebook"), NUM_CENTROIDS, shape.dim)
    codebook = codebook_from_vectors(shape, vectors)
    codes = Stream(mix_seeds(base, "codes")).integers(NUM_CENTROIDS, CORRECTNESS_NUM_VECTORS * shape.num_sub_vectors)
    codes = codes.astype(np.uint8)
    query = generate(kind, mix_seeds(base, "query"), 1, shape.dim)[0]
    return {"codebook": codebook, "codes_aos": codes, "query_0": query,
            "query_1": reconstruction_query(shape, codebook, codes, Stream(mix_seeds(base, "hit")))}


def speed_queries(shape: PqShape, dist: str, centres: np.ndarray, seed: int, count: int) -> np.ndarray:
    """``count`` fresh queries of one combo from a per-trial seed: [count, dim] f32."""
    return generate(dist, mix_seeds(seed, "queries", shape.label, dist), count, shape.dim, centres)
