"""The sandbox as a user meets it: a worker checks its own confinement; without a sandbox the
commands refuse and write nothing; --unsafe-no-sandbox is the user's explicit choice and shows
everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, ROOT, run_daemon, the_run, wait_for, worker_processes, write_config, write_script
from targets.harness import sandbox
from targets.harness.worker import confinement_problems

NO_BWRAP = {"LAR_BWRAP": "/nonexistent/bwrap"}


def orchestrator(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_an_unconfined_process_is_told_what_is_missing() -> None:
    problems = confinement_problems()          # this test process: no seccomp, not PID 1, ...
    assert "no seccomp filter" in problems and "not alone in its own PID namespace" in problems


def test_the_probe_confines_a_python_and_says_how() -> None:
    box = sandbox.probe()
    assert box.active, box.unavailable
    assert box.label.startswith(f"bwrap {box.version}") and "seccomp" in box.label
    assert ("own unprivileged uid per arm" in box.label) == (os.geteuid() == 0)


@pytest.mark.slow
def test_without_a_sandbox_trial_and_loop_refuse_and_write_nothing(repo: Path) -> None:
    proc = orchestrator("trial", "--target", "pq-l2", env=NO_BWRAP)
    assert proc.returncode == 2
    assert "no sandbox for untrusted kernels" in proc.stderr and "--unsafe-no-sandbox" in proc.stderr
    proc = orchestrator("loop", "--target", "pq-l2", "--model", "offline", cwd=repo, env=NO_BWRAP)
    assert proc.returncode == 2 and "--unsafe-no-sandbox" in proc.stderr
    assert not (repo / "runs" / "pq-l2").exists()


def test_a_trial_without_a_sandbox_fails_closed_however_it_is_started(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "targets.pq_l2.run_experiment", "--result-json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **NO_BWRAP})
    data = json.loads(out.read_text())
    assert proc.returncode == 1 and data["failure_kind"] == "internal"
    assert "no sandbox for untrusted kernels" in data["failure"] and data["correctness"] == "not_run"


@pytest.mark.slow
def test_unsafe_no_sandbox_is_recorded_and_shown_on_every_line(repo: Path) -> None:
    # The same computation with one more (unused) name: new code, so it is trialled, not a duplicate.
    kernel = (ROOT / "targets" / "pq_l2" / "kernels.py").read_text() + "\n_REWORDED = True\n"
    script = write_script(repo, "one", [f"HYPOTHESIS: the same kernel.\n\n```python\n{kernel}```\n"])
    proc = run_daemon(repo, script, "--unsafe-no-sandbox", "--max-attempts", "1", config=write_config(repo),
                      env=NO_BWRAP)
    assert proc.returncode == 0, proc.stderr
    run_dir = the_run(repo)
    assert json.loads((run_dir / "run.json").read_text())["sandbox"] == sandbox.UNSAFE_LABEL
    status_lines = [line for line in proc.stdout.splitlines() if line.startswith("attempt ")]
    assert status_lines and all("UNSANDBOXED" in line for line in status_lines)
    assert "WITHOUT the sandbox" in proc.stderr
    result = json.loads(next(run_dir.glob("attempts/*/trial/result.json")).read_text())
    assert result["sandbox"] == sandbox.UNSAFE_LABEL
    assert json.loads((run_dir / "run.json").read_text())["config"]["unsafe_no_sandbox"] is True


@pytest.mark.slow
@pytest.mark.parametrize("flag", [[], ["--unsafe-no-sandbox"]])
def test_trial_json_names_the_sandbox_it_ran_under(flag: list[str]) -> None:
    proc = orchestrator("trial", "--target", "pq-l2", *FAST, "--json", *flag)
    assert proc.returncode == 0, proc.stderr
    label = json.loads(proc.stdout)["sandbox"]
    assert label == (sandbox.UNSAFE_LABEL if flag else sandbox.probe().label)


@pytest.mark.slow
def test_a_worker_dies_with_its_runner_even_mid_call(tmp_path: Path, no_leftovers) -> None:
    """SIGKILL the trial's runner while a kernel spins in a call (so the worker never reads the
    closed pipe): the worker must die by its death signal, which its uid change would clear."""
    kernel = tmp_path / "kernels.py"
    kernel.write_text((ROOT / "targets" / "pq_l2" / "kernels.py").read_text().replace(
        "    def search(self, query, k, out_ids, out_dists):\n",
        "    def search(self, query, k, out_ids, out_dists):\n        while True:\n            pass\n"))
    runner = subprocess.Popen([sys.executable, "-m", "targets.pq_l2.run_experiment", "--kernel", str(kernel)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: worker_processes() != [], what="a worker to start")
        time.sleep(3)                                   # well into the spinning call
        assert worker_processes() != []
    finally:
        runner.kill()
        runner.wait()
    no_leftovers(what="the worker to die with its runner")


def test_a_child_whose_parent_died_before_its_death_signal_was_set_kills_itself(tmp_path: Path) -> None:
    """The race a random SIGKILL can hit: the parent dies between fork and the child's prctl, so
    the death signal is never sent. The child must notice (its parent changed) and die."""
    alive = tmp_path / "alive"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from targets.harness import sandbox
parent = os.getpid()
if os.fork() == 0:
    time.sleep(0.5)                       # the parent is gone by now
    sandbox.die_with_parent(parent)
    open({str(alive)!r}, "w").close()     # only a child that survived writes this
    os._exit(0)
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    time.sleep(1.5)
    assert not alive.exists()
