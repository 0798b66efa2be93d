"""The command line and the trial stage as the daemon uses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BASELINE, FAST, ROOT, processes_mentioning
from orchestrator import trial
from targets import TargetInfo, discover
from targets.harness.result import TrialResult, parse_block, sign


def orchestrator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=env)


@pytest.mark.slow
def test_targets_lists_pq_l2_with_its_capsule_status() -> None:
    proc = orchestrator("targets")
    assert proc.returncode == 0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("pq-l2"))
    assert "targets/pq_l2" in line and "landed" in line
    # A status wrapped over several lines is shown whole (bitpack's runs to "nothing upstreamed").
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("bitpack"))
    assert "unchunk" in line and "nothing upstreamed" in line and "##" not in line


def test_discovery_maps_folder_names_to_dashed_target_names() -> None:
    found = discover()
    assert found["pq-l2"].module == "targets.pq_l2"
    assert "harness" not in found                       # plumbing is not a target


@pytest.mark.slow
def test_trial_json_is_the_runner_result(tmp_path: Path, write_kernel) -> None:
    # A kernel that does its distances twice: a sure discard even at a small trial (an A/A trial
    # needs the gate's calibrated size not to be kept by chance).
    pq = ("        _pq_distances(self.table, self.codes_soa, self.num_sub_vectors, self.num_vectors, "
          "self.dists)\n")
    slower = write_kernel("slower", replace=(pq, pq * 2))
    proc = orchestrator("trial", "--target", "pq-l2", "--kernel", str(slower), "--against", str(BASELINE), *FAST,
                        "--json", "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["mode"] == "paired" and data["exit_code"] == 0
    # The gate's verdict rides along.
    assert data.pop("verdict") == "discard" and data.pop("reasons")
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == data
    assert (tmp_path / "out" / "workers").is_dir()


@pytest.mark.slow
def test_trial_block_output_and_incorrect_exit(write_kernel) -> None:
    kernel = write_kernel("wrong", replace=("dists[:] = 0.0", "dists[:] = 1.0"))
    proc = orchestrator("trial", "--target", "pq-l2", "--kernel", str(kernel))
    assert proc.returncode == 2
    assert parse_block(proc.stdout).failure_kind == "incorrect"
    assert "incorrect:" in proc.stderr
    # Without --out-dir the logs go to a fresh directory, and the user is told which.
    logs = Path(proc.stderr.split("trial logs and result.json: ")[1].split("\n")[0])
    assert (logs / "result.json").is_file() and (logs / "workers").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["trial", "--target", "nope"], f"unknown target 'nope'; known targets: {', '.join(sorted(discover()))}"),
    (["trial", "--target", "pq-l2", "--kernel", "missing.py"], "--kernel missing.py: no such file"),
    (["trial", "--target", "pq-l2", "--against", "missing.py"], "--against missing.py: no such file"),
    (["trial", "--target", "pq-l2", "--budget-seconds", "-1"], "--budget-seconds must be positive"),
    (["trial", "--target", "pq-l2", "--queries", "0"], "--queries must be at least 1"),
])
def test_bad_input_is_exit_2_with_the_fix(args: list[str], message: str) -> None:
    proc = orchestrator(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_trial_environment_drops_credentials(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "canary")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = trial.trial_env()
    assert "ANTHROPIC_API_KEY" not in env and "MY_SERVICE_TOKEN" not in env
    assert env["LANG"] == "C.UTF-8"


@pytest.mark.slow
def test_outer_budget_kills_a_hung_trial_and_its_children(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trial, "KILL_GRACE_SECONDS", 0.5)
    fake = TargetInfo("hang", ROOT / "tests" / "fake_targets" / "hang", "tests.fake_targets.hang")
    outcome = trial.run(trial.TrialRequest(target=fake, kernel=BASELINE, budget_seconds=1.0), tmp_path)
    assert outcome.exit_code == 3 and outcome.result is None
    assert "killed" in outcome.error
    assert processes_mentioning("hang_target child") == []


FAILING = TrialResult(target="t", mode="single", exit_code=2, correctness="fail", failure_kind="incorrect",
                      failure="distances differ")


@pytest.mark.parametrize("result, code, signed, tamper, error", [
    ('{"target": "bogus"}', "0", False, "", "no valid result"),               # missing fields
    ("not json", "0", False, "", "no valid result"),
    (FAILING.to_json(), "0", True, "", "exited 0 but its result says 2"),    # disagreeing channels
    (FAILING.to_json(), "2", False, "", "not signed with this trial's token"),          # unsigned
    (sign(FAILING, "a guessed token"), "2", False, "", "not signed with this trial's token"),   # forged
    # Signed by the runner, then changed: the MAC covers every field.
    (FAILING.to_json(), "2", True, 'distances differ|distances agree', "not signed with this trial's token"),
])
def test_the_trial_stage_trusts_only_a_valid_consistent_result(tmp_path: Path, monkeypatch, result: str, code: str,
                                                               signed: bool, tamper: str, error: str) -> None:
    monkeypatch.setenv("FAKE_RESULT", result)
    monkeypatch.setenv("FAKE_EXIT", code)
    if signed:
        monkeypatch.setenv("FAKE_SIGN", "1")
    if tamper:
        monkeypatch.setenv("FAKE_TAMPER", tamper)
    fake = TargetInfo("bogus", ROOT / "tests" / "fake_targets" / "bogus", "tests.fake_targets.bogus")
    outcome = trial.run(trial.TrialRequest(target=fake, kernel=BASELINE, budget_seconds=30), tmp_path)
    assert outcome.result is None
    assert outcome.exit_code != 0                       # fail closed: never a pass
    assert error in outcome.error


@pytest.mark.slow
def test_trial_prints_the_gates_verdict_for_a_faster_kernel(tmp_path: Path) -> None:
    from conftest import NUMBA_KERNEL
    # What prints the verdict is tested, not the worst-combo guard: on a busy machine one combo
    # of this ~1.2x kernel read 0.86x once (the guard has its own tests in test_gate).
    config = tmp_path / "gate.yaml"
    config.write_text("gate: {worst_combo_min: 0.5}\n")
    proc = orchestrator("trial", "--target", "pq-l2", "--kernel", str(NUMBA_KERNEL), "--against", str(BASELINE), *FAST,
                        "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "verdict: keep" in proc.stdout


@pytest.mark.slow
def test_trial_verdict_honours_the_config_thresholds(tmp_path: Path) -> None:
    from conftest import NUMBA_KERNEL
    strict = tmp_path / "strict.yaml"
    strict.write_text("gate: {min_effect: 50.0}\n")          # demand a 51x speedup
    proc = orchestrator("trial", "--target", "pq-l2", "--kernel", str(NUMBA_KERNEL), "--against", str(BASELINE),
                        *FAST, "--config", str(strict), "--json")
    data = json.loads(proc.stdout)
    assert data["verdict"] == "discard" and any(r.startswith("not_faster") for r in data["reasons"])


def fake_checkout(path: Path) -> Path:
    for name in ("HARNESS.md", "orchestrator/__init__.py", "targets/__init__.py"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("")
    return path


@pytest.mark.slow
def test_a_command_run_inside_another_checkout_is_refused(tmp_path: Path) -> None:
    # One virtualenv, two clones: `orchestrator` runs clone A's code; started in clone B it would
    # write A's runs/ and branch A. Refused with both named, exit 2, nothing written.
    other = fake_checkout(tmp_path / "clone-b")
    (other / "sub").mkdir()
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from orchestrator.cli import main; sys.exit(main(['status']))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=other / "sub", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert str(other) in proc.stderr and str(ROOT) in proc.stderr and "python -m orchestrator" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["HARNESS.md", "orchestrator", "sub", "targets"]


def test_the_checkout_itself_its_run_worktrees_and_elsewhere_are_fine(tmp_path: Path, monkeypatch) -> None:
    from orchestrator import project
    project.check_cwd(ROOT / "targets" / "pq_l2")
    root = fake_checkout(tmp_path / "a")
    monkeypatch.setattr(project, "ROOT", root)
    project.check_cwd(root)
    project.check_cwd(fake_checkout(root / "runs" / "pq-l2" / "r1" / "worktree") / "targets")   # a run's own
    project.check_cwd(tmp_path)                                  # in no checkout: the installed one is used
    other = fake_checkout(tmp_path / "b")
    assert project.checkout_of(other / "targets") == other
    with pytest.raises(project.WrongCheckout, match="pip install -e"):
        project.check_cwd(other / "targets")
