"""On-disk cache for expensive, deterministic fixtures (e.g. k-means codebooks).

Lives outside the repository's tracked files (``$LANCE_AUTORESEARCH_CACHE``, else
``$XDG_CACHE_HOME/lance-autoresearch``, else ``~/.cache/lance-autoresearch``) and is keyed by a
hash of everything the fixtures depend on, so editing a generator invalidates it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    explicit = os.environ.get("LANCE_AUTORESEARCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lance-autoresearch"


def fixture_key(*parts: str | bytes | int | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            part = part.read_bytes()
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def cached_arrays(name: str, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``name-key.npz`` from the cache, or build, store atomically and return it.

    A corrupt or unreadable cache file is rebuilt, never trusted.
    """
    path = cache_dir() / f"{name}-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass                      # an unwritable cache costs time, never correctness
    return arrays
