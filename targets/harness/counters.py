"""Hardware counters (cycles, instructions) of a worker process, read by the runner around each
timed call: Linux ``perf_event_open`` through ctypes (no Python package wraps it and ships wheels).

Counting is per process and user space only (``exclude_kernel``), so it works at
``perf_event_paranoid`` <= 2 for a process of the same user. Where the syscall is missing or
refused (containers, VMs without a virtual PMU answer ENOENT or EACCES) the runner records why,
once, and reports ``n/a``. Counters are reported, never gated on (see docs/robustness.md).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from dataclasses import dataclass

_SYSCALL = {"x86_64": 298, "aarch64": 241}.get(platform.machine())
_PERF_TYPE_HARDWARE = 0
_CYCLES, _INSTRUCTIONS = 0, 1
_ATTR_SIZE = 128                      # PERF_ATTR_SIZE_VER7; the kernel accepts any known size
_EXCLUDE_KERNEL, _EXCLUDE_HV, _INHERIT = 1 << 5, 1 << 6, 1 << 1


def _open(pid: int, config: int) -> int:
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("IIQ", attr, 0, _PERF_TYPE_HARDWARE, _ATTR_SIZE, config)
    struct.pack_into("Q", attr, 40, _EXCLUDE_KERNEL | _EXCLUDE_HV | _INHERIT)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYSCALL, (ctypes.c_char * _ATTR_SIZE).from_buffer(attr), pid, -1, -1, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open: {errno.errorcode.get(err, err)} ({os.strerror(err)})")
    return fd


@dataclass
class Counters:
    """Open cycle and instruction counters on one process; ``read`` returns running totals."""

    fds: tuple[int, int]

    @staticmethod
    def open(pid: int) -> Counters | str:
        """The counters of ``pid``, or why there are none (one line, for the result's record)."""
        if not sys.platform.startswith("linux") or _SYSCALL is None:
            return f"n/a: no perf_event_open on {sys.platform}/{platform.machine()}"
        fds: list[int] = []
        try:
            for config in (_CYCLES, _INSTRUCTIONS):
                fds.append(_open(pid, config))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            return f"n/a: {exc.strerror}"
        return Counters((fds[0], fds[1]))

    def read(self) -> tuple[int, int]:
        cycles, instructions = (struct.unpack("q", os.read(fd, 8))[0] for fd in self.fds)
        return cycles, instructions

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
