"""Crash-safe file writes shared by the runner and the daemon's ledger."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
