"""The trusted trial runner: correctness against an oracle, then timing, in worker processes.

The runner never imports a kernel. It starts one worker per kernel (``targets.harness.worker``),
sends each inputs and requests over pipes, times each request from its side, rebuilds outputs
from raw bytes and judges them with the target's own check functions. In paired mode it
alternates the incumbent's and the candidate's workers query by query (random order per pair,
same queries), over several fresh worker pairs, and reports incumbent/candidate speedups.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import hashlib
import importlib.metadata
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from targets import PROJECT_ROOT
from targets.harness import cache, contention, sandbox, stats, wire
from targets.harness.counters import Counters
from targets.harness.files import write_atomic
from targets.harness.prng import Stream, mix_seeds
from targets.harness.resources import DEFAULT_BUDGET_SECONDS, peak_rss_mb
from targets.harness.result import (EXIT_INCORRECT, EXIT_INTERNAL, EXIT_OK, EXIT_TIMEOUT, Measured,
                                    TrialResult, sign)

# Lance's compute runs on one thread of its CPU pool (its IO pool is left alone: pinned to one core,
# LANCE_IO_THREADS=1 deadlocked a query here).
LANCE_ENV = {"LANCE_CPU_THREADS": "1"}
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from targets.harness.worker import main; sys.exit(main(sys.argv[2:]))")


# ----------------------------------------------------------------------------- what a target gives

@dataclass(frozen=True)
class Case:
    """One correctness case: inputs to build a kernel, then one request per call."""

    name: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    calls: list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Workload:
    """One speed combo (shape x distribution)."""

    shape: str
    distribution: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    queries: Callable[[int, int], list[dict[str, np.ndarray]]]        # (seed, count) -> calls
    # call -> the check of one arm's outputs for it (failure message or None): the oracle runs
    # once per call, the runner applies the check to every arm and names the arm that fails.
    verify: Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]

    @property
    def combo(self) -> str:
        return f"{self.shape}/{self.distribution}"


@dataclass(frozen=True)
class TargetPlan:
    """Everything the runner needs from a target: plain data and functions, no base class."""

    name: str
    ops_module: str                                        # imported by workers: build(), OPS
    cases: Callable[[int], list[Case]]                     # trial seed -> battery + fresh cases
    check: Callable[[Case, int, dict[str, np.ndarray]], str | None]
    workloads: Callable[[], list[Workload]]
    queries_per_combo: int = 8                 # per block in paired mode
    single_queries_per_combo: int = 32         # per pass in single/baseline mode (absolute times)
    warmup_calls: int = 2
    replicates: int = 8                        # fresh worker pairs (paired mode)
    sessions: int = 2                          # timing blocks per pair, each over every combo
    verify_fraction: float = 0.25              # share of timed calls re-checked against the oracle
    # Trimming (20%, within and across blocks) halved the A/A spread: see docs/robustness.md.
    trim: float = 0.2
    # Lance itself as an arm (``--against-lance``): the Lance ops module's extra setup params
    # (e.g. its metric), or None where Lance cannot run this target's op.
    lance_params: dict[str, Any] | None = None


LANCE_OPS = "targets.harness.lance_arm"
OVERHEAD_PINGS = 9                      # per kernel arm, combo and block, in Lance mode


# What `orchestrator calibrate --ablate` can switch off. "pinning" also ends the runner's busy-wait,
# which needs a core of its own; "random-order" runs the incumbent first everywhere (start,
# warm-up, every query pair) and the combos in their listed order.
# "freeze" lets the idle arm run while the other is timed (what a kernel with a background thread
# or timer then does to its rival is what the red-team suite shows).
ABLATIONS = ("pinning", "warmup", "random-order", "freeze")


@dataclass(frozen=True)
class TrialOptions:
    kernel: Path
    against: Path | None = None
    mode: str = "single"                                   # single | baseline | paired
    lance: bool = False                                    # paired against Lance itself (vs_lance)
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    seed: int | None = None                                # per-trial query seed; secret if None
    sandbox: bool = True                                   # False only by an explicit --unsafe-no-sandbox
    token: str = ""                                        # keys the result's MAC: proves who wrote it
    replicates: int | None = None
    sessions: int | None = None
    queries_per_combo: int | None = None
    log_dir: Path | None = None
    # Calibration only (`orchestrator calibrate` runs trials in-process): the incumbent's worker
    # spins for this fraction of each timed call's own duration. No command line reaches it, and
    # the gate refuses any result that carries it.
    injected_slowdown: float = 0.0
    # Calibration only, likewise: measurement features (ABLATIONS) switched off for this trial, so
    # calibrate can show what each one buys. The gate refuses any result that carries one.
    ablated: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- failures

class TrialFailure(Exception):
    kind = "internal"
    exit_code = EXIT_INTERNAL


class KernelCrash(TrialFailure):
    kind = "crash"


class KernelIncorrect(TrialFailure):
    kind = "incorrect"
    exit_code = EXIT_INCORRECT


class TrialTimeout(TrialFailure):
    kind = "timeout"
    exit_code = EXIT_TIMEOUT


# ----------------------------------------------------------------------------- workers

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


def _cpus() -> tuple[int | None, int | None]:
    """(runner cpu, worker cpu): separate cores when there are two, so the active worker never
    shares one with the runner; both workers of a pair share a core so they see the same caches."""
    try:
        allowed = sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[-1]


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
                 uid: int | None = None, idle_spin: bool = True) -> None:
        self.label, self.deadline, self.spin = label, deadline, spin
        # No kernel: the Lance arm. Trusted code (pylance), so no sandbox (its runtime needs
        # threads); its time is Lance's own operator timer, sent back with each answer.
        self.reports_own_time = kernel is None
        home = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
        # One copy of the kernel and one numba cache per arm and trial, at stable paths: a later
        # worker pair of the same arm loads the cached machine code instead of compiling again.
        arm = scratch / f"arm-{label}"
        self.kernel = arm / "kernels.py"
        cache = arm / "numba-cache"
        if not arm.exists():
            arm.mkdir()
            if kernel is not None:
                shutil.copyfile(kernel, self.kernel)
            cache.mkdir()
        if uid is not None:                   # the arm's own uid owns what it may write, and nothing else
            for path in (home, cache):
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


# ----------------------------------------------------------------------------- phases

def run_correctness(worker: Worker, cases: Sequence[Case],
                    check: Callable[[Case, int, dict[str, np.ndarray]], str | None]) -> int:
    """Run every case; raise KernelIncorrect naming the first failing case. Returns calls checked."""
    checked = 0
    for case in cases:
        inst = f"check:{case.name}"
        worker.request({"cmd": "setup", "instance": inst, "params": case.params}, case.arrays,
                       f"building case {case.name}")
        for i, call in enumerate(case.calls):
            _, out, _ = worker.request({"cmd": "call", "instance": inst, "op": "check"}, call,
                                       f"running case {case.name} call {i}")
            problem = check(case, i, out)
            if problem is not None:
                raise KernelIncorrect(f"{worker.label} kernel, case {case.name}, call {i}: {problem}")
            checked += 1
        worker.request({"cmd": "drop", "instance": inst})
    return checked


@dataclass
class SpeedSamples:
    """ns per op for each arm, combo and block, plus the timed calls picked for verification."""

    ns: list[dict[str, list[np.ndarray]]]                      # [arm][combo][block] -> ns array
    counts: list[dict[str, list[np.ndarray]]] = field(default_factory=list)  # same, (queries, 2): cycles, instr
    to_verify: list[tuple[str, dict[str, np.ndarray], list[dict[str, np.ndarray]]]] = field(
        default_factory=list)                                   # (combo, call, outputs per arm)
    jit_seconds: list[float] = field(default_factory=list)     # per arm
    verified: int = 0
    overhead_ns: list[dict[str, list[int]]] = field(default_factory=list)   # [arm][combo][block], Lance mode


def _call(worker: Worker, inst: str, call: dict[str, np.ndarray], what: str, rivals: Sequence[Worker],
          spin_ns: int = 0) -> tuple[dict[str, np.ndarray], int, tuple[int, int]]:
    """One timed call: outputs, ns as the runner saw it, and the worker's (cycles, instructions)
    for it, (-1, -1) without counters. Counters are read outside the timed window. Every rival
    worker is frozen first, so only the timed one can run."""
    _freeze_rivals(worker, rivals)
    message: dict[str, Any] = {"cmd": "call", "instance": inst, "op": "speed"}
    if spin_ns:
        message["spin_ns"] = spin_ns
    before = worker.counters.read() if worker.counters else None
    _, out, ns = worker.request(message, call, what, timed=True)
    if worker.reports_own_time:
        out = dict(out)
        ns = own_time_ns(out.pop("lance_ns", None), worker.label)
    if before is None or worker.counters is None:
        return out, ns, (-1, -1)
    after = worker.counters.read()
    return out, ns, (after[0] - before[0], after[1] - before[1])


def _freeze_rivals(worker: Worker, rivals: Sequence[Worker]) -> None:
    for rival in rivals:
        if rival is not worker:
            rival.freeze()


def own_time_ns(value: object, label: str) -> int:
    """The time an arm reported for its own call (Lance's operator timer), strictly: one positive
    int64 below an hour, or the trial fails."""
    if type(value) is not np.ndarray or value.dtype != np.int64 or value.shape != (1,) or not 0 < value[0] < 3.6e12:
        raise TrialFailure(f"{label} arm: no valid own time for a timed call (got {value!r})")
    return int(value[0])


def call_overhead_ns(worker: Worker, call: dict[str, np.ndarray], rivals: Sequence[Worker], pings: int) -> int:
    """The median round trip of an empty request carrying ``call``'s arrays: what the runner's
    clock adds to a kernel's op (pipes, framing, wake-up). Subtracted only where a kernel is
    compared with an arm that times itself (Lance); kernel-vs-kernel ratios use raw times."""
    _freeze_rivals(worker, rivals)
    rtts = [worker.request({"cmd": "ping"}, call, "measuring the call overhead", timed=True)[2] for _ in range(pings)]
    return int(np.median(rtts))


def measure_block(workers: Sequence[Worker], workloads: Sequence[Workload], seed: int, block: int,
                  queries_per_combo: int, warmup_calls: int, verify_fraction: float,
                  samples: SpeedSamples, spins: Sequence[float] = (), fixed_order: bool = False,
                  freeze: bool = True) -> None:
    """One block: a pass over every combo (in random order) with one set of workers, alternating
    arms query by query in a random order per query. A secret-seeded subset of timed calls is
    kept for verification. ``fixed_order`` (calibration's ablation) drops the randomness of order."""
    # The runner's own collector must not pause between a request and its timed reply: it is off
    # for the block and catches up afterwards, off the clock.
    gc.disable()
    try:
        _measure_block(workers, workloads, seed, block, queries_per_combo, warmup_calls, verify_fraction, samples,
                       spins, fixed_order, workers if freeze else ())
    finally:
        gc.enable()


def _measure_block(workers: Sequence[Worker], workloads: Sequence[Workload], seed: int, block: int,
                   queries_per_combo: int, warmup_calls: int, verify_fraction: float,
                   samples: SpeedSamples, spins: Sequence[float], fixed_order: bool,
                   rivals: Sequence[Worker]) -> None:
    stream = Stream(mix_seeds(seed, "order", block))
    combo_order = [workloads[i] for i in np.argsort(stream.f32(len(workloads)), kind="stable")]
    for w in (workloads if fixed_order else combo_order):
        # Queries never repeat for a kernel within a trial: each block draws its own.
        calls = w.queries(mix_seeds(seed, "block", block), warmup_calls + queries_per_combo)
        inst = f"speed:{w.combo}"
        # Which arm is built and warmed first is random too: any first-mover effect becomes noise.
        first_movers = list(workers)[::-1] if stream.integers(2, 1)[0] and not fixed_order else list(workers)
        for worker in first_movers:
            worker.request({"cmd": "setup", "instance": inst, "params": {**w.params, **worker.setup_params}},
                           w.arrays, f"building workload {w.combo}")
        # Calibration's injected slowdown: a fraction of the arm's own last call as the runner
        # timed it (without its spin), so the measured effect is the nominal one on average.
        spin = list(spins) or [0.0] * len(workers)
        last_ns = [0] * len(workers)
        for worker in first_movers:
            for i, call in enumerate(calls[:warmup_calls]):       # untimed; numba compiles here
                _, ns, _ = _call(worker, inst, call, f"warming up {w.combo}", rivals)
                last_ns[workers.index(worker)] = ns
                if i == 0:
                    worker.first_call_ns.setdefault(w.combo, ns)
        if any(worker.reports_own_time for worker in workers):
            for arm, worker in enumerate(workers):
                if not worker.reports_own_time:
                    samples.overhead_ns[arm].setdefault(w.combo, []).append(
                        call_overhead_ns(worker, calls[0], rivals, OVERHEAD_PINGS))
        timed = np.zeros((len(workers), queries_per_combo), dtype=np.int64)
        counts = np.full((len(workers), queries_per_combo, 2), -1, dtype=np.int64)
        flips = stream.integers(2, queries_per_combo)
        check = stream.f32(queries_per_combo) < np.float32(verify_fraction)
        check[stream.integers(queries_per_combo, 1)[0]] = True       # at least one per combo
        against_self_timed = any(worker.reports_own_time for worker in workers)
        for q, call in enumerate(calls[warmup_calls:]):
            arms = list(range(len(workers)))
            if flips[q] and not fixed_order:
                arms.reverse()
            outs: list[dict[str, np.ndarray]] = [{} for _ in workers]
            for arm in arms:
                if against_self_timed and not workers[arm].reports_own_time:
                    # Lance's timer starts after its own per-query planning has warmed its caches;
                    # the kernel gets the same: an untimed call on the previous query first.
                    _call(workers[arm], inst, calls[warmup_calls + q - 1], f"warming {w.combo}", rivals)
                spin_ns = int(spin[arm] * last_ns[arm])
                outs[arm], timed[arm, q], counts[arm, q] = _call(workers[arm], inst, call, f"timing {w.combo}",
                                                                 rivals, spin_ns)
                last_ns[arm] = int(timed[arm, q]) - spin_ns
            if check[q]:
                for arm, worker in enumerate(workers):
                    if worker.reports_own_time:          # its answer, asked for now, untimed
                        outs[arm] = worker.request({"cmd": "call", "instance": inst, "op": "check"}, call,
                                                   f"checking {w.combo}")[1]
                samples.to_verify.append((w.combo, call, outs))
        for arm, worker in enumerate(workers):
            worker.request({"cmd": "drop", "instance": inst})
            samples.ns[arm].setdefault(w.combo, []).append(timed[arm])
            samples.counts[arm].setdefault(w.combo, []).append(counts[arm])


def jit_seconds(worker: Worker, ns: dict[str, list[np.ndarray]]) -> float:
    """Import time plus each combo's first call in excess of its steady-state median: numba's
    compile (or cache load) cost, paid once per worker process."""
    extra = sum(max(0.0, first - float(np.median(ns[c][-1]))) for c, first in worker.first_call_ns.items())
    return worker.import_seconds + extra / 1e9


def verify_pending(workloads: Sequence[Workload], samples: SpeedSamples, labels: Sequence[str]) -> None:
    """Check the picked timed calls against the oracle, so a kernel cannot be honest when checked
    and fast when timed (it cannot tell which calls are picked)."""
    by_combo = {w.combo: w for w in workloads}
    while samples.to_verify:
        combo, call, outs = samples.to_verify.pop()
        check = by_combo[combo].verify(call)
        for label, out in zip(labels, outs):
            problem = check(out)
            if problem is not None:
                raise KernelIncorrect(f"{label} kernel, timed call on {combo}: {problem}")
        samples.verified += len(outs)


# ----------------------------------------------------------------------------- the trial

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _affinity() -> list[int] | None:
    try:
        return psutil.Process().cpu_affinity()
    except (AttributeError, psutil.Error):
        return None


def _set_affinity(cpus: list[int] | None) -> None:
    if cpus:
        try:
            psutil.Process().cpu_affinity(cpus)
        except (AttributeError, psutil.Error):
            pass


def _r(x: float, digits: int) -> float:
    return float(round(x, digits))


def run_trial(plan: TargetPlan, options: TrialOptions,
              on_samples: Callable[[SpeedSamples], None] | None = None) -> TrialResult:
    """Run one trial and return its result; failures become results with exit codes, not raises.
    ``on_samples`` sees the raw timings of a trial that passed (calibration keeps them)."""
    started = time.monotonic()
    deadline = started + options.budget_seconds
    paired = options.against is not None or options.lance
    mode = "paired" if paired else options.mode
    seed = options.seed if options.seed is not None else secrets.randbits(64)
    runner_cpu, worker_cpu = (None, None) if "pinning" in options.ablated else _cpus()
    result = TrialResult(
        target=plan.name, mode=mode, exit_code=EXIT_INTERNAL, correctness="not_run",
        arch=platform.machine(), cpu=cpu_model(), python=platform.python_version(),
        numpy=_version("numpy"), numba=_version("numba"),
        threads={**sandbox.THREAD_ENV, "worker_cpu": str(worker_cpu), "runner_cpu": str(runner_cpu)},
        passes=3 if mode == "baseline" else 1,
        replicates=(options.replicates or plan.replicates) if paired else 1,
        sessions=(options.sessions or plan.sessions) if paired else 1,
        queries_per_combo=options.queries_per_combo or (
            plan.queries_per_combo if paired else plan.single_queries_per_combo),
        query_seed=f"{seed:016x}", kernel_sha256=_sha256(options.kernel),
        injected_slowdown=options.injected_slowdown, ablated=list(options.ablated),
        against_sha256=_sha256(options.against) if options.against else "")
    # Taken before pinning: an in-process caller (calibrate) runs many trials, and each must find
    # the process as the previous one found it, free to use every core.
    original_affinity = _affinity()
    if runner_cpu is not None:
        _set_affinity([runner_cpu])
    with tempfile.TemporaryDirectory(prefix="lar-trial-") as tmp:
        scratch = Path(tmp)
        log_dir = options.log_dir or scratch
        log_dir.mkdir(parents=True, exist_ok=True)
        workers: list[Worker] = []
        try:
            _run_phases(plan, options, result, seed, deadline, (scratch, log_dir), workers,
                        (runner_cpu, worker_cpu), on_samples)
            result.exit_code, result.correctness = EXIT_OK, "pass"
        except TrialFailure as exc:
            result.exit_code, result.failure_kind, result.failure = exc.exit_code, exc.kind, str(exc)
            if exc.kind == "incorrect":
                result.correctness = "fail"
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, never a pass
            result.exit_code, result.failure_kind = EXIT_INTERNAL, "internal"
            result.failure = "".join(traceback.format_exception(exc)).strip()
        finally:
            peaks = [peak_rss_mb()] + [w.peak_mb() for w in workers]
            for w in workers:
                w.kill()
            # One deadline for all the reaping: sixteen stuck workers must not add 16 x 10 s.
            reap_until = time.monotonic() + 10.0
            survivors = [pid for w in workers for pid in w.reap(timeout=max(0.1, reap_until - time.monotonic()))]
            # Not only the trees the runner knows: anything left as a worker's uid or in its namespace.
            # A killed process may take a moment to exit on a loaded machine: look again until the
            # reap deadline before calling it a survivor.
            uids = {w.uid for w in workers if w.uid is not None}
            namespaces = {w.pid_namespace for w in workers if w.pid_namespace is not None}
            left = sandbox.survivors(uids, namespaces)
            while left and time.monotonic() < reap_until:
                time.sleep(0.05)
                left = sandbox.survivors(uids, namespaces)
            survivors += left
            _set_affinity(original_affinity)
    if survivors:
        result.exit_code, result.failure_kind = EXIT_INTERNAL, "internal"
        result.failure = f"worker processes survived the kill: {survivors}"
    result.peak_mem_mb = _r(max(peaks), 1)
    result.total_seconds = _r(time.monotonic() - started, 3)
    if result.ok and result.total_seconds > options.budget_seconds:
        result.exit_code, result.failure_kind = EXIT_TIMEOUT, "timeout"
        result.failure = f"trial took {result.total_seconds} s, over its budget of {options.budget_seconds:g} s"
    return result


def _run_phases(plan: TargetPlan, options: TrialOptions, result: TrialResult, seed: int, deadline: float,
                dirs: tuple[Path, Path], workers: list[Worker], cpus: tuple[int | None, int | None],
                on_samples: Callable[[SpeedSamples], None] | None) -> None:
    arms: list[tuple[str, Path | None]]
    if options.lance:
        arms = [("lance", None), ("candidate", options.kernel)]
    elif options.against:
        arms = [("incumbent", options.against), ("candidate", options.kernel)]
    else:
        arms = [("kernel", options.kernel)]
    runner_cpu, worker_cpu = cpus
    spin = runner_cpu is not None and runner_cpu != worker_cpu

    start_order = Stream(mix_seeds(seed, "start-order"))

    box = sandbox.sandbox_for(unsafe_no_sandbox=not options.sandbox)
    result.sandbox = box.label
    if not box.active and not box.off:
        raise TrialFailure(f"no sandbox for untrusted kernels: {box.unavailable}")
    sandbox.make_bundle(dirs[0], plan.ops_module)
    # Root: each arm gets a uid of its own, so nothing of one arm can touch the other's files.
    uids = {label: sandbox.new_uid() if box.active and box.setpriv and path is not None else None
            for label, path in arms}
    if options.lance:
        if plan.lance_params is None:
            raise TrialFailure(f"Lance cannot run {plan.name}'s op: there is no Lance arm for this target")
        result.anchor = lance_anchor()

    def start_workers() -> list[Worker]:
        """A fresh process per arm, started in random order; returned in arm order."""
        order = list(range(len(arms)))
        if start_order.integers(2, 1)[0] and "random-order" not in options.ablated:
            order.reverse()
        fresh: dict[int, Worker] = {}
        for i in order:
            label, path = arms[i]
            if path is None:
                fresh[i] = Worker(label, None, LANCE_OPS, *dirs, deadline, worker_cpu, spin, sandbox.Sandbox(off=True),
                                  options.budget_seconds)
                fresh[i].setup_params = {**(plan.lance_params or {}), "lance_cache": str(cache.cache_dir() / "lance")}
            else:
                fresh[i] = Worker(label, path, plan.ops_module, *dirs, deadline, worker_cpu, spin, box,
                                  options.budget_seconds, uids[label], idle_spin="freeze" not in options.ablated)
            workers.append(fresh[i])
        return [fresh[i] for i in range(len(arms))]

    current = start_workers()                 # workers import while the runner builds fixtures
    t0 = time.monotonic()
    cases = plan.cases(seed)
    workloads = plan.workloads()
    result.fixture_seconds = _r(time.monotonic() - t0, 3)
    result.shapes_tested = sorted({w.shape for w in workloads}, key=lambda s: [int(x) for x in s.split("x")])
    result.distributions_tested = list(dict.fromkeys(w.distribution for w in workloads))
    for w in current:
        w.hello()
    # Correctness first, candidate first: a wrong kernel costs no timing. (Lance is checked where
    # it is built, and on its timed calls like any arm.)
    for w in reversed(current):
        if not w.reports_own_time:
            result.correctness_cases = run_correctness(w, cases, plan.check)
    result.correctness = "pass"

    passes = result.replicates if len(arms) == 2 else result.passes
    samples = SpeedSamples(ns=[{} for _ in arms], counts=[{} for _ in arms], jit_seconds=[0.0 for _ in arms],
                           overhead_ns=[{} for _ in arms])
    spins = [options.injected_slowdown if label == "incumbent" else 0.0 for label, _ in arms]
    # Said once per trial: either every worker was counted, or the first reason one was not.
    result.counters = next((w.counters_note for w in current if w.counters is None), current[0].counters_note)
    block = 0
    monitor = contention.Monitor(worker_cpu, runner_cpu)
    for rep in range(passes):
        for _ in range(result.sessions):
            monitor.begin(w.pid for w in current if w.pid is not None)
            measure_block(current, workloads, seed, block, result.queries_per_combo,
                          0 if "warmup" in options.ablated else plan.warmup_calls, plan.verify_fraction, samples,
                          spins, fixed_order="random-order" in options.ablated, freeze="freeze" not in options.ablated)
            monitor.end(w.pid for w in current if w.pid is not None)
            result.contention = monitor.summary()
            block += 1
        for arm, w in enumerate(current):
            samples.jit_seconds[arm] += jit_seconds(w, samples.ns[arm])
        # Killed as soon as they are done: a worker's teardown (its namespace, its memory) then
        # overlaps the verification and the next pair's start.
        for w in current:
            w.kill()
        if rep + 1 < passes:
            current = start_workers()         # the next pair boots while this one's calls are verified
        verify_pending(workloads, samples, [label for label, _ in arms])
        if rep + 1 < passes:
            for w in current:
                w.hello()
    result.verified_calls = samples.verified
    if on_samples is not None:
        on_samples(samples)
    combos = [w.combo for w in workloads]
    if options.lance:
        samples.ns[1] = without_call_overhead(samples.ns[1], samples.overhead_ns[1], combos)
        result.call_overhead_ns = {c: _r(float(np.median(samples.overhead_ns[1][c])), 1) for c in combos}
    summarise(result, samples, combos, paired=len(arms) == 2, trim=plan.trim)


def without_call_overhead(ns: dict[str, list[np.ndarray]], overhead: dict[str, list[int]],
                          combos: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """A kernel arm's times less each block's measured call overhead, for comparison with an arm
    that times itself. Fails closed where the overhead is most of the time: the difference would
    then be mostly noise."""
    out: dict[str, list[np.ndarray]] = {}
    for c in combos:
        out[c] = []
        for block, over in zip(ns[c], overhead[c]):
            if over >= 0.5 * float(np.median(block)):
                raise TrialFailure(f"{c}: the call overhead ({over / 1e3:.0f} us) is over half the kernel's time "
                                   f"({np.median(block) / 1e3:.0f} us); a comparison with Lance's own timer "
                                   "would be mostly noise")
            out[c].append(np.maximum(block - over, 1))
    return out


def lance_anchor() -> str:
    """What a vs-Lance figure was measured against: pylance version, timer, CPU and SIMD flags."""
    from targets.harness import lance      # only here: kernel-only trials never import pylance
    return (f"pylance {lance.version()}; Lance's own timer {lance.SUB_INDEX_TIMER[0]}.{lance.SUB_INDEX_TIMER[1]}; "
            f"{cpu_model()}; simd {lance.simd_flags()}")


def _absolute(ns: dict[str, list[np.ndarray]], combos: Sequence[str]) -> tuple[dict[str, float], float,
                                                                               tuple[float, float], Measured]:
    """One arm's absolute timing: per-combo geomean ns, their geomean, its CI, and the worst combo."""
    per_combo = {c: stats.geomean(np.concatenate(ns[c])) for c in combos}
    lo, hi = stats.bootstrap_geomean_ci([np.concatenate(ns[c]) for c in combos])
    worst = max(per_combo, key=per_combo.__getitem__)
    return ({c: _r(v, 1) for c, v in per_combo.items()}, _r(stats.geomean(list(per_combo.values())), 1),
            (_r(lo, 1), _r(hi, 1)), Measured(_r(per_combo[worst], 1), worst))


def _counted(counts: dict[str, list[np.ndarray]], combos: Sequence[str], which: int) -> float | None:
    """Geomean over combos of the per-call geomean of a counter (0 cycles, 1 instructions), or None
    if any timed call went uncounted."""
    per_combo = [np.concatenate([block[:, which] for block in counts.get(c, [])]) for c in combos]
    if any(v.size == 0 or np.any(v <= 0) for v in per_combo):
        return None
    return _r(stats.geomean([stats.geomean(v) for v in per_combo]), 1)


def log_ratio_blocks(samples: SpeedSamples, combos: Sequence[str]) -> list[list[np.ndarray]]:
    """``blocks[b][c]``: per-pair log(t_incumbent / t_candidate) for combo c in timing block b.
    Blocks, not single pairs, are the bootstrap's unit: pairs within a block are correlated."""
    inc, cand = samples.ns[0], samples.ns[-1]
    return [[np.log(inc[c][b] / cand[c][b]) for c in combos] for b in range(len(cand[combos[0]]))]


def summarise(result: TrialResult, samples: SpeedSamples, combos: Sequence[str], paired: bool,
              trim: float) -> None:
    """Fill the timing fields of ``result`` from raw samples."""
    cand = samples.ns[-1]
    (result.per_combo_geomean_ns, result.geomean_ns_per_query, result.geomean_ns_ci_90pct,
     result.worst_ns_per_query) = _absolute(cand, combos)
    result.median_ns_per_query = _r(stats.median(np.concatenate([np.concatenate(cand[c]) for c in combos])), 1)
    best = min(result.per_combo_geomean_ns, key=result.per_combo_geomean_ns.__getitem__)
    result.best_ns_per_query = Measured(result.per_combo_geomean_ns[best], best)
    result.jit_seconds = _r(samples.jit_seconds[-1], 3)
    if samples.counts:
        result.geomean_cycles_per_query = _counted(samples.counts[-1], combos, 0)
        result.geomean_instructions_per_query = _counted(samples.counts[-1], combos, 1)
    if not paired:
        return
    inc = samples.ns[0]
    (result.incumbent_per_combo_geomean_ns, result.incumbent_geomean_ns_per_query,
     result.incumbent_geomean_ns_ci_90pct, result.incumbent_worst_ns_per_query) = _absolute(inc, combos)
    if samples.counts:
        result.incumbent_geomean_cycles_per_query = _counted(samples.counts[0], combos, 0)
        result.incumbent_geomean_instructions_per_query = _counted(samples.counts[0], combos, 1)
    replicates = log_ratio_blocks(samples, combos)
    logs = stats.block_log_speedups(replicates, trim)
    per_combo_speedup = {c: math.exp(x) for c, x in zip(combos, logs)}
    result.per_combo_speedup = {c: _r(v, 4) for c, v in per_combo_speedup.items()}
    result.speedup_geomean = _r(math.exp(float(np.mean(logs))), 4)
    lo, hi = stats.block_bootstrap_ci(replicates, trim)
    result.speedup_ci_90pct = (_r(lo, 4), _r(hi, 4))
    worst_c = min(per_combo_speedup, key=per_combo_speedup.__getitem__)
    result.worst_combo_speedup = Measured(_r(per_combo_speedup[worst_c], 4), worst_c)


# ----------------------------------------------------------------------------- command line

def add_trial_arguments(parser: argparse.ArgumentParser, default_kernel: Path | None) -> None:
    """The options every trial front end shares (run_experiment.py and `orchestrator trial`)."""
    parser.add_argument("--kernel", type=Path, default=default_kernel,
                        help="kernel file under test (default: the target's kernels.py)")
    parser.add_argument("--against", type=Path, help="incumbent kernel: paired, interleaved speedup")
    parser.add_argument("--against-lance", action="store_true",
                        help="paired against Lance itself (pylance, its own operator timer): the vs_lance speedup")
    parser.add_argument("--mode", choices=("single", "baseline"), default="single",
                        help="without --against: single pass, or baseline (3 passes)")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_SECONDS)
    parser.add_argument("--seed", type=lambda s: int(s, 0), help="query seed (default: secret, random)")
    parser.add_argument("--replicates", type=int, help="fresh worker pairs (paired mode)")
    parser.add_argument("--sessions", type=int, help="timing blocks per worker pair (paired mode)")
    parser.add_argument("--queries", type=int, help="timed queries per combo and block")


def trial_argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the shared trial options, as a message naming the flag, or None."""
    for flag in ("kernel", "against"):
        path = getattr(args, flag, None)           # front ends without --against (calibrate)
        if path is not None and not path.is_file():
            return f"--{flag} {path}: no such file (give the path of a kernels.py to measure)"
    if getattr(args, "against", None) is not None and getattr(args, "against_lance", False):
        return "--against and --against-lance: give one incumbent (a kernels.py, or Lance itself)"
    if args.budget_seconds <= 0:
        return "--budget-seconds must be positive"
    for flag in ("replicates", "sessions", "queries"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return f"--{flag} must be at least 1"
    return None


def parse_args(argv: Sequence[str] | None, target: str, default_kernel: Path) -> tuple[TrialOptions, Path | None]:
    parser = argparse.ArgumentParser(prog=f"run_experiment ({target})",
                                     description=f"Run one {target} trial: correctness, then timing.")
    add_trial_arguments(parser, default_kernel)
    parser.add_argument("--log-dir", type=Path, help="keep worker logs here")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run kernels WITHOUT the sandbox, with your own rights (trusted kernels only)")
    parser.add_argument("--token-stdin", action="store_true",
                        help="read a per-trial token from stdin and sign the result with it (the daemon's channel)")
    parser.add_argument("--result-json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    problem = trial_argument_problem(args)
    if problem:
        parser.error(problem)
    options = TrialOptions(kernel=args.kernel.resolve(), against=args.against.resolve() if args.against else None,
                           lance=args.against_lance, mode=args.mode, budget_seconds=args.budget_seconds, seed=args.seed,
                           replicates=args.replicates, sessions=args.sessions, queries_per_combo=args.queries,
                           log_dir=args.log_dir, sandbox=not args.unsafe_no_sandbox,
                           token=sys.stdin.readline().strip() if args.token_stdin else "")
    return options, args.result_json


def main(plan: TargetPlan, argv: Sequence[str] | None, default_kernel: Path) -> int:
    """Entry point for a target's run_experiment.py: prints the result block, exits with its code."""
    sandbox.set_dumpable(False)          # workers of the same user can't read this process's memory
    options, result_json = parse_args(argv, plan.name, default_kernel)
    result = run_trial(plan, options)
    if result_json is not None:
        write_atomic(result_json, sign(result, options.token))
    sys.stdout.write(result.to_block())
    sys.stdout.flush()
    return result.exit_code
