"""ivf-partition inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

Values come from pq-l2's generators (``targets.pq_l2.inputs.generate``), so the distributions
are pq-l2's. Battery: 3 shapes (nlist x dim: 1x64, 300x40, 1024x256) x 6 kinds x 3 distance
types, each case asked two queries (one from the kind's distribution, one a relative 1e-3 away
from a centroid: at large_dynamic_range magnitudes the |q|²+|c|²−2q·c rewrite cancels
catastrophically there) under several nprobes. The ``duplicated`` kind repeats every centroid
three times (exact ties, at ids far apart). Speed: 3 shapes x 3 distance types, each distance
type with its own data (l2-clustered, dot-mips, cosine-sphere). Fixed fixtures are cached on disk
by a hash of the generators, the PRNG and the seeds; fresh per-trial cases are cheap to make.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.ivf_partition.target import DISTANCE_TYPES
from targets.pq_l2.inputs import centres_for, generate


@dataclass(frozen=True)
class IvfShape:
    nlist: int
    dim: int
    nprobes: int | None = None                  # the speed workloads' per-query nprobes

    @property
    def label(self) -> str:
        return f"{self.nlist}x{self.dim}"


BATTERY_SHAPES = (IvfShape(1, 64), IvfShape(300, 40), IvfShape(1024, 256))
CORRECTNESS_KINDS = ("gaussian", "uniform", "sparse", "large_dynamic_range", "mostly_zero", "duplicated")
COPIES = 3                                      # each centroid's copies in the duplicated kind
SPEED_SHAPES = (IvfShape(256, 1536, None), IvfShape(1024, 768, 20), IvfShape(8192, 128, 64))
# Speed data per distance type: what an index of that type is built on.
SPEED_DISTRIBUTIONS = {"l2": "l2-clustered", "dot": "dot-mips", "cosine": "cosine-sphere"}
MIPS_LOG_NORM_SIGMA = 0.5

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"),
            Path(__file__).parent.parent / "harness" / "prng.py",
            Path(__file__).parent.parent / "pq_l2" / "inputs.py")


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as a cosine index stores them."""
    norms = np.sqrt(np.square(rows.astype(np.float64)).sum(axis=1, keepdims=True))
    return (rows / np.where(norms > 0.0, norms, 1.0)).astype(np.float32)


def mips_rows(seed: int, rows: int, dim: int) -> np.ndarray:
    """Gaussian directions with log-normal norms (maximum inner product search data)."""
    norms = np.exp(np.float32(MIPS_LOG_NORM_SIGMA) * Stream(mix_seeds(seed, "norms")).normal(rows))
    return unit_rows(generate("gaussian", seed, rows, dim)) * norms[:, None]


def battery_centroids(kind: str, distance_type: str, seed: int, shape: IvfShape) -> np.ndarray:
    if kind == "duplicated":
        distinct = -(-shape.nlist // COPIES)
        centroids = generate("gaussian", seed, distinct, shape.dim)[np.arange(shape.nlist) % distinct]
    else:
        centroids = generate(kind, seed, shape.nlist, shape.dim)
    return unit_rows(centroids) if distance_type == "cosine" else centroids


def near_duplicate_query(centroids: np.ndarray, stream: Stream) -> np.ndarray:
    """A query a relative 1e-3 away from one centroid: its distance is tiny next to |q|², so the
    |q|²+|c|²−2q·c rewrite loses it to cancellation at large magnitudes."""
    pick = centroids[stream.integers(centroids.shape[0], 1)[0]]
    jitter = np.float32(1e-3) * stream.normal(pick.size)
    return (pick + jitter * (np.abs(pick) + np.float32(1e-3))).astype(np.float32)


def _case_arrays(shape: IvfShape, kind: str, distance_type: str, seed: int) -> dict[str, np.ndarray]:
    base = mix_seeds(seed, shape.label, kind, distance_type)
    centroids = battery_centroids(kind, distance_type, mix_seeds(base, "centroids"), shape)
    query = generate("gaussian" if kind == "duplicated" else kind, mix_seeds(base, "query"), 1, shape.dim)[0]
    if distance_type == "cosine" and not query.any():
        query[0] = 1.0                 # normalising a zero query divides by zero: undefined upstream
    return {"centroids": centroids, "query_0": query,
            "query_1": near_duplicate_query(centroids, Stream(mix_seeds(base, "near")))}


def _workload_arrays(shape: IvfShape, distance_type: str) -> dict[str, np.ndarray]:
    dist = SPEED_DISTRIBUTIONS[distance_type]
    base = mix_seeds(SPEED_SEED, shape.label, dist)
    centres = centres_for(base, shape.dim)
    if distance_type == "dot":
        centroids = mips_rows(mix_seeds(base, "centroids"), shape.nlist, shape.dim)
    else:
        centroids = generate("clustered", mix_seeds(base, "centroids"), shape.nlist, shape.dim, centres)
        if distance_type == "cosine":
            centroids = unit_rows(centroids)
    return {"centroids": centroids, "centres": centres}


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for shape in BATTERY_SHAPES:
        for kind in CORRECTNESS_KINDS:
            for dt in DISTANCE_TYPES:
                for name, arr in _case_arrays(shape, kind, dt, CORRECTNESS_SEED).items():
                    out[f"battery/{shape.label}/{kind}/{dt}/{name}"] = arr
    for shape in SPEED_SHAPES:
        for dt in DISTANCE_TYPES:
            for name, arr in _workload_arrays(shape, dt).items():
                out[f"speed/{shape.label}/{dt}/{name}"] = arr
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("ivf_partition", key, _all_fixtures)


def fresh_case(shape: IvfShape, kind: str, distance_type: str, seed: int) -> dict[str, np.ndarray]:
    """A battery case drawn from a per-trial seed."""
    return _case_arrays(shape, kind, distance_type, mix_seeds(seed, "fresh"))


def speed_queries(shape: IvfShape, distance_type: str, centres: np.ndarray, seed: int, count: int) -> np.ndarray:
    """``count`` fresh queries of one combo from a per-trial seed: [count, dim] f32."""
    qseed = mix_seeds(seed, "queries", shape.label, distance_type)
    if distance_type == "dot":
        return mips_rows(qseed, count, shape.dim)
    return generate("clustered", qseed, count, shape.dim, centres)
