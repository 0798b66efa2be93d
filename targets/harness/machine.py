"""Facts about the machine a trial ran on, recorded with its result."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def lance_anchor() -> str:
    """What a vs-Lance figure was measured against: pylance version, timer, CPU and SIMD flags."""
    from targets.harness import lance      # only here: kernel-only trials never import pylance
    return (f"pylance {lance.version()}; Lance's own timer {lance.SUB_INDEX_TIMER[0]}.{lance.SUB_INDEX_TIMER[1]}; "
            f"{cpu_model()}; simd {lance.simd_flags()}")
