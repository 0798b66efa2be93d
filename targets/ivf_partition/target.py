"""ivf-partition's fixed types and the op the worker runs around each kernel call (immutable in a run).

The op is what the runner times: one ``find_partitions`` call on a fresh query (cosine
normalisation included), returning the kernel's ids and distances as they are, for the runner to
judge (dtype, length, ties, order). Workers import only this module (plus the harness), so it
imports nothing else from the project.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

DISTANCE_TYPES = ("l2", "dot", "cosine")
# nprobes travels per call as a 0-d int64 array; this value stands for None (every partition).
ALL_PARTITIONS = -1

# Modules kernels.py may import (the static policy's allowlist; the sandbox bundle holds no others
# from this project).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "IvfKernel": {
        "__init__": ["self", "centroids", "distance_type"],
        "find_partitions": ["self", "query", "nprobes"],
    },
}


def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """The kernel instance for one centroid set (its ``__init__`` is untimed)."""
    distance_type = str(params["distance_type"])
    if distance_type not in DISTANCE_TYPES:
        raise ValueError(f"unknown distance type {distance_type!r}")
    centroids = arrays["centroids"]
    nlist, dim = int(params["nlist"]), int(params["dim"])
    if centroids.shape != (nlist, dim):
        raise ValueError(f"centroids have shape {centroids.shape}, expected {(nlist, dim)}")
    return kernels.IvfKernel(centroids, distance_type)


def nprobes_array(nprobes: int | None) -> np.ndarray:
    return np.array(ALL_PARTITIONS if nprobes is None else nprobes, dtype=np.int64)


def _find(kernel: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = int(arrays["nprobes"])
    ids, dists = kernel.find_partitions(arrays["query"], None if n == ALL_PARTITIONS else n)
    return {"ids": ids, "dists": dists}


OPS = {"check": _find, "speed": _find}
