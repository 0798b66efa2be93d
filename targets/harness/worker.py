"""A worker process: imports one kernel file and executes calls on the runner's request.

Runs as ``python -I -c <boot> ...`` with a minimal environment (see ``runner.worker_env``). It is
trusted code sharing a process with untrusted code, so it never decides anything: it runs the
target's op functions and ships their outputs back as raw bytes for the runner to judge.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from types import ModuleType
from typing import Any

from targets.harness import wire


def load_kernel(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernels", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
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


def lock_filesystem(writable: list[str]) -> None:
    """Inside the worker's own mount namespace (as its root), before any kernel code runs: make
    every mount read-only except ``writable`` (its home and its arm's numba cache), so kernel
    code can't change the project, the harness, site-packages or the other arm's files.

    Open files for writing pin a mount read-write, so the log moves into the home first.
    """
    for path in writable:
        subprocess.run(["mount", "--bind", path, path], check=True, capture_output=True)
    log = os.open(os.path.join(writable[0], "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for mount in reversed(mounts):
        if mount in writable or mount == "/proc" or mount.startswith("/proc/"):
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", mount], capture_output=True)
    probe = os.path.join(os.path.dirname(writable[0]), ".write-probe")
    try:
        with open(probe, "w"):
            pass
    except OSError:
        return
    os.unlink(probe)
    raise RuntimeError("could not make the file system read-only for the kernel")


def _error(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": "".join(traceback.format_exception(exc)).strip()}


def serve(request_fd: int, reply_fd: int, target_module: str, kernel_path: str) -> int:
    ops = importlib.import_module(target_module)
    writable = [p for p in os.environ.get("LAR_WRITABLE", "").split(os.pathsep) if p]
    if writable:
        try:
            lock_filesystem(writable)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            wire.send(reply_fd, {"ok": False, "error": f"sandbox: {exc}"})
            return 0
    started = time.perf_counter()
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
    instances: dict[str, Any] = {}
    while True:
        try:
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
