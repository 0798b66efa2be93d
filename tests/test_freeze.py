"""Freezing an arm stops every process of it: the worker and, sandboxed, the init of its PID
namespace (same uid in a user namespace, so a kernel could plant work there)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from conftest import BASELINE
from targets.harness import process, sandbox


def _state(pid: int) -> str:
    return psutil.Process(pid).status()


@pytest.mark.parametrize("unsafe", [False, True], ids=["sandboxed", "unsandboxed"])
def test_freeze_stops_every_process_below_the_runners_child(tmp_path: Path, unsafe: bool) -> None:
    box = sandbox.sandbox_for(unsafe_no_sandbox=unsafe)
    if not box.active and not box.off:
        pytest.skip(f"no sandbox here: {box.unavailable}")
    sandbox.make_bundle(tmp_path, "targets.harness.pq")
    uid = sandbox.new_uid() if box.active and box.setpriv else None
    worker = process.Worker("kernel", BASELINE, "targets.harness.pq", tmp_path, tmp_path, time.monotonic() + 60,
                            None, False, box, 60.0, uid)
    try:
        worker.hello()
        below = [p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)]
        inner = below if box.active else [worker.proc.pid]
        assert worker.pid in inner and len(inner) == (2 if box.active else 1), inner   # sandboxed: init + worker
        worker.freeze()
        assert all(_state(pid) == psutil.STATUS_STOPPED for pid in inner), [(p, _state(p)) for p in inner]
        worker.thaw()
        assert not any(_state(pid) == psutil.STATUS_STOPPED for pid in inner)
        worker.request({"cmd": "ping"}, {}, "after a thaw")            # and it still answers
    finally:
        worker.kill()
        worker.reap(5.0)
