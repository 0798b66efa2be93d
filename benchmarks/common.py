"""What every benchmark shares. Import it first, before numpy, numba or lance start their thread
pools: on import it puts numeric libraries and Lance on one CPU thread, gives numba a private cache
removed at exit (a benchmark loads several kernels in one process under their own module names, and
numba's on-disk cache is keyed by file and function, so a shared cache could hand one kernel
another's machine code) and puts the project on ``sys.path``. ``arm_order`` says which arm runs
when within a call."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "LANCE_CPU_THREADS"):
    os.environ[_name] = "1"
os.environ.setdefault("LANCE_LOG", "error")     # not a WARN line per dataset written
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="lar-bench-numba-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def playbook_kernel(folder: Path, entry: str, out_dir: Path, api: dict[str, Any] | None = None) -> Path:
    """``folder``'s kernels.py with one of its playbook entries applied, written under ``out_dir``."""
    from orchestrator.edit import parse_and_apply
    text = parse_and_apply((folder / "playbook" / entry).read_text(), (folder / "kernels.py").read_text(), api=api).new_text
    path = out_dir / Path(entry).stem / "kernels.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def arm_order(call: int, arms: int) -> list[int]:
    """The order the arms run in on call number ``call``: a Williams design, so over every cycle of
    ``arms`` calls (2 x ``arms`` when odd) each arm runs first equally often and follows every other
    arm equally often. Rotating the first arm alone keeps the cyclic order, so with three or more
    arms one arm would always run right after the same other one, on the caches it left warm:
    that made the shipped kernel time 0.5x of itself on posting-seek's 5 MB lists."""
    first = [0]
    low, high = 1, arms - 1
    while len(first) < arms:
        first.append(low)
        low += 1
        if len(first) < arms:
            first.append(high)
            high -= 1
    rows = [[(r + a) % arms for a in first] for r in range(arms)]
    if arms % 2:
        rows += [row[::-1] for row in rows]
    return rows[call % len(rows)]


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """The call's result, wall ms and the process's CPU ms over all its threads (a library's own
    I/O and decode threads included), with the collector off."""
    gc.disable()
    try:
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        got = fn()
        return got, (time.perf_counter_ns() - t0) / 1e6, (time.process_time_ns() - c0) / 1e6
    finally:
        gc.enable()


def slope_fit(sizes: Sequence[int], ms: Any) -> tuple[float, float, float]:
    """(ms per unit of size, fixed ms, R²) of a least-squares line through (size, ms): the slope
    method for a library that can only be timed end to end (e.g. pylance reading a file)."""
    import numpy as np                    # here: this module is imported before numpy may be
    x = np.array(sizes, dtype=float)
    slope, fixed = np.polyfit(x, ms, 1)
    r2 = 1 - float(np.sum((ms - (slope * x + fixed)) ** 2) / np.sum((ms - ms.mean()) ** 2))
    return float(slope), float(fixed), r2


def run_in_other_python(python: str, script: str, *args: str) -> dict[str, Any]:
    """``script`` run by another interpreter (a library installed apart, e.g. vortex-data, which
    would change this venv's numpy) on one thread; its last stdout line, a JSON object."""
    import json
    import subprocess

    env = {"OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        return {"ms": float("nan"), "ok": False, "encoding": f"failed: {proc.stderr.strip()[-200:]}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
