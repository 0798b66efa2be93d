"""The trial stage: run a target's trial in its own process tree, under a wall-clock budget.

The daemon and ``orchestrator trial`` both come through here. The trial process is trusted
harness code (it never imports a kernel); it gets an environment without secrets, its stdout and
stderr go to files, and its verdict is read from the JSON file it writes, parsed strictly.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.redact import SECRET_NAME
from targets import PROJECT_ROOT, TargetInfo
from targets.harness.process import kill_tree
from targets.harness.resources import DEFAULT_BUDGET_SECONDS
from targets.harness.result import (EXIT_INTERNAL, EXIT_TIMEOUT, ResultParseError, TrialResult,
                                    parse_json, signed_by)
from targets.harness.sandbox import dies_with_me

# Extra wall time past the in-trial budget before the whole tree is killed from outside.
KILL_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class TrialRequest:
    target: TargetInfo
    kernel: Path
    against: Path | None = None
    against_lance: bool = False                # incumbent = Lance itself: a vs_lance measurement
    # single | baseline | profile (result.profile: the op's time split by stage); paired is
    # implied by ``against`` or ``against_lance``
    mode: str = "single"
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    seed: int | None = None
    replicates: int | None = None
    sessions: int | None = None
    queries_per_combo: int | None = None
    unsafe_no_sandbox: bool = False            # only by the user's explicit flag; recorded in the result


@dataclass(frozen=True)
class TrialOutcome:
    exit_code: int                     # the trial process's exit code, or 3 if killed for time
    result: TrialResult | None         # None when no valid result could be read
    error: str | None                  # why there is no result (parse error, kill, crash)
    seconds: float
    stdout_path: Path
    stderr_path: Path
    result_path: Path


def trial_env() -> dict[str, str]:
    """The daemon's environment minus anything that looks like a credential."""
    return {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}


def run(request: TrialRequest, out_dir: Path) -> TrialOutcome:
    """Run one trial; stdout/stderr/result land in ``out_dir``. Never raises for trial failures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = out_dir / "trial.stdout", out_dir / "trial.stderr"
    result_path = out_dir / "result.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", f"{request.target.module}.run_experiment",
           "--kernel", str(request.kernel), "--mode", request.mode,
           "--budget-seconds", str(request.budget_seconds), "--result-json", str(result_path),
           "--log-dir", str(out_dir / "workers"), "--token-stdin"]
    if request.against is not None:
        cmd += ["--against", str(request.against)]
    if request.against_lance:
        cmd += ["--against-lance"]
    if request.seed is not None:
        cmd += ["--seed", str(request.seed)]
    if request.replicates is not None:
        cmd += ["--replicates", str(request.replicates)]
    if request.sessions is not None:
        cmd += ["--sessions", str(request.sessions)]
    if request.queries_per_combo is not None:
        cmd += ["--queries", str(request.queries_per_combo)]
    if request.unsafe_no_sandbox:
        cmd += ["--unsafe-no-sandbox"]
    started = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=trial_env(), stdin=subprocess.PIPE,
                                stdout=out, stderr=err, start_new_session=True, preexec_fn=dies_with_me())
        # The token goes over stdin (not argv or the environment, which other processes can read);
        # a result not signed with it was not written by this trial's runner, or was changed since.
        token = secrets.token_hex(16)
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{token}\n".encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = proc.wait(timeout=request.budget_seconds + KILL_GRACE_SECONDS)
        except BaseException as exc:   # timeout, or the daemon itself interrupted: the tree goes
            kill_tree(proc.pid, reap=proc.wait)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            return TrialOutcome(EXIT_TIMEOUT, None,
                                f"trial killed after {request.budget_seconds + KILL_GRACE_SECONDS:g} s",
                                time.monotonic() - started, stdout_path, stderr_path, result_path)
    seconds = time.monotonic() - started
    try:
        text = result_path.read_text()
        result = parse_json(text)
    except (OSError, ResultParseError) as exc:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        return TrialOutcome(code if code else EXIT_INTERNAL, None, f"no valid result ({exc}); stderr tail:\n{tail}",
                            seconds, stdout_path, stderr_path, result_path)
    if not signed_by(text, token):
        return TrialOutcome(EXIT_INTERNAL, None, "the result is not signed with this trial's token (written or "
                            "changed by something other than its runner); not trusted",
                            seconds, stdout_path, stderr_path, result_path)
    if result.exit_code != code:
        return TrialOutcome(code if code else EXIT_INTERNAL, None,
                            f"trial exited {code} but its result says {result.exit_code}",
                            seconds, stdout_path, stderr_path, result_path)
    return TrialOutcome(code, result, None, seconds, stdout_path, stderr_path, result_path)
