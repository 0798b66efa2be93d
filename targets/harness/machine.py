"""Facts about the machine a trial ran on, recorded with its result."""

from __future__ import annotations

import importlib.metadata
import os
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


def simd_flags() -> str:
    """The SIMD features compiled code may use on this CPU (Lance's kernels dispatch on them at
    run time; numba's LLVM targets the host)."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return "unknown"
    have = set(line.split(":", 1)[1].split())
    wanted = ("sse4_2", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_fp16",
              "asimd", "sve")
    return ",".join(f for f in wanted if f in have) or "none"


def cache_sizes() -> dict[str, str]:
    """CPU cache sizes as the kernel reports them for cpu0, e.g. {"L1d": "32K", "L2": "1024K"}."""
    out: dict[str, str] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[f"L{level}{suffix}"] = size
    return out


def facts() -> str:
    """What a kernel author needs to know about the machine the trials run on (for the prompt)."""
    caches = ", ".join(f"{k} {v}" for k, v in cache_sizes().items()) or "unknown"
    return (f"- CPU: {cpu_model()} ({platform.machine()}); SIMD: {simd_flags()}\n"
            f"- Caches (per core unless shared): {caches}\n"
            f"- Cores: {os.cpu_count()}; each kernel runs pinned to ONE core, one thread\n"
            f"- Python {platform.python_version()}, numpy {package_version('numpy')}, numba "
            f"{package_version('numba')} (llvmlite {package_version('llvmlite')}: LLVM compiles for this host's CPU)")


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def lance_anchor(timer: tuple[str, str]) -> str:
    """What a vs-Lance figure was measured against: pylance version, timer, CPU and SIMD flags."""
    from targets.harness import lance      # only here: kernel-only trials never import pylance
    return (f"pylance {lance.version()}; Lance's own timer {timer[0]}.{timer[1]}; "
            f"{cpu_model()}; simd {simd_flags()}")
