"""Shared helpers for tests that run real trials in subprocesses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "targets" / "pq_l2" / "kernels.py"
NUMBA_KERNEL = ROOT / "tests" / "kernels" / "pq_l2_numba.py"
# Small but real trials: every phase runs, just fewer blocks and queries.
FAST = ["--replicates", "2", "--sessions", "1", "--queries", "3"]


@pytest.fixture
def write_kernel(tmp_path: Path):
    """Write a kernels.py variant: the baseline with ``replace`` applied, or full ``source``."""
    def write(name: str, source: str | None = None, replace: tuple[str, str] | None = None) -> Path:
        text = BASELINE.read_text()
        if replace is not None:
            old, new = replace
            assert old in text, f"test setup: {old!r} not in the baseline kernel"
            text = text.replace(old, new)
        if source is not None:
            text = textwrap.dedent(source)
        path = tmp_path / name / "kernels.py"
        path.parent.mkdir(parents=True)
        path.write_text(text)
        return path
    return write


def run_experiment(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "targets.pq_l2.run_experiment", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found
