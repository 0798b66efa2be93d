"""The PQ search contract and op shared by pq-l2, pq-dot and pq-cosine (immutable in a run).

The op is what the runner times: one ``search`` call, the whole of Lance's per-partition PQ
search (distance table, per-vector distances, top-k), into output buffers allocated here
(ids -1, distances NaN, so an entry the kernel never writes fails the check). The kernel owns the
top-k so that it may fuse it with the distance loop, as fast PQ scanners do. The three targets
differ only in inputs and oracle, so their workers all run this module. Workers import only it
(plus the harness's worker and wire), so it imports nothing else from the project.
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
        "search": ["self", "query", "k", "out_ids", "out_dists"],
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


def _search(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``k`` travels per call (the battery varies it, up to every vector); speed calls use TOP_K."""
    k = min(int(arrays["k"]), inst.num_vectors)
    ids = np.full(k, -1, dtype=np.int64)
    dists = np.full(k, np.nan, dtype=np.float32)
    inst.kernel.search(arrays["query"], k, ids, dists)
    return {"topk_ids": ids, "topk_dists": dists}


def k_array(k: int) -> np.ndarray:
    return np.array(k, dtype=np.int64)


OPS = {"check": _search, "speed": _search}
