"""Worker isolation: what a process running untrusted kernel code may see and do.

- A *bundle*: the worker imports only a copy of the few trusted modules it needs (the worker,
  the wire format, the target's types and op) from its own scratch directory, plus the kernel
  file itself; the project tree (reference, inputs, harness) is not on its path.
- *Namespaces* (Linux, via util-linux ``unshare``): a new PID namespace with its own /proc (no
  other process, in particular the daemon and its environment, is visible), a new network
  namespace (no network at all), a new mount namespace, and a user namespace when the runner is
  not root. The worker is PID 1 of its namespace: when it dies the kernel kills everything it
  started, so a fork bomb or a daemonised child cannot outlive the trial.
- *Resource limits*: address space, CPU seconds, file size, open files, no core dumps.
- The parent dies -> the worker dies (``PR_SET_PDEATHSIG``); the runner kills the whole tree at
  the end of a trial and checks for survivors.

Where namespaces are not allowed, the runner falls back to a documented degraded mode (limits,
minimal environment, bundle, non-dumpable parents) and says so in every result.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from targets import PROJECT_ROOT

ADDRESS_SPACE_BYTES = 8 << 30      # numba/LLVM reserve a lot of virtual memory; RSS is far lower
FILE_SIZE_BYTES = 64 << 20
OPEN_FILES = 256
BUNDLE_FILES = ("targets/__init__.py", "targets/harness/__init__.py", "targets/harness/worker.py",
                "targets/harness/wire.py")


@dataclass(frozen=True)
class Sandbox:
    namespaces: bool
    user_namespace: bool
    degraded: str = ""               # empty when fully isolated, else what is missing and why

    @property
    def label(self) -> str:
        if self.namespaces:
            # The worker locks its own file system read-only whenever it has a mount namespace.
            return "namespaces(pid,mount,net" + (",user" if self.user_namespace else "") + ")+rlimits+read-only-fs"
        return f"degraded: {self.degraded}"

    def wrap(self, argv: list[str]) -> list[str]:
        if not self.namespaces:
            return argv
        prefix = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc", "--net"]
        if self.user_namespace:
            prefix += ["--user", "--map-root-user"]
        return prefix + ["--"] + argv


def set_dumpable(flag: bool) -> None:
    """A non-dumpable process's /proc/<pid>/environ and memory are closed to same-user processes:
    used for the daemon and the runner, which hold secrets (API keys, the trial token)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, int(flag))    # PR_SET_DUMPABLE


def die_with_parent() -> None:
    """In a child before exec (Linux): SIGKILL it when the process that started it dies, so a
    killed daemon or runner leaves no trial or worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)              # PR_SET_PDEATHSIG


def preexec(cpu: int | None, cpu_seconds: float) -> Callable[[], None]:
    """Runs in the child between fork and exec: death signal, pinning and resource limits."""
    def setup() -> None:
        die_with_parent()
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        limits = [(resource.RLIMIT_AS, ADDRESS_SPACE_BYTES), (resource.RLIMIT_FSIZE, FILE_SIZE_BYTES),
                  (resource.RLIMIT_NOFILE, OPEN_FILES), (resource.RLIMIT_CORE, 0),
                  (resource.RLIMIT_CPU, max(1, int(cpu_seconds) + 5))]
        for which, value in limits:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass
    return setup


def make_bundle(scratch: Path, ops_module: str) -> Path:
    """Copy the trusted modules a worker imports into ``scratch/bundle`` (read-only copies)."""
    bundle = scratch / "bundle"
    folder = ops_module.rsplit(".", 1)[0].replace(".", "/")
    for rel in (*BUNDLE_FILES, f"{folder}/__init__.py", ops_module.replace(".", "/") + ".py"):
        src, dest = PROJECT_ROOT / rel, bundle / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copyfile(src, dest)
        else:
            dest.write_text("")
    return bundle


@lru_cache(maxsize=1)
def probe() -> Sandbox:
    """What isolation this machine allows, found by running a trivial sandboxed Python once."""
    if not sys.platform.startswith("linux"):
        return Sandbox(False, False, "not Linux: no namespaces")
    if shutil.which("unshare") is None:
        return Sandbox(False, False, "util-linux `unshare` not found")
    user_ns = os.geteuid() != 0
    candidate = Sandbox(True, user_ns)
    argv = candidate.wrap([sys.executable, "-I", "-S", "-c", "import os; print(os.getpid())"])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Sandbox(False, False, f"namespaces unavailable ({exc})")
    if out.returncode != 0 or out.stdout.strip() != "1":
        reason = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        return Sandbox(False, False, f"namespaces not permitted here ({reason})")
    return candidate
