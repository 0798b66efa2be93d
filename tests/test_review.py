"""Reviewing runs: live progress lines, status.json, `status`, `report`, `candidates`, `export`.

One real ledger is built once (scripted replies through the real daemon) and read by every test;
tests that change a run work on their own copy of it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import psutil
import pytest
from rich.console import Console
from test_loop import HANG, INCORRECT, KEEP, SLOWER, whole_file, baseline_with

from conftest import copy_repo, daemon_cmd, history, run_daemon, the_run, wait_for, write_config, write_script
from orchestrator import report
from orchestrator.progress import LiveStatus, Status, read_status

XSS = whole_file("Use <script>alert('x')</script> & friends.", baseline_with("dists[:] = 0.0", "dists[:] = 2.0"))


def cli(repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=repo, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """A repo copy with one finished run: keep, incorrect, slower, an incorrect reply with markup."""
    repo = copy_repo(tmp_path_factory.mktemp("review") / "repo")
    proc = run_daemon(repo, write_script(repo, "s", [KEEP, INCORRECT, SLOWER, XSS]), config=write_config(repo),
                      vs_lance=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo, the_run(repo), proc


@pytest.mark.slow
def test_without_a_terminal_each_phase_change_is_one_plain_line(built) -> None:
    _, _, proc = built
    lines = proc.stdout.splitlines()
    assert "attempt 1: proposing (best: baseline; 0 kept, 0 not; 0 tokens, $0.0000)" in lines
    # In order, once each: nothing after the trial reads as a return to editing.
    first = [line.split(" (")[0].removeprefix("attempt 1: ") for line in lines if line.startswith("attempt 1: ")]
    # The keep is logged before the slow measurement against the baseline, so it can't be lost.
    assert first == ["proposing", "editing", "trial", "gate", "committing", "logging", "measuring vs baseline",
                     "measuring vs Lance"], first
    # Totals move on: by attempt 2 the first keep shows.
    assert any(line.startswith("attempt 2: trial (best ") and "1 kept" in line for line in lines)
    assert "\x1b[" not in proc.stdout                      # no terminal control codes in a log file


@pytest.mark.slow
def test_status_json_records_the_end(built) -> None:
    _, run_dir, _ = built
    status = read_status(run_dir)
    assert status is not None and status.phase == "stopped" and "exhausted" in status.stop_reason
    assert status.attempts_done == 4 and status.keeps == 1 and status.not_kept == {"incorrect": 2, "not_faster": 1}
    assert status.best_speedup and status.best_speedup > 1.1


@pytest.mark.slow
def test_report_html_holds_every_attempt_and_a_real_plot(built) -> None:
    repo, run_dir, _ = built
    proc = cli(repo, "report", "--target", "pq-l2")
    assert proc.returncode == 0, proc.stderr
    page = (run_dir / "report.html").read_text()
    records = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()
               if '"finished"' in line]
    assert len(records) == 4
    for rec in records:
        assert f"<td class='num'>{rec['attempt']}</td>" in page
    assert "Accumulate every sub-vector twice." in page and "not_faster" in page and "incorrect" in page
    # LLM-written text is escaped, never markup.
    assert "<script>" not in page and "&lt;script&gt;alert(" in page
    assert "data:image/png;base64," in page and "numba" in page           # the plot inline, the keep's diff
    assert "Best kernel per combo" in page and "768x96/sparse" in page
    png = (run_dir / "progress.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1400, 700)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[:, :, :3]
    assert pixels.std() > 0.05                                             # not blank
    green = (pixels[:, :, 1] > 0.5) & (pixels[:, :, 0] < 0.3) & (pixels[:, :, 2] < 0.3)
    assert green.sum() > 200                                               # the best-so-far line and the keep


def test_progress_points_put_attempts_on_the_baseline_scale() -> None:
    records = [{"attempt": 1, "verdict": "keep", "reason": "keep", "speedup": 2.0, "cumulative_speedup": 2.1},
               {"attempt": 2, "verdict": "discard", "reason": "not_faster", "speedup": 0.5},
               {"attempt": 3, "verdict": "discard", "reason": "incorrect"},
               {"attempt": 4, "verdict": "keep", "reason": "keep", "speedup": 1.5},          # no cumulative: chained
               {"attempt": 5, "verdict": "interrupted", "reason": "interrupted"}]
    points = report.progress_points(history(*records))
    got = [(p.kind, None if p.speedup is None else round(p.speedup, 9), round(p.best, 9)) for p in points]
    assert got == [("keep", 2.1, 2.1), ("discard", 1.05, 2.1), ("incorrect", None, 2.1), ("keep", 3.15, 3.15),
                   ("interrupted", None, 3.15)]


@pytest.mark.slow
def test_every_keep_is_measured_against_lance_and_shown(built) -> None:
    repo, run_dir, _ = built
    keep = report.load_run(run_dir).keeps[0]
    assert keep.vs_lance and keep.vs_lance > 0 and len(keep.vs_lance_ci) == 2, keep.vs_lance_error
    assert keep.lance_anchor and keep.lance_anchor.startswith("pylance ") and len(keep.vs_lance_per_combo) == 9
    assert (run_dir / "attempts" / "0001" / "vs_lance" / "result.json").is_file()
    status = cli(repo, "status")
    assert "vs Lance" in status.stdout.splitlines()[0] and f"{keep.vs_lance:.2f}x" in status.stdout


@pytest.mark.slow
def test_candidates_are_keeps_that_beat_lance_unless_asked_otherwise(built) -> None:
    repo, run_dir, _ = built
    view = report.load_run(run_dir)
    proc = cli(repo, "candidates")
    beats = view.keeps[0].vs_lance_ci[0] > 1.0
    assert proc.returncode == 0 and ("Block the codes in SoA" in proc.stdout) == beats
    assert "upstream candidates: keeps that beat Lance itself" in proc.stdout
    view.keeps[0].vs_lance, view.keeps[0].vs_lance_ci = 1.2, [1.1, 1.3]
    assert [c.attempt for c in report.candidates([view])] == [1]
    view.keeps[0].vs_lance_ci = [0.99, 1.3]               # level with Lance is not beating it
    assert report.candidates([view]) == []


@pytest.mark.slow
def test_candidates_filter_by_bar_and_worst_combo(built) -> None:
    repo, _, _ = built
    proc = cli(repo, "candidates", "--min-speedup", "1.10")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0].startswith("keeps at 1.1x or more over their baseline")
    assert "vs Lance" in lines[1] and "vs baseline" in lines[1]
    assert "Block the codes in SoA" in proc.stdout and len(lines) == 3
    none = cli(repo, "candidates", "--target", "pq-l2", "--min-speedup", "1000")
    assert none.returncode == 0 and "no keeps at 1000x or more over their baseline" in none.stdout
    bad = cli(repo, "candidates", "--min-speedup", "0")
    assert bad.returncode == 2 and "--min-speedup must be positive" in bad.stderr
    # The worst-combo guard: the same keep with one combo slower than the run's guard is out.
    view = report.load_run(the_run(repo))
    assert len(report.candidates([view], 1.1)) == 1
    view.keeps[0].cumulative_worst_combo = {"value": 0.9, "combo": "768x96/sparse"}
    assert report.candidates([view], 1.1) == []


@pytest.mark.slow
def test_export_packages_and_reverifies_a_keep(built, tmp_path: Path) -> None:
    repo, run_dir, _ = built
    out = tmp_path / "export"
    proc = cli(repo, "export", f"{run_dir.name}:1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-verification: reproduces" in proc.stdout
    assert (out / "kernels.py").read_text() == (run_dir / "attempts" / "0001" / "candidate.py").read_text()
    patch = (out / "kernels.patch").read_text()
    assert patch.startswith("--- a/kernels.py\n+++ b/kernels.py\n") and "+BLOCK = 1024" in patch
    applied = subprocess.run(["patch", "-p1", "--dry-run", "-d", str(repo / "targets" / "pq_l2"), "-i",
                              str(out / "kernels.patch")], capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    checklist = (out / "UPSTREAM.md").read_text()
    assert "- [x] Re-verified on this machine just now: reproduces" in checklist
    assert "lance-index" in checklist                                   # the call site, from the capsule
    assert "orchestrator trial --target pq-l2 --kernel kernels.py" in checklist
    keep = report.load_run(run_dir).keeps[0]
    assert "## Against Lance itself" in checklist and report.vs_lance_text(keep) in checklist
    assert f"Measured as: {keep.lance_anchor}" in checklist and "simd " in checklist
    assert checklist.startswith("# Upstream candidate" if report.upstream_candidate(keep) else "# Kept kernel (NOT")
    assert (out / "logs" / "trial" / "result.json").is_file() and (out / "logs" / "reverify" / "result.json").is_file()
    assert (out / "logs" / "vs_lance" / "result.json").is_file()
    assert (out / "progress.png").read_bytes()[:4] == b"\x89PNG"
    # Not a keep, not a run, not an empty directory: clear errors, exit 2.
    for args, message in (([f"{run_dir.name}:2"], "was not kept (incorrect)"),
                          ([f"{run_dir.name}:9"], "has no finished attempt 9"),
                          (["nope"], "no run 'nope'"),
                          ([f"{run_dir.name}:x"], "must be a number")):
        bad = cli(repo, "export", *args, "--out", str(tmp_path / "other"))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    again = cli(repo, "export", run_dir.name, "--out", str(out), "--no-verify")
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.slow
def test_status_of_stopped_and_crashed_runs(built, tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    src = the_run(built[0])
    runs = repo / "runs" / "pq-l2"
    shutil.copytree(src, runs / src.name, ignore=shutil.ignore_patterns("worktree"))
    crashed = runs / "20990101-000000"
    shutil.copytree(src, crashed, ignore=shutil.ignore_patterns("worktree"))
    info = json.loads((crashed / "run.json").read_text())
    (crashed / "run.json").write_text(json.dumps({**info, "run_id": crashed.name}))
    # A crash mid-attempt: a stale lock (a pid that is gone) and a started attempt with no end.
    (crashed / "lock").write_text(json.dumps({"pid": 2 ** 22 - 3, "host": os.uname().nodename,
                                              "create_time": 1.0, "started": "x"}))
    with open(crashed / "attempts.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "started", "attempt": 5}) + "\n")
    # A --ray run at work: its lock is held by a live process, two attempts are in flight and
    # there is no status.json (no single phase to show).
    busy = runs / "20990102-000000"
    shutil.copytree(src, busy, ignore=shutil.ignore_patterns("worktree", "status.json"))
    (busy / "run.json").write_text(json.dumps({**info, "run_id": busy.name}))
    (busy / "lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                           "create_time": psutil.Process().create_time(), "started": "x"}))
    with open(busy / "attempts.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "started", "attempt": 5}) + "\n" + json.dumps({"event": "started", "attempt": 6}) + "\n")
    proc = cli(repo, "status")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line for line in proc.stdout.splitlines()[1:]}
    assert "stopped" in rows[src.name] and "$0.0000" in rows[src.name]
    assert "crashed (stale lock)" in rows["20990101-000000"] and "5 (in flight when it stopped)" in rows["20990101-000000"]
    assert "running" in rows["20990102-000000"] and "5, 6 in flight" in rows["20990102-000000"]
    # The crashed run still reports (the attempt in flight listed) and candidates still read it.
    rep = cli(repo, "report", "--target", "pq-l2", "--run", "20990101-000000")
    assert rep.returncode == 0 and "1 in flight" in rep.stdout
    assert "in flight" in (crashed / "report.html").read_text()


@pytest.mark.slow
def test_empty_and_corrupt_ledgers_give_clear_messages(built, tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    src = the_run(built[0])
    empty = repo / "runs" / "pq-l2" / "20200101-000000"
    empty.mkdir(parents=True)
    shutil.copy(src / "run.json", empty / "run.json")
    (empty / "attempts.jsonl").write_text("")
    rep = cli(repo, "report", "--target", "pq-l2")
    assert rep.returncode == 0 and "0 attempts, 0 kept" in rep.stdout
    assert "No kernel kept" in (empty / "report.html").read_text()
    exp = cli(repo, "export", "20200101-000000", "--out", str(tmp_path / "x"))
    assert exp.returncode == 2 and "has kept no kernel yet" in exp.stderr and "Traceback" not in exp.stderr
    (empty / "attempts.jsonl").write_text("not json\n{\"event\": \"started\", \"attempt\": 1}\n")
    bad = cli(repo, "report", "--target", "pq-l2")
    assert bad.returncode == 2 and "line 1 is not a ledger record" in bad.stderr and "Traceback" not in bad.stderr
    (empty / "run.json").unlink()
    assert cli(repo, "report", "--target", "pq-l2", "--run", "20200101-000000").returncode == 2
    nothing = cli(copy_repo(tmp_path / "fresh"), "status")
    assert nothing.returncode == 0 and "no runs under" in nothing.stdout
    assert cli(repo, "report", "--target", "nope").returncode == 2


@pytest.mark.slow
def test_status_and_report_of_a_running_daemon(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    config = write_config(repo, trial_budget_seconds=60)
    daemon = subprocess.Popen(daemon_cmd(write_script(repo, "s", [HANG]), config=config), cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        status_file = lambda: next((repo / "runs" / "pq-l2").glob("*/status.json"), None)   # noqa: E731
        wait_for(lambda: status_file() is not None and read_status(status_file().parent) is not None
                 and read_status(status_file().parent).phase == "trial", timeout=60, what="the trial phase")
        proc = cli(repo, "status", "--target", "pq-l2")
        row = proc.stdout.splitlines()[1]
        assert "running" in row and "1 trial" in row, proc.stdout
        rep = cli(repo, "report", "--target", "pq-l2")
        assert rep.returncode == 0 and "(running)" in rep.stdout and "1 in flight" in rep.stdout
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.communicate(timeout=60)
    assert "stopped" in cli(repo, "status").stdout.splitlines()[1]


def test_live_panel_renders_the_run_state(tmp_path: Path) -> None:
    stream = io.StringIO()
    live = LiveStatus(tmp_path, Status("r1", "pq-l2", "claude-x"), stream=stream, tty=False)
    live.begin_attempt(3, history({"verdict": "keep", "cumulative_speedup": 1.8,
                                   "tokens": {"input_tokens": 10, "output_tokens": 5}, "cost_usd": 0.25},
                                  {"verdict": "discard", "reason": "not_faster", "cost_usd": 0.1}), "7 attempts, $1.5000")
    live.phase("trial")
    console = Console(record=True, width=120)
    console.print(live)
    text = console.export_text()
    for part in ("r1 (pq-l2, claude-x)", "3: trial for", "1.800x vs baseline", "1 kept; not kept: not_faster 1",
                 "10 in / 5 out tokens, $0.3500", "7 attempts, $1.5000"):
        assert part in text, text
    assert stream.getvalue().splitlines() == [
        "attempt 3: proposing (best 1.80x; 1 kept, 1 not (not_faster 1); 15 tokens, $0.3500; left: 7 attempts, $1.5000)",
        "attempt 3: trial (best 1.80x; 1 kept, 1 not (not_faster 1); 15 tokens, $0.3500; left: 7 attempts, $1.5000)"]
    live.close("done")
    assert read_status(tmp_path).phase == "stopped"
    assert np.isfinite(read_status(tmp_path).updated_at)
