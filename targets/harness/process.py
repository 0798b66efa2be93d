"""Worker processes: starting one (sandboxed, pinned), talking to it, freezing it, killing it.

A ``Worker`` is one kernel's process and its two pipes; every request carries the trial's
deadline, and a worker that dies, hangs or garbles a reply becomes a ``KernelCrash`` or
``TrialTimeout``. CPU placement lives here too (which core the runner and the workers get): a
worker is pinned as it starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from targets import PROJECT_ROOT
from targets.harness import sandbox, wire
from targets.harness.counters import Counters
from targets.harness.failures import KernelCrash, TrialTimeout
from targets.harness.resources import peak_rss_mb

# Lance's compute runs on one thread of its CPU pool (its IO pool is left alone: pinned to one core,
# LANCE_IO_THREADS=1 deadlocked a query here).
LANCE_ENV = {"LANCE_CPU_THREADS": "1"}
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from targets.harness.worker import main; sys.exit(main(sys.argv[2:]))")


def kill_tree(pid: int, timeout: float = 3.0, reap: Callable[[], Any] | None = None) -> list[int]:
    """Kill a process and all its descendants; return the pids still alive afterwards.

    ``reap`` waits for ``pid`` when it is the caller's own child (Popen.wait): an unreaped zombie
    otherwise makes the survivor check wait out its timeout.
    """
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return []
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    if reap is not None:
        reap()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive]


def pick_cpus() -> tuple[int | None, int | None]:
    """(runner cpu, worker cpu): separate cores when there are two, so the active worker never
    shares one with the runner; both workers of a pair share a core so they see the same caches."""
    try:
        allowed = sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[-1]


def current_affinity() -> list[int] | None:
    try:
        return psutil.Process().cpu_affinity()
    except (AttributeError, psutil.Error):
        return None


def set_affinity(cpus: list[int] | None) -> None:
    if cpus:
        try:
            psutil.Process().cpu_affinity(cpus)
        except (AttributeError, psutil.Error):
            pass


def _widen_pipe(fd: int) -> None:
    """1 MiB instead of 64 KiB: a workload's arrays then cross in a few writes, not hundreds of
    writes each waiting for the worker to drain the pipe (the system may refuse; then 64 KiB)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (OSError, AttributeError):
        pass


