"""A worker process: imports one kernel file and executes calls on the runner's request.

Runs as ``python -I -c <boot> ...`` with a minimal environment (see ``sandbox.worker_env``). It is
trusted code sharing a process with untrusted code, so it never decides anything: it runs the
target's op functions and ships their outputs back as raw bytes for the runner to judge.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import time
import traceback
from types import ModuleType
from typing import Any

from targets.harness import wire

# How long a worker busy-waits for its next request (its own CPU time) before it blocks: long
# enough to span the other arm's call, short enough that an idle worker soon stops burning its core.
SPIN_CPU_SECONDS = 0.02


def load_kernel(path: str, name: str = "kernels") -> ModuleType:
    """A kernels.py as module ``name``. A worker loads one kernel, as ``kernels``; a process that
    loads several (tests, benchmarks) gives each its own name, because numba's cache keys compiled
    functions by module and function name, so two ``kernels`` could run each other's machine code."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def enable_numba_caching(module: ModuleType) -> int:
    """Turn on numba's on-disk cache for every dispatcher the kernel defines, so a trial's later
    worker processes load machine code instead of recompiling (NUMBA_CACHE_DIR is per trial and
    arm). Returns how many dispatchers were switched."""
    numba_registry = sys.modules.get("numba.core.registry")
    if numba_registry is None:
        return 0
    found = 0
    namespaces = [vars(module)] + [vars(v) for v in vars(module).values() if isinstance(v, type)]
    for namespace in namespaces:
        for value in list(namespace.values()):
            value = getattr(value, "__func__", value)          # staticmethod / classmethod
            if isinstance(value, numba_registry.CPUDispatcher) and value._cache.__class__.__name__ == "NullCache":
                value.enable_caching()
                found += 1
    return found


def confinement_problems() -> list[str]:
    """What is missing from the sandbox this process should be in (empty when confined): checked
    by the worker before it loads a kernel, and by the runner's probe."""
    with open("/proc/self/status") as fh:
        status = {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}
    problems = [f"{key} is {status.get(key)}" for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
                if int(status.get(key, "1"), 16) != 0]
    if status.get("NoNewPrivs") != "1":
        problems.append("no_new_privs is not set")
    if status.get("Seccomp") != "2":
        problems.append("no seccomp filter")
    if 0 in (os.getuid(), os.geteuid()):
        problems.append("running as root")
    others = {int(p) for p in os.listdir("/proc") if p.isdigit()} - {os.getpid(), 1}
    if os.getpid() > 2 or others:             # bwrap's init is PID 1, the worker PID 2, no one else
        problems.append("not alone in its own PID namespace")
    with open("/proc/net/dev") as fh:
        interfaces = [line.split(":")[0].strip() for line in fh.readlines()[2:]]
    if interfaces not in ([], ["lo"]):
        problems.append(f"network interfaces {interfaces}")
    try:
        with open("/.write-probe", "w"):
            pass
        problems.append("the root file system is writable")
    except OSError:
        pass
    return problems


def _error(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": "".join(traceback.format_exception(exc)).strip()}


def serve(request_fd: int, reply_fd: int, target_module: str, kernel_path: str) -> int:
    ops = importlib.import_module(target_module)
    if os.environ.get("LAR_SANDBOX") == "1":
        problems = confinement_problems()
        if problems:
            wire.send(reply_fd, {"ok": False, "error": f"sandbox: refusing to load the kernel: {'; '.join(problems)}"})
            return 0
    started = time.perf_counter()
    kernels, cached = None, 0      # no kernel path: an arm of trusted code only (Lance)
    if kernel_path:
        try:
            kernels = load_kernel(kernel_path)
        except BaseException as exc:   # noqa: BLE001 - SystemExit from a kernel is a crash too
            wire.send(reply_fd, _error(exc))
            return 0
        try:
            cached = enable_numba_caching(kernels)
        except Exception:  # noqa: BLE001 - caching is an optimisation; never fail a trial for it
            cached = 0
    wire.send(reply_fd, {"ok": True, "import_seconds": time.perf_counter() - started, "pid": os.getpid(),
                         "numba_cached": cached})
    gc.disable()                   # no collector pauses inside timed calls
    # The runner turns the idle spin off where it does not freeze idle arms (calibration's
    # "freeze" ablation): a spinning idle worker would then compete with the timed one.
    idle_spin = SPIN_CPU_SECONDS if os.environ.get("LAR_IDLE_SPIN", "1") == "1" else 0.0
    instances: dict[str, Any] = {}
    while True:
        try:
            wire.spin_until_readable(request_fd, idle_spin)
            message, arrays = wire.recv(request_fd)
        except wire.WireError:
            return 0               # the runner went away
        cmd = message.get("cmd")
        try:
            if cmd == "call":
                outputs = ops.OPS[message["op"]](instances[message["instance"]], arrays)
                if message.get("spin_ns"):      # calibration: a known slowdown of this call
                    until = time.perf_counter_ns() + int(message["spin_ns"])
                    while time.perf_counter_ns() < until:
                        pass
                wire.send(reply_fd, {"ok": True}, outputs)
            elif cmd == "setup":
                t0 = time.perf_counter()
                instances[message["instance"]] = ops.build(kernels, message["params"], arrays)
                wire.send(reply_fd, {"ok": True, "seconds": time.perf_counter() - t0})
            elif cmd == "drop":
                instances.pop(message["instance"], None)   # refcounting frees it; no gc pass
                wire.send(reply_fd, {"ok": True})
            elif cmd == "ping":
                wire.send(reply_fd, {"ok": True}, arrays)
            elif cmd == "exit":
                return 0
            else:
                wire.send(reply_fd, {"ok": False, "error": f"unknown command {cmd!r}"})
        except BaseException as exc:  # noqa: BLE001 - report every kernel failure, then go on
            wire.send(reply_fd, _error(exc))


def main(argv: list[str]) -> int:
    request_fd, reply_fd, target_module, kernel_path = int(argv[0]), int(argv[1]), argv[2], argv[3]
    return serve(request_fd, reply_fd, target_module, kernel_path)
