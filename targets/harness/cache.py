"""On-disk cache for expensive, deterministic fixtures (e.g. k-means codebooks).

Lives outside the repository's tracked files (``$LANCE_AUTORESEARCH_CACHE``, else
``$XDG_CACHE_HOME/lance-autoresearch``, else ``~/.cache/lance-autoresearch``) and is keyed by a
hash of everything the fixtures depend on, so editing a generator invalidates it.
"""

from __future__ import annotations

import hashlib
import io
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

    A cache file is trusted only if its content hash matches the one stored beside it and both
    are this user's and writable by no one else; anything else is rebuilt, never trusted. (Workers
    cannot reach the cache at all: it is outside their sandbox.)
    """
    path = cache_dir() / f"{name}-{key}.npz"
    digest_path = path.with_suffix(".npz.sha256")
    try:
        data_bytes = _private_bytes(path)
        if hashlib.sha256(data_bytes).hexdigest() == _private_bytes(digest_path).decode().strip():
            with np.load(io.BytesIO(data_bytes), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        pass
    arrays = build()
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)        # as np.load above: numeric arrays only
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The data first, then its hash: a crash in between leaves a mismatch, i.e. a rebuild.
        for target, content in ((path, buffer.getvalue()), (digest_path, hashlib.sha256(buffer.getvalue()).hexdigest().encode())):
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(tmp, target)
    except OSError:
        pass                      # an unwritable cache costs time, never correctness
    return arrays


def is_private(info: os.stat_result) -> bool:
    """This user's, and no one else may write it."""
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _private_bytes(path: Path) -> bytes:
    """The file's bytes, if it is this user's and no one else may write it."""
    with open(path, "rb") as fh:
        if not is_private(os.fstat(fh.fileno())):
            raise OSError(f"{path} is not private to this user")
        return fh.read()


def trusted_kernels() -> dict[str, Path]:
    """sha256 -> file of every target's own ``kernels.py`` in this checkout: code a human wrote
    (the daemon edits kernels only in run worktrees), so its compiled form may be kept."""
    from targets import TARGETS_DIR
    return {hashlib.sha256(k.read_bytes()).hexdigest(): k for k in sorted(TARGETS_DIR.glob("*/kernels.py"))}


def numba_store(kernel_sha256: str) -> Path:
    """Where a trusted kernel's numba cache lives across trials, per interpreter and numba version:
    the kernel at a fixed path (numba's index is keyed by the source's path and stamp)."""
    import importlib.metadata
    import sys

    version = f"py{sys.version_info.major}{sys.version_info.minor}-numba{importlib.metadata.version('numba')}"
    return cache_dir() / "numba" / f"{kernel_sha256[:24]}-{version}"