class Worker:
    """One worker process and its two pipes; every request has the trial's deadline."""

    def __init__(self, label: str, kernel: Path | None, ops_module: str, scratch: Path, log_dir: Path,
                 deadline: float, cpu: int | None, spin: bool, box: sandbox.Sandbox, cpu_seconds: float,
                 uid: int | None = None, idle_spin: bool = True, alias: str | None = None,
                 store: Path | None = None) -> None:
        self.label, self.deadline, self.spin = label, deadline, spin
        # No kernel: the Lance arm. Trusted code (pylance), so no sandbox (its runtime needs
        # threads); its time is Lance's own operator timer, sent back with each answer.
        self.reports_own_time = kernel is None
        # Every name the kernel can see (its file, home, cache, cwd, its log's path through
        # /proc/self/fd) carries the arm's alias, never its label: a kernel that knew it was the
        # incumbent could run slowly there and have the next candidate kept.
        alias = alias or label
        home = Path(tempfile.mkdtemp(prefix=f"{alias}-", dir=scratch))
        # One copy of the kernel and one numba cache per arm and trial, at stable paths: a later
        # worker pair of the same arm loads the cached machine code instead of compiling again.
        # A trusted kernel (``store``: a target's own kernels.py) keeps its copy and cache across
        # trials; only workers running that very code ever write there.
        arm = store or scratch / f"arm-{alias}"
        self.kernel = arm / "kernels.py"
        cache = arm / "numba-cache"
        cache.mkdir(parents=True, exist_ok=True)
        if kernel is not None and (not self.kernel.exists() or self.kernel.read_bytes() != kernel.read_bytes()):
            shutil.copyfile(kernel, self.kernel)
            os.utime(self.kernel, (0, 0))       # one stamp for every copy: numba's index matches it
        if uid is not None:                   # the arm's own uid owns what it may write, and nothing else
            os.chown(home, uid, uid)
            for path in (cache, *cache.rglob("*")):
                os.chown(path, uid, uid)
        self.log_path = log_dir / f"{home.name}.log"
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        for fd in (req_r, rep_w):
            _widen_pipe(fd)
        bundle = scratch / "bundle" if kernel is not None else PROJECT_ROOT
        argv = [sys.executable, "-I", "-B", "-c", BOOT, str(bundle), str(req_r), str(rep_w), ops_module,
                str(self.kernel) if kernel is not None else ""]
        env = sandbox.worker_env(home, cache)
        env["LAR_IDLE_SPIN"] = "1" if idle_spin else "0"
        if kernel is None:
            env.update(LANCE_ENV)
        passed = [req_r, rep_w]
        if box.active:
            env["LAR_SANDBOX"] = "1"          # the worker checks its confinement before loading the kernel
            filter_r, filter_w = os.pipe()    # bwrap reads the seccomp program from here
            os.write(filter_w, box.seccomp)
            os.close(filter_w)
            passed.append(filter_r)
            argv = box.command(argv, uid, [*sandbox.runtime_paths(), bundle, self.kernel], [home, cache], filter_r, Path("/"))
        self.uid = uid
        # With a sandbox the root is bwrap, which exits as soon as the namespace it holds dies (its
        # init reaps the worker). Killing bwrap too could orphan a zombie to the system's init,
        # which may reap only once a second (1.5-2 s here, pinned).
        self._spare_root = box.active
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
                pass_fds=passed, start_new_session=True, preexec_fn=sandbox.preexec(cpu, cpu_seconds))
        for fd in passed[2:]:
            os.close(fd)
        os.close(req_r)
        os.close(rep_w)
        self.import_seconds = 0.0
        self.first_call_ns: dict[str, int] = {}
        self._tree: list[psutil.Process] | None = None
        self.counters: Counters | None = None
        self.counters_note = "n/a: not opened"
        self.pid: int | None = None           # the worker's Python process, once it said hello
        self.pid_namespace: int | None = None
        self.frozen = False
        self._stoppable: list[int] = []
        self.setup_params: dict[str, Any] = {}   # merged into every setup's params (the Lance arm's)

    def hello(self) -> None:
        reply, _ = self._recv("starting")
        self.import_seconds = float(reply.get("import_seconds", 0.0))
        self.pid = self._python_pid()
        # Everything between the runner's child and the worker (bwrap's init, in the worker's PID
        # namespace) is frozen with it: same uid in a user namespace, so the worker could reach it.
        self._stoppable = self._inner_tree()
        if self._spare_root:                  # sandboxed: the worker's own PID namespace, for the survivor check
            try:
                self.pid_namespace = os.stat(f"/proc/{self.pid}/ns/pid").st_ino
            except OSError:
                pass
        opened = Counters.open(self.pid)
        if isinstance(opened, Counters):
            self.counters, self.counters_note = opened, "cycles,instructions per call (user space, worker process)"
        else:
            self.counters_note = opened

    def freeze(self) -> None:
        """SIGSTOP every process of the worker (its Python and, sandboxed, the namespace's init) and
        wait until each is stopped: while another arm is timed, nothing of this one runs (no handler,
        no leftover work, no code planted in its init), whatever its kernel tried."""
        if self.frozen or not self._stoppable:
            return
        for pid in self._stoppable:
            os.kill(pid, signal.SIGSTOP)
        self.frozen = True
        for pid in self._stoppable:
            self._await_state(pid, stopped=True)

    def thaw(self) -> None:
        if not self.frozen:
            return
        for pid in reversed(self._stoppable):
            os.kill(pid, signal.SIGCONT)
        self.frozen = False
        for pid in self._stoppable:
            self._await_state(pid, stopped=False)

    def _await_state(self, pid: int, stopped: bool, limit: float = 2.0) -> None:
        """Wait until /proc says ``pid`` is (not) stopped; a worker that cannot be frozen fails
        the trial rather than be timed beside a running rival."""
        until = time.monotonic() + limit
        while True:
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                raise KernelCrash(f"{self.label} kernel: worker died while being "
                                  f"{'frozen' if stopped else 'resumed'}\n{self.log_tail()}") from None
            if (state in (b"T", b"t")) == stopped:
                return
            if time.monotonic() > until:
                raise KernelCrash(f"{self.label} kernel: worker would not {'stop' if stopped else 'resume'} "
                                  f"(state {state.decode()})")
            time.sleep(0)

    def _inner_tree(self) -> list[int]:
        """The worker's processes below the runner's child (bwrap on the host), outermost first."""
        try:
            root = psutil.Process(self.proc.pid)
            inner = [p.pid for p in root.children(recursive=True)] if self._spare_root else [root.pid]
        except psutil.Error:
            inner = []
        if self.pid is not None and self.pid not in inner:
            inner.append(self.pid)
        return inner

    def _python_pid(self) -> int:
        """The worker's Python process as this runner sees it (under bwrap it is a child)."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if child.cmdline()[:1] == [sys.executable]:
                    return child.pid
        except psutil.Error:
            pass
        return self.proc.pid

    def _recv(self, what: str, timed: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        try:
            reply, arrays = wire.recv(self._rep_r, self.deadline, spin=timed and self.spin)
        except wire.WireTimeout as exc:
            raise TrialTimeout(f"{self.label} kernel: time budget exceeded while {what}") from exc
        except wire.WireError as exc:
            how = "worker died" if "closed" in str(exc) else "worker sent a malformed reply"
            raise KernelCrash(f"{self.label} kernel: {how} while {what} ({exc}; "
                              f"exit status {self.proc.poll()})\n{self.log_tail()}") from exc
        if reply.get("ok") is not True:
            raise KernelCrash(f"{self.label} kernel raised while {what}:\n{reply.get('error', reply)}")
        return reply, arrays

    def request(self, message: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                what: str = "", timed: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
        what = what or str(message.get("cmd"))
        self.thaw()
        start = time.perf_counter_ns()
        try:
            wire.send(self._req_w, message, arrays, self.deadline)
        except wire.WireTimeout as exc:
            raise TrialTimeout(f"{self.label} kernel: time budget exceeded while {what}") from exc
        except wire.WireError as exc:
            raise KernelCrash(f"{self.label} kernel: worker died while {what} (exit status "
                              f"{self.proc.poll()})\n{self.log_tail()}") from exc
        reply, out = self._recv(what, timed)
        return reply, out, time.perf_counter_ns() - start

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the worker's output."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def peak_mb(self) -> float:
        """The largest resident high-water mark in the worker's tree (the sandbox wrapper included)."""
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            return 0.0
        peaks = []
        for proc in procs:
            try:
                peaks.append(peak_rss_mb(proc.pid))
            except (psutil.Error, OSError):
                pass
        return max(peaks, default=0.0)

    def kill(self) -> None:
        """SIGKILL the worker's tree without waiting, so its teardown overlaps the trial's next
        steps (``reap`` checks at the end)."""
        if self.counters is not None:
            self.counters.close()
            self.counters = None
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        # Closed once: by a later kill (the trial's final teardown) these numbers may be the next
        # pair's pipes or counters.
        self._req_w = self._rep_r = -1
        if self._tree is None:
            try:
                root = psutil.Process(self.proc.pid)
                self._tree = root.children(recursive=True) + [root]
            except psutil.NoSuchProcess:
                self._tree = []
        for proc in self._tree:
            if proc.pid != self.proc.pid or not self._spare_root:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass

    def exited(self) -> bool:
        """Whether the runner's child (bwrap, or the worker itself unsandboxed) has exited; reaps it
        if so, without waiting."""
        return self.proc.poll() is not None

    def reap(self, timeout: float) -> list[int]:
        """Wait for the killed tree to be gone; returns survivors (there should be none)."""
        self.kill()
        try:
            self.proc.wait(timeout=min(timeout, 2.0) if self._spare_root else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()                  # a spared root that did not exit on its own
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _, alive = psutil.wait_procs(self._tree or [], timeout=timeout)
        return [p.pid for p in alive]
