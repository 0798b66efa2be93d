"""`orchestrator new-target`: a working target from the template, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import git
import pytest

from conftest import finished


def cli(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=repo, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_new_target_runs_end_to_end(repo: Path) -> None:
    made = cli(repo, "new-target", "demo-scan")
    assert made.returncode == 0, made.stderr
    assert "targets/demo_scan/kernels.py" in made.stdout and "tests/test_demo_scan.py" in made.stdout
    assert "Step 0, before code: the capsule" in made.stdout            # the checklist is printed
    for rel in ("targets/demo_scan/__init__.py", "targets/demo_scan/target.py", "targets/demo_scan/reference.py",
                "targets/demo_scan/inputs.py", "targets/demo_scan/run_experiment.py", "targets/demo_scan/program.md",
                "targets/demo_scan/playbook/01-one-matmul.md", "docs/targets/demo-scan.md"):
        text = (repo / rel).read_text()
        assert "$" + "{" not in text and "TODO" not in text, rel
    listed = cli(repo, "targets")
    assert any(line.startswith("demo-scan") and "scaffold" in line for line in listed.stdout.splitlines())
    # Its own tests pass as generated.
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_demo_scan.py"],
                           cwd=repo, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # Uncommitted, the loop refuses with the fix; committed, the offline playbook runs and keeps.
    refused = cli(repo, "loop", "--target", "demo-scan", "--model", "offline")
    assert refused.returncode == 2 and "is not committed" in refused.stderr
    # Shape labels are the target's own words: the runner reports them as declared (it used to sort
    # them as numbers, and a label such as this one crashed it).
    run_experiment = repo / "targets" / "demo_scan" / "run_experiment.py"
    run_experiment.write_text(run_experiment.read_text().replace('f"{rows}x{dim}"', 'f"r{rows}-d{dim}"'))
    r = git.Repo(repo)
    r.git.add("-A")
    r.git.execute(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "demo target"])
    (repo / "fast.yaml").write_text("trial_replicates: 1\ntrial_sessions: 4\ntrial_queries: 3\nrepair_turns: 0\n")
    loop = cli(repo, "loop", "--target", "demo-scan", "--model", "offline", "--config", "fast.yaml")
    assert loop.returncode == 0, loop.stdout + loop.stderr
    runs = sorted((repo / "runs" / "demo-scan").glob("*/run.json"))
    got = finished(runs[0].parent)
    assert [got[n]["reason"] for n in sorted(got)] == ["keep", "incorrect", "edit_failed"]
    # The gate's claim, re-measured against the baseline: faster, with the whole 90% CI above 1. The
    # size of the win is the machine's BLAS (1.48x on one CI machine, 1.78x here), so it is not asserted.
    assert got[1]["cumulative_speedup"] > 1.0 and got[1]["cumulative_ci"][0] > 1.0, got[1]
    # Its plan declares a profile: the baseline's and the keep's time split by stage were measured.
    baseline = json.loads((runs[0].parent / "run.json").read_text())["baseline_profile"]
    assert set(baseline["shapes"]) == set(got[1]["profile"]["shapes"]) == {"r4096-d64", "r16384-d128"}, baseline


@pytest.mark.slow
@pytest.mark.parametrize("name,message", [
    ("pq-l2", "already exists"),
    ("Bad_Name", "must be lower-case letters"),
    ("harness", "reserved"),
    ("class", "reserved"),
    ("1abc", "must be lower-case letters"),
])
def test_refusals_write_nothing(repo: Path, name: str, message: str) -> None:
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git" not in p.parts)
    proc = cli(repo, "new-target", name)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    after = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git" not in p.parts)
    assert after == before
