"""How busy the trial's cores were with work that is not the trial's: read from /proc around each
timing block, recorded on the result, never gated on directly (the daemon decides what to do).

- ``foreign_cpu_share``: of the worker core's time during timing blocks, the share other
  processes took (the core's busy time in /proc/stat minus the workers' own CPU time); the
  largest over blocks, as one bad block is what costs a trial its precision.
- ``steal_share``: the hypervisor's steal on the worker and runner cores.
- ``psi_cpu_some_avg10``: the kernel's CPU pressure (percent of time some task waited), where
  the kernel exposes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

_BUSY = (0, 1, 2, 5, 6, 7)          # user nice system irq softirq steal (idle=3, iowait=4 are not busy)
_STEAL = 7


def cpu_times(cpu: int) -> tuple[int, int, int] | None:
    """(busy, steal, total) jiffies of one core, or None where /proc/stat does not say."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith(f"cpu{cpu} "):
                    values = [int(v) for v in line.split()[1:9]]
                    return sum(values[i] for i in _BUSY), values[_STEAL], sum(values)
    except (OSError, ValueError):
        return None
    return None


def process_jiffies(pids: Iterable[int]) -> int:
    """utime + stime of these processes (all their threads), in jiffies."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total


def psi_cpu_some_avg10() -> float | None:
    try:
        with open("/proc/pressure/cpu") as fh:
            for line in fh:
                if line.startswith("some "):
                    return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return None


@dataclass
class Monitor:
    """Per-block contention on the worker core (and steal on the runner's), for one trial."""

    worker_cpu: int | None
    runner_cpu: int | None
    foreign: list[float] = field(default_factory=list)
    steal: list[float] = field(default_factory=list)
    _start: tuple | None = None

    def begin(self, pids: Iterable[int]) -> None:
        if self.worker_cpu is None:
            return
        self._start = (cpu_times(self.worker_cpu), self._runner(), process_jiffies(pids))

    def end(self, pids: Iterable[int]) -> None:
        if self._start is None or self.worker_cpu is None:
            return
        (w0, r0, own0), w1, r1, own1 = self._start, cpu_times(self.worker_cpu), self._runner(), process_jiffies(pids)
        self._start = None
        if w0 is None or w1 is None or w1[2] <= w0[2]:
            return
        elapsed = w1[2] - w0[2]
        others = (w1[0] - w0[0]) - (own1 - own0)
        self.foreign.append(min(1.0, max(0.0, others / elapsed)))
        steal = (w1[1] - w0[1]) / elapsed
        if r0 is not None and r1 is not None and r1[2] > r0[2]:
            steal = max(steal, (r1[1] - r0[1]) / (r1[2] - r0[2]))
        self.steal.append(steal)

    def _runner(self) -> tuple[int, int, int] | None:
        return cpu_times(self.runner_cpu) if self.runner_cpu is not None else None

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.foreign:
            out["foreign_cpu_share"] = round(max(self.foreign), 4)
            out["foreign_cpu_share_mean"] = round(sum(self.foreign) / len(self.foreign), 4)
            out["steal_share"] = round(max(self.steal), 4)
        psi = psi_cpu_some_avg10()
        if psi is not None:
            out["psi_cpu_some_avg10"] = psi
        return out


def wait_for_quiet(cpu: int, threshold: float, max_seconds: float, window: float = 2.0) -> tuple[float | None, float]:
    """Wait until other work takes less than ``threshold`` of ``cpu`` over a ``window``, for at
    most ``max_seconds``; returns (the last share seen or None, seconds waited). Nothing of the
    trial runs meanwhile, so all the core's busy time is someone else's."""
    started, share = time.monotonic(), None
    while True:
        before = cpu_times(cpu)
        time.sleep(window)
        after = cpu_times(cpu)
        if before is None or after is None or after[2] <= before[2]:
            return None, time.monotonic() - started
        share = (after[0] - before[0]) / (after[2] - before[2])
        if share < threshold or time.monotonic() - started >= max_seconds:
            return share, time.monotonic() - started
