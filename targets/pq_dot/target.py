"""pq-dot's fixed types and the op the worker runs around each kernel call (immutable in a run).

The op is what the runner times: ``distance_table`` + ``compute_distances`` + top-K (smallest
distance first), with output buffers allocated here (NaN-filled, so an entry the kernel never
writes fails the check). Workers import this module and the harness bundle only, so it imports
nothing else from the project: ``PqShape`` and ``top_k`` are pq-l2's, restated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

TOP_K = 10
NUM_CENTROIDS = 256


@dataclass(frozen=True)
class PqShape:
    dim: int
    num_sub_vectors: int
    num_centroids: int = NUM_CENTROIDS

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.num_sub_vectors <= 0 or self.dim % self.num_sub_vectors:
            raise ValueError(f"dim {self.dim} must be a positive multiple of num_sub_vectors {self.num_sub_vectors}")
        if self.num_centroids != NUM_CENTROIDS:
            raise ValueError("only 8-bit PQ (256 centroids) is supported")

    @property
    def sub_dim(self) -> int:
        return self.dim // self.num_sub_vectors

    @property
    def label(self) -> str:
        return f"{self.dim}x{self.num_sub_vectors}"


# Modules kernels.py may import (the static policy's allowlist; the sandbox bundle holds no others
# from this project).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "PqKernel": {
        "__init__": ["self", "shape", "codebook", "codes_aos", "num_vectors"],
        "distance_table": ["self", "query", "out"],
        "compute_distances": ["self", "table", "out"],
    },
}


@dataclass
class Instance:
    kernel: Any
    shape: PqShape
    num_vectors: int


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    shape = PqShape(int(params["dim"]), int(params["num_sub_vectors"]))
    n = int(params["num_vectors"])
    kernel = kernels.PqKernel(shape, arrays["codebook"], arrays["codes_aos"], n)
    if kernel.num_vectors != n:
        raise ValueError(f"PqKernel.num_vectors is {kernel.num_vectors!r}, expected {n}")
    return Instance(kernel, shape, n)


def top_k(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The harness-owned top-K (as upstream: selected outside the kernel), ties broken by id.
    Smallest first: Lance's dot distance is 1 − q·x, so the best match has the lowest value."""
    n = distances.size
    idx = np.argpartition(distances, k - 1)[:k] if n > k else np.arange(n)
    order = np.lexsort((idx, distances[idx]))
    ids = idx[order].astype(np.int64)
    return ids, distances[ids].copy()


def _run(inst: Instance, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    table = np.full(inst.shape.num_sub_vectors * NUM_CENTROIDS, np.nan, dtype=np.float32)
    inst.kernel.distance_table(query, table)
    distances = np.full(inst.num_vectors, np.nan, dtype=np.float32)
    inst.kernel.compute_distances(table, distances)
    ids, scores = top_k(distances, TOP_K)
    return table, distances, ids, scores


def check_call(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    table, distances, ids, scores = _run(inst, arrays["query"])
    return {"table": table, "distances": distances, "topk_ids": ids, "topk_dists": scores}


def speed_call(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    _, _, ids, scores = _run(inst, arrays["query"])
    return {"topk_ids": ids, "topk_dists": scores}


OPS = {"check": check_call, "speed": speed_call}
