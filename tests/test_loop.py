"""The daemon end to end, on a temporary copy of the repository, with scripted replies."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

import targets
from conftest import (BASELINE, CANARY, KEEP, NUMBA_KERNEL, daemon_cmd, events, finished, processes_mentioning,
                      run_daemon, the_run, wait_for, write_config, write_script)
from targets.harness import machine


def whole_file(hypothesis: str, text: str) -> str:
    return f"HYPOTHESIS: {hypothesis}\n\n```python\n{text}```\n"


def baseline_with(old: str, new: str) -> str:
    text = BASELINE.read_text()
    assert old in text
    return text.replace(old, new)


SEARCH = "    def search(self, query, k, out_ids, out_dists):\n"
INCORRECT = whole_file("Start the accumulators at one.", baseline_with("dists[:] = 0.0", "dists[:] = 1.0"))
CRASH = whole_file("Crash.", baseline_with(SEARCH, SEARCH + "        raise MemoryError('boom')\n"))
# Every distance computed twice (the pass restarts from zero, so the answer is exact).
PQ_DISTANCES = ("        _pq_distances(self.table, self.codes_soa, self.num_sub_vectors, self.num_vectors, "
                "self.dists)\n")
SLOWER = whole_file("Accumulate every sub-vector twice.", baseline_with(PQ_DISTANCES, PQ_DISTANCES * 2))
# SLOWER again, differing only in a comment: the same code, so no second trial.
SLOWER_AGAIN = whole_file("Accumulate twice, restated.",
                          baseline_with(PQ_DISTANCES, "        # twice, on purpose\n" + PQ_DISTANCES * 2))
HANG = whole_file("Think forever.", baseline_with(SEARCH, SEARCH + "        while True:\n            pass\n"))
MALFORMED = "I would vectorise the loop.\n"
BAD_SEARCH = ("HYPOTHESIS: Tweak a line that is not there.\n\n<<<<<<< SEARCH\nthis line is not in the file\n"
              "=======\nx = 1\n>>>>>>> REPLACE\n")


@pytest.mark.slow
def test_one_run_covers_keep_and_every_discard_reason(repo: Path) -> None:
    script = write_script(repo, "script", [
        KEEP, INCORRECT, CRASH,
        "ANALYSIS: the gather dominates at M=96.\n\n" + SLOWER.replace("HYPOTHESIS:", "**Hypothesis:**", 1),
        SLOWER_AGAIN, MALFORMED,
        BAD_SEARCH, "HYPOTHESIS: Repaired: leave the kernel as it is.\n\n```python\n"
                    + NUMBA_KERNEL.read_text()
                    + "```\n",
        {"error": {"kind": "invalid", "message": "400 bad request"}},
        {"error": {"kind": "truncated", "message": "max_tokens reached"}},
    ])
    proc = run_daemon(repo, script, config=write_config(repo, profile=True))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = the_run(repo)
    got = finished(run_dir)
    reasons = [got[n]["reason"] for n in sorted(got)]
    # Attempt 6 (malformed) gets a repair turn, which receives BAD_SEARCH and fails again; attempt
    # 7 is then the repaired no-op reply.
    assert reasons == ["keep", "incorrect", "crash", "not_faster", "duplicate", "edit_failed", "no_change",
                       "provider_error", "truncated"], reasons
    # A reply with room to think and a bold label: applied as meant, both logged.
    assert got[4]["analysis"] == "the gather dominates at M=96." and got[4]["repair_turns"] == 0
    assert got[4]["hypothesis"] == "Accumulate every sub-vector twice." and got[4]["edit_notes"]
    assert got[5]["duplicate_of"] == 4 and "attempt 4's code again" in got[5]["reason_detail"]
    assert not (run_dir / "attempts" / "0005" / "trial").exists()              # no trial for a duplicate
    repair = run_dir / "attempts" / "0006" / "repair-1.md"
    assert got[6]["repair_turns"] == 1 and (run_dir / "attempts" / "0006" / "reply-1.md").is_file()
    assert got[6]["repair_prompts"] == [hashlib.sha256(repair.read_bytes()).hexdigest()]
    assert "does not occur" in got[6]["reason_detail"]
    # What the model was shown for attempt 6, as rendered: the current best's time per combo and by
    # stage, the per-combo speedups of recent trials, every failing rule of recent failures, the
    # machine and the limits; the prompt's inputs are saved with the run for later comparison.
    shown = (run_dir / "attempts" / "0006" / "prompt.md").read_text()
    for part in ("Time per op of the current best kernel (attempt 1)", "<- slowest", "| combo | #1 (keep) |",
                 "### Attempt 4 (not_faster)", "### Attempt 5 (duplicate)", machine.cpu_model(),
                 f"SIMD: {machine.simd_flags()}", "repair turn(s)", "| 5 | discard |",
                 "Time by stage of the current best kernel (attempt 1)", "per vector"):
        assert part in shown, part
    # The baseline's split was measured at the start, the keep's after it; each shape sums to the whole.
    baseline = json.loads((run_dir / "run.json").read_text())["baseline_profile"]
    for profile in (baseline, got[1]["profile"]):
        assert profile["shapes"] and all(sum(st["share"] for st in fit["stages"]) == pytest.approx(1.0, abs=0.02)
                                         for fit in profile["shapes"].values()), profile
    assert "The result block and exit codes" not in shown
    saved = {p.name.rsplit(".", 1)[0] for p in (run_dir / "inputs").iterdir()}
    assert {"HARNESS.md", "program.md", "system.md", "attempt.md", "reply-format.md", "repair.md"} <= saved
    # The keep is a commit of exactly the evaluated file on the run's branch.
    ws = git.Repo(run_dir / "worktree")
    assert ws.head.commit.hexsha == got[1]["commit"]
    assert ws.git.show(f"{got[1]['commit']}:targets/pq_l2/kernels.py") + "\n" == \
        (run_dir / "attempts" / "0001" / "candidate.py").read_text()
    assert "speedup" in ws.head.commit.message and "worst combo" in ws.head.commit.message
    assert got[1]["cumulative_speedup"] > 1.1
    assert ws.git.status("--porcelain") == ""                       # worktree clean after discards
    # Every discard keeps its evidence and diff; the trial logs are on disk.
    assert "boom" in got[3]["evidence"]
    assert got[2]["diff"] and (run_dir / "attempts" / "0002" / "trial" / "result.json").is_file()
    # results.tsv: a header and one row per attempt.
    rows = (run_dir / "results.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(got)
    assert all(r["provider"] == "scripted" for r in got.values())
    # The user's checkout was never touched and the canary key leaked nowhere.
    assert git.Repo(repo).git.status("--porcelain", "--untracked-files=no") == ""
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaked == []
    assert "run stopped: scripted replies exhausted" in proc.stdout


@pytest.mark.slow
def test_worst_combo_and_tradeoff_reject_a_lopsided_kernel(repo: Path) -> None:
    assert SEARCH in KEEP
    lopsided = KEEP.replace(SEARCH, SEARCH +                 # 13 times the work at M=96 only
                            "        if self.m > 16:\n"
                            "            for _ in range(12):\n"
                            "                _table(self.cb_t, query, self.m, self.sd, self.table)\n"
                            "                _search(self.table, self.codes_soa, self.num_vectors, self.m, k, self.acc,\n"
                            "                        self.heap_d, self.heap_i, out_ids, out_dists)\n")
    proc = run_daemon(repo, write_script(repo, "s", [lopsided]), config=write_config(repo))
    assert proc.returncode == 0, proc.stderr
    record = finished(the_run(repo))[1]
    assert record["verdict"] == "discard"
    codes = [r.split(":")[0] for r in record["reasons"]]
    assert "worst_combo" in codes and "tradeoff" in codes, record["reasons"]


@pytest.mark.slow
def test_hanging_kernel_times_out_and_leaves_no_process(repo: Path) -> None:
    proc = run_daemon(repo, write_script(repo, "s", [HANG]), config=write_config(repo, trial_budget_seconds=5))
    assert proc.returncode == 0, proc.stderr
    run_dir = the_run(repo)
    assert finished(run_dir)[1]["reason"] == "timeout"
    assert processes_mentioning(str(run_dir)) == []


def trial_running(repo: Path) -> bool:
    return bool(list((repo / "runs" / "pq-l2").glob("*/attempts/*/trial/trial.stdout")))


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_loses_and_duplicates_nothing(repo: Path, no_leftovers) -> None:
    config = write_config(repo, max_attempts=2)
    first = write_script(repo, "first", [SLOWER, SLOWER, SLOWER])
    daemon = subprocess.Popen(daemon_cmd(first, config=config), cwd=repo, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: trial_running(repo), what="the first trial")
        time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    run_dir = the_run(repo)
    assert [e["event"] for e in events(run_dir)] == ["started"]           # in flight when killed
    wait_for(lambda: processes_mentioning(str(run_dir)) == [], timeout=10, what="the trial tree to die")
    # The sandboxed workers too: their uid change must not have cleared their death signal.
    no_leftovers(what="the workers to die")
    # Resume with the stored config: the in-flight attempt becomes "interrupted", numbering goes on,
    # and --max-attempts 2 counts completed attempts across both sessions.
    second = write_script(repo, "second", [SLOWER, INCORRECT, SLOWER])
    proc = run_daemon(repo, second, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = finished(run_dir)
    assert sorted(got) == [1, 2, 3]
    assert got[1]["verdict"] == "interrupted"
    assert [got[2]["reason"], got[3]["reason"]] == ["not_faster", "incorrect"]
    assert "reached --max-attempts 2" in proc.stdout
    assert git.Repo(run_dir / "worktree").git.status("--porcelain") == ""
    assert not (run_dir / "lock").exists()
    # A second resume has nothing left to do under the same budget.
    again = run_daemon(repo, second, "--resume")
    assert again.returncode == 0 and sorted(finished(run_dir)) == [1, 2, 3]


@pytest.mark.slow
def test_lock_refuses_a_second_daemon_and_stop_file_ends_the_first(repo: Path) -> None:
    script = write_script(repo, "slow", [{"text": SLOWER, "delay": 4}, SLOWER, SLOWER])
    daemon = subprocess.Popen(daemon_cmd(script, config=write_config(repo)), cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list((repo / "runs" / "pq-l2").glob("*/run.json")), what="the run")
        run_dir = the_run(repo)
        assert (run_dir / "lock").exists()                  # taken before the run was written
        second = run_daemon(repo, script, "--resume", run_dir.name)
        assert second.returncode == 2
        assert "locked by a live daemon" in second.stderr
        (run_dir / "STOP").touch()
        out, err = daemon.communicate(timeout=120)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert "STOP file found" in out
    assert sorted(finished(run_dir)) == [1]
    assert not (run_dir / "lock").exists()


@pytest.mark.slow
def test_sigterm_records_the_attempt_as_interrupted_and_exits_0(repo: Path) -> None:
    script = write_script(repo, "slow", [{"text": SLOWER, "delay": 30}])
    daemon = subprocess.Popen(daemon_cmd(script, config=write_config(repo)), cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((repo / "runs" / "pq-l2").glob("*/attempts.jsonl"))
             and the_run(repo).joinpath("attempts.jsonl").read_text(), what="attempt 1 to start")
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    run_dir = the_run(repo)
    assert finished(run_dir)[1]["verdict"] == "interrupted"
    assert "interrupted by SIGTERM" in out
    assert not (run_dir / "lock").exists()


@pytest.mark.slow
def test_offline_playbook_run_is_labelled_and_keeps(repo: Path) -> None:
    # The first entry is a real but modest win (it must gain on every combo): judged at the trial size the gate
    # is calibrated for (16 blocks of 8 queries; here 4 pairs x 4 blocks, half the worker starts of
    # 8 x 2, each of which imports numba); smaller trials let one outlier block sink a
    # combo below the worst-combo bar (seen twice in CI, at 2x1x3 and at 5x1x4).
    # One attempt and no re-measure against the baseline (the test above covers it).
    config = write_config(repo, trial_replicates=4, trial_sessions=4, trial_queries=8, cumulative=False)
    proc = run_daemon(repo, None, "--model", "offline", "--max-attempts", "1", config=config)
    assert proc.returncode == 0, proc.stderr
    got = finished(the_run(repo))
    assert all(r["provider"] == "offline" and r["model"] == "playbook:pq_l2" for r in got.values())
    assert got[1]["verdict"] == "keep" and got[1]["sources"] == ["01-fused-top-k.md"]
    assert "offline playbook (no LLM)" in proc.stdout and "[offline] attempt 1: keep" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, config, message", [
    (["--target", "nope"], None, f"unknown target 'nope'; known targets: {', '.join(sorted(targets.discover()))}"),
    (["--model", "script:/nonexistent.yaml"], None, "cannot use this script"),
    (["--model", "gpt-9"], None, "unknown model 'gpt-9'"),
    ([], "max_attemps: 3\n", "max_attemps: unknown key"),
    ([], "max_attempts: -1\n", "max_attempts: must be positive"),
    ([], "gate: {min_effect: high}\n", "gate.min_effect: expected float"),
    ([], ": : :\n", "not valid YAML"),
    (["--max-attempts", "0"], None, "max_attempts: must be positive"),
    (["--resume", "20990101-000000"], None, "no run '20990101-000000'"),
    (["--resume"], None, "no runs of pq-l2"),
])
def test_bad_input_exits_2_and_writes_nothing(repo: Path, args: list[str], config: str | None, message: str) -> None:
    cmd = [sys.executable, "-m", "orchestrator", "loop", "--target", "pq-l2", "--model", "offline", *args]
    if config is not None:
        path = repo.parent / "bad.yaml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not list((repo / "runs").glob("pq-l2/*"))


@pytest.mark.slow
def test_unreadable_config_and_outside_git_exit_2(repo: Path, tmp_path: Path) -> None:
    proc = run_daemon(repo, None, "--model", "offline", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read config" in proc.stderr
    import shutil
    shutil.rmtree(repo / ".git")
    proc = run_daemon(repo, None, "--model", "offline")
    assert proc.returncode == 2 and "not inside a git repository" in proc.stderr
    assert not (repo / "runs" / "pq-l2").exists()


@pytest.mark.slow
def test_a_broken_prompt_template_is_refused_before_the_run_exists(repo: Path) -> None:
    template = repo / "prompts" / "attempt.md"
    template.write_text(template.read_text() + "\n${last_failure}\n")         # a field that no longer exists
    proc = run_daemon(repo, None, "--model", "offline", config=write_config(repo))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "attempt.md uses ${last_failure}, which is not a field here" in proc.stderr and "${failures}" in proc.stderr
    assert not (repo / "runs").exists() or not list((repo / "runs").rglob("run.json"))
