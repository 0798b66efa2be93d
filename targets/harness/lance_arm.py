"""The Lance arm's ops: what a trusted worker runs to time Lance itself on a PQ workload.

The same shape as a target's ``target.py`` (``build`` + ``OPS``), so the runner drives Lance like
any arm: same fresh queries, interleaved, pinned, frozen while the other arm is timed, its timed
outputs re-checked against the oracle. Its time is Lance's own operator timer (``lance_ns``), not
the runner's clock: Lance's ~1 ms of per-query planning is not the kernel's business.

The dataset holds each vector *decoded* from the fixture's codes (centroid m of code m, for every
m), indexed with the fixture's codebook and a zero IVF centroid: Lance re-encodes it to the
fixture's codes (checked at every open, up to bit-identical duplicate centroids), so it answers
exactly the question the kernel answers. Built once per fixture, cached by a hash of its bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import cache, lance

NUM_CENTROIDS = 256


@dataclass
class LanceInstance:
    ds: Any
    timer: tuple[str, str]


def dataset_key(*parts: str | np.ndarray) -> str:
    """A cache key for the dataset built from ``parts`` by this pylance (arrays by dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for part in (lance.version(), *parts):
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def decoded_vectors(codebook: np.ndarray, codes_aos: np.ndarray, n: int, m: int) -> np.ndarray:
    cb = codebook.reshape(m, NUM_CENTROIDS, -1)
    codes = codes_aos.reshape(n, m).astype(np.intp)
    return np.ascontiguousarray(cb[np.arange(m)[None, :], codes].reshape(n, -1), dtype=np.float32)


def codes_problem(ds: Any, codebook: np.ndarray, codes_aos: np.ndarray, n: int, m: int) -> str | None:
    """None when Lance's stored codes are the fixture's, up to centroids that are bit-identical
    (a tie Lance may break differently; the distances are then the same)."""
    stored = lance.stored_pq_codes(ds, n, m).astype(np.intp)
    codes = codes_aos.reshape(n, m).astype(np.intp)
    diff_n, diff_m = np.nonzero(stored != codes)
    if diff_n.size == 0:
        return None
    cb = codebook.reshape(m, NUM_CENTROIDS, -1)
    same = np.all(cb[diff_m, stored[diff_n, diff_m]] == cb[diff_m, codes[diff_n, diff_m]], axis=1)
    if same.all():
        return None
    i = int(np.flatnonzero(~same)[0])
    return (f"Lance encoded vector {int(diff_n[i])} sub-vector {int(diff_m[i])} as code "
            f"{int(stored[diff_n[i], diff_m[i]])}, the fixture says {int(codes[diff_n[i], diff_m[i]])}")


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not cache.is_private(path.stat()):
        raise lance.LanceError(f"{path}: not a private directory of this user; remove it")


def cached_dataset(cache: Path, key: str, write: Callable[[Path], object]) -> Path:
    """The dataset cached under ``key`` in the private directory ``cache``; ``write(path)`` builds it
    first when it is missing (in a staging directory, renamed into place: a crash or a concurrent
    builder never leaves half a dataset under the key)."""
    _private_dir(cache)
    path = cache / f"{key}.lance"
    if not path.exists():
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
        try:
            write(staging / "data.lance")
            try:
                os.rename(staging / "data.lance", path)
            except OSError:
                if not path.exists():   # not a concurrent builder's win: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def open_or_build(cache: Path, metric: str, codebook: np.ndarray, codes_aos: np.ndarray, n: int, m: int) -> Any:
    """The fixture's Lance dataset: from the cache when present, else built (atomically) and cached."""
    path = cached_dataset(cache, dataset_key(metric, str(m), codebook, codes_aos),
                          lambda where: lance.pq_dataset(where, decoded_vectors(codebook, codes_aos, n, m),
                                                         codebook, m, metric))
    ds = lance.open_dataset(path)
    problem = codes_problem(ds, codebook, codes_aos, n, m)
    if problem:
        raise lance.LanceError(f"{path}: {problem}; Lance does not answer the fixture's question")
    return ds


def build(kernels: None, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LanceInstance:
    if kernels is not None:
        raise ValueError("the Lance arm runs no kernel")
    ds = open_or_build(Path(params["lance_cache"]), str(params["metric"]), arrays["codebook"], arrays["codes_aos"],
                       int(params["num_vectors"]), int(params["num_sub_vectors"]))
    return LanceInstance(ds, lance.SUB_INDEX_TIMER)


def _timed(inst: LanceInstance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One query under analyze_plan: Lance's own time for it (no answer: that is a second query)."""
    ns = lance.timed_search(inst.ds, arrays["query"], int(arrays["k"]), inst.timer)
    return {"lance_ns": np.array([ns], dtype=np.int64)}


def _answer(inst: LanceInstance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lance's answer to one query (untimed), for the oracle to check."""
    ids, dists = lance.search(inst.ds, arrays["query"], int(arrays["k"]))
    return {"topk_ids": ids, "topk_dists": dists}


# The runner asks for Lance's answer only on the timed calls it checks: Lance is trusted, so it may
# know which (a kernel must not), and every unchecked call then costs one Lance query, not two.
OPS = {"speed": _timed, "check": _answer}
