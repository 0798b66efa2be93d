"""Peak memory and the trial's wall-clock budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DEFAULT_BUDGET_SECONDS = 600.0   # the original's hard cap; a trial over it exits 3


def peak_rss_mb(pid: int | str = "self") -> float:
    """Resident high-water mark (VmHWM) in MiB; VmPeak is virtual and means nothing here.

    Off Linux (no /proc) falls back to psutil's current RSS, which under-reports the peak.
    """
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    proc = psutil.Process() if pid == "self" else psutil.Process(int(pid))
    return proc.memory_info().rss / (1024.0 * 1024.0)


class BudgetExceeded(Exception):
    """Raised when a trial runs past its wall-clock budget."""


@dataclass
class TimeBudget:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise BudgetExceeded(f"time budget of {self.seconds:g} s exceeded during {what}")
