"""The fixture cache trusts only its own, unchanged files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from targets.harness import cache


@pytest.fixture
def builds(tmp_path: Path, monkeypatch) -> list[int]:
    monkeypatch.setenv("LANCE_AUTORESEARCH_CACHE", str(tmp_path))
    return []


def load(builds: list[int]) -> dict[str, np.ndarray]:
    def build() -> dict[str, np.ndarray]:
        builds.append(1)
        return {"codes": np.arange(6, dtype=np.uint8)}
    return cache.cached_arrays("fx", "k1", build)


def test_a_current_cache_is_loaded_not_rebuilt(builds: list[int]) -> None:
    first, second = load(builds), load(builds)
    assert len(builds) == 1 and np.array_equal(first["codes"], second["codes"])


def test_changed_content_is_rebuilt_not_trusted(builds: list[int], tmp_path: Path) -> None:
    load(builds)
    path = tmp_path / "fx-k1.npz"
    forged = path.with_name("forged.npz")
    np.savez(forged, codes=np.zeros(6, dtype=np.uint8))     # a valid npz with other answers
    os.replace(forged, path)
    assert np.array_equal(load(builds)["codes"], np.arange(6)) and len(builds) == 2
    assert len(load(builds)) == 1 and len(builds) == 2        # and the rebuilt file is trusted again


def test_a_file_others_may_write_is_not_trusted(builds: list[int], tmp_path: Path) -> None:
    load(builds)
    (tmp_path / "fx-k1.npz").chmod(0o666)
    load(builds)
    assert len(builds) == 2
