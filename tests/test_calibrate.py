"""`orchestrator calibrate`: the injected slowdown, the gates' verdicts on it, and the output."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_gate import paired

import targets
from orchestrator import calibrate, gate
from orchestrator.calibrate import CalibrationOptions, Estimate, TrialRecord
from orchestrator.gate import GateConfig, judge
from targets.harness.counters import Counters
from targets.harness import measure, runner
from targets.harness.plan import TrialOptions
from targets.harness.result import TrialResult
from targets.harness.runner import parse_args

from conftest import BASELINE, ROOT, history

PQ = targets.get("pq-l2")
TINY = dict(replicates=2, sessions=1, queries_per_combo=3)


def options(**changes) -> CalibrationOptions:
    return dataclasses.replace(CalibrationOptions(PQ, BASELINE, trials=2, effects=(0.0, 0.5), **TINY), **changes)


@pytest.mark.slow
def test_injected_slowdown_is_measured_and_never_kept_as_is(tmp_path: Path) -> None:
    before = psutil.Process().cpu_affinity()
    data = calibrate.calibrate(options(trials=1), tmp_path / "cal", "test machine")
    assert psutil.Process().cpu_affinity() == before      # each in-process trial unpins the runner again
    lines = (tmp_path / "cal" / "trials.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2 and sorted(r["effect"] for r in records) == [0.0, 0.5]
    # So every trial is placed alike: runner and workers on their own cores where there are two.
    placed = {(r["result"]["threads"]["runner_cpu"], r["result"]["threads"]["worker_cpu"]) for r in records}
    assert placed == {(str(before[0]), str(before[-1])) if len(before) > 1 else ("None", "None")}, placed
    for r in records:
        assert r["exit_code"] == 0, r["failure"]
        speedup = r["estimates"]["paired"]["speedup"]
        # A 50% spin on the incumbent shows as ~1.5x, A/A near 1 — loosely: these trials are tiny
        # and the machine may be busy. Instruction counts (where the machine has counters) are
        # the sharp check: the spin adds instructions only to the slowed arm.
        assert speedup > 1.2 if r["effect"] else 0.7 < speedup < 1.4, r
        if r["instructions_ratio"] is not None:
            assert r["instructions_ratio"] > 1.2 if r["effect"] else abs(r["instructions_ratio"] - 1) < 0.01, r
        assert r["result"]["injected_slowdown"] == r["effect"]
        assert set(r["estimates"]) == {"paired", "paired-untrimmed", "paired-iid-pairs", "one-worker-pair"}
        # Counters: measured for both arms where the machine allows, else one reason.
        counters = r["result"]["counters"]
        if counters.startswith("cycles"):
            assert r["result"]["incumbent_geomean_cycles_per_query"] > 0 and r["cycles_ratio"] > 0
        else:
            assert counters.startswith("n/a: ") and r["result"]["geomean_cycles_per_query"] is None
    # The gate refuses the raw results (they carry the flag) ...
    raw = calibrate.parse_json(json.dumps(next(r for r in records if r["effect"] == 0.5)["result"]))
    assert judge(raw, GateConfig(), 120.0).codes == ["parse_error"]
    # ... and calibrate judges the same timings as the daemon would, with the flag cleared.
    per_effect = data["summary"]["per_effect"]
    for effect in ("0", "0.5"):
        judged = [calibrate.as_judged(TrialRecord(**{**r, "estimates": {k: Estimate(**v) for k, v in
                                                                          r["estimates"].items()}}))
                  for r in records if f"{r['effect']:g}" == effect]
        expected = sum(judge(res, GateConfig(), 120.0).keep for res in judged)
        assert per_effect[effect]["methods"]["paired"]["keeps"] == expected
    assert data["complete"] and data["trials_run"] == 2
    saved = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert saved["summary"]["goals"] == data["summary"]["goals"]
    summary = (tmp_path / "cal" / "summary.md").read_text()
    assert "| paired | " in summary and "## Recommendation" in summary and "| unpaired | " in summary


def test_an_interrupted_calibration_still_writes_its_summary(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_run_one(opts, effect, round_, variant):
        calls.append(effect)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return TrialRecord(effect, round_, 1.0, 1, "crash: boom", variant=variant)

    monkeypatch.setattr(calibrate, "run_one", fake_run_one)
    with pytest.raises(KeyboardInterrupt):
        calibrate.calibrate(options(), tmp_path / "cal", "m")
    saved = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert saved["complete"] is False and saved["trials_run"] == 2
    assert len((tmp_path / "cal" / "trials.jsonl").read_text().splitlines()) == 2
    assert "INCOMPLETE" in (tmp_path / "cal" / "summary.md").read_text()


def _record(effect: float, round_: int, speedup: float, ci: tuple[float, float]) -> TrialRecord:
    result = paired({"a": speedup, "b": speedup}, ci=ci)
    rec = TrialRecord(effect, round_, 8.0, 0, estimates={m: Estimate(speedup, *ci) for m in calibrate.METHODS
                                                           if m != "unpaired"})
    rec.result = json.loads(result.to_json())
    return rec


def test_rates_recommendation_and_goals_from_known_records() -> None:
    # 100 A/A trials, one of which looks 1.5% faster; 100 trials at 5%, 96 of them detected.
    records = [_record(0.0, i, 1.0, (0.99, 1.01)) for i in range(99)] + [_record(0.0, 99, 1.02, (1.012, 1.03))]
    records += [_record(0.05, i, 1.05, (1.03, 1.07)) for i in range(96)]
    records += [_record(0.05, 96 + i, 1.01, (0.995, 1.02)) for i in range(4)]
    opts = options(trials=100, effects=(0.0, 0.05))
    summary = calibrate.summarise(records, opts)
    aa = summary["per_effect"]["0"]["methods"]["paired"]
    assert aa["keeps"] == 1 and aa["keep_rate"] == 0.01 and 0.04 < aa["keep_rate_upper95"] < 0.06
    assert aa["ci_covers_1"] == 0.99
    assert summary["per_effect"]["0.05"]["methods"]["paired"]["keep_rate"] == 0.96
    # min_effect 0.0125 would be needed for 0 false keeps; 0.01 already gives 1% <= 1%.
    assert summary["recommendation"] == {"min_effect": 0.0, "false_keep_rate": 0.01,
                                         "smallest_effect_detected_95pct": 0.05}
    goals = {g["goal"]: g["met"] for g in summary["goals"]}
    assert goals == {"false-keep rate (A/A) <= 1%": True, "detection power at 5% >= 95%": True,
                     "detection power at 10% >= 99%": False, "every trial <= 10 s": True}


def test_recommendation_moves_up_when_noise_keeps_aa_trials() -> None:
    records = [_record(0.0, i, 1.0, (0.99, 1.01)) for i in range(95)]
    records += [_record(0.0, 95 + i, 1.02, (1.006, 1.03)) for i in range(5)]   # 5% false keeps at 0
    records += [_record(0.1, i, 1.1, (1.08, 1.12)) for i in range(100)]
    summary = calibrate.summarise(records, options(trials=100, effects=(0.0, 0.1)))
    rec = summary["recommendation"]
    assert rec["min_effect"] == 0.0075 and rec["false_keep_rate"] == 0.0
    assert rec["smallest_effect_detected_95pct"] == 0.1


@pytest.mark.parametrize("changes,message", [
    ({"trials": 1}, "--trials must be at least 2"),
    ({"effects": (0.02, 0.05)}, "--effects must include 0"),
    ({"effects": (0.0, 1.5)}, "--effects must be distinct fractions"),
    ({"effects": (0.0, 0.05, 0.05)}, "--effects must be distinct fractions"),
    ({"kernel": Path("/nonexistent/kernels.py")}, "no such file"),
    ({"ablations": ("pinning", "luck")}, "--ablate must be distinct names from pinning, warmup, random-order"),
    ({"ablations": ("warmup", "warmup")}, "--ablate must be distinct names"),
])
def test_bad_options_are_named(changes, message) -> None:
    assert message in calibrate.problem(options(**changes))


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--effects", "0,abc"], "expected comma-separated fractions"),
    (["--effects", "0.05"], "must include 0"),
    (["--trials", "1"], "at least 2"),
    (["--queries", "0"], "--queries must be at least 1"),
    (["--budget-seconds", "0"], "--budget-seconds must be positive"),
    (["--kernel", "/nonexistent/kernels.py"], "no such file"),
    (["--target", "nope"], "unknown target 'nope'"),
    (["--ablate", "pinning,gc"], "--ablate must be distinct names"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(repo: Path, args: list[str], message: str) -> None:
    argv = ["--target", "pq-l2", *args] if "--target" not in args else args
    out = subprocess.run([sys.executable, "-m", "orchestrator", "calibrate", *argv], cwd=repo,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert sorted(p.name for p in (repo / "runs").iterdir()) == ["README.md"]


def test_no_trial_command_line_can_inject_a_slowdown() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--injected-slowdown", "0.1"], "pq-l2", BASELINE)
    options, _ = parse_args([], "pq-l2", BASELINE)
    assert options.injected_slowdown == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--ablated", "pinning"], "pq-l2", BASELINE)
    assert options.ablated == ()
    assert "ablat" not in (ROOT / "orchestrator" / "trial.py").read_text()
    assert "ablat" not in (ROOT / "orchestrator" / "loop.py").read_text()
    assert "injected" not in (ROOT / "orchestrator" / "trial.py").read_text()
    assert "injected" not in (ROOT / "orchestrator" / "loop.py").read_text()


def test_counters_on_a_missing_process_say_why_once() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    reason = Counters.open(gone.pid)
    assert isinstance(reason, str) and reason.startswith("n/a: ")
    assert "ESRCH" in reason or "no perf_event_open" in reason


def test_counters_open_on_this_process_or_say_why_not() -> None:
    import os
    opened = Counters.open(os.getpid())
    if isinstance(opened, str):
        assert opened.startswith("n/a: ")
        return
    try:
        c0, i0 = opened.read()
        sum(i * i for i in range(100_000))
        c1, i1 = opened.read()
        assert c1 > c0 and i1 - i0 > 100_000        # at least one instruction per iteration
    finally:
        opened.close()


def test_unpaired_daemon_rule_uses_the_stored_best() -> None:
    keep = json.loads(paired({"a": 1.2, "b": 1.3}).to_json())
    first = json.loads(paired({"a": 1.0, "b": 1.0}).to_json())
    records = [{"verdict": "discard", "trial": first}, {"verdict": "keep", "trial": keep},
               {"verdict": "discard", "trial": None}]
    best = gate.stored_best_timing(history(*records))
    assert best is not None and best.per_combo == keep["per_combo_geomean_ns"]        # the keep's candidate arm
    best = gate.stored_best_timing(history(*records[:1]))
    assert best is not None and best.per_combo == first["incumbent_per_combo_geomean_ns"]  # the baseline's arm
    assert gate.stored_best_timing(history()) is None
    assert gate.stored_best_timing(history({"verdict": "keep", "trial": {"mode": "paired"}})) is None   # unreadable


REAL_CALL = measure._call


def _timed_order(monkeypatch, ablated: tuple[str, ...]) -> tuple[TrialResult, list[str], int]:
    """Run a tiny paired trial in-process; return its result, the arm labels of timed calls in
    order, and the number of warm-up calls. Checks that every rival is frozen during a timed call
    unless freezing is ablated."""
    order, warmups = [], []
    real = REAL_CALL                   # not measure._call: an earlier call of this helper patched it

    def spy(worker, inst, call, what, rivals, spin_ns=0):
        if what.startswith("timing"):
            order.append(worker.label)
        elif what.startswith("warming"):
            warmups.append(worker.label)
        out = real(worker, inst, call, what, rivals, spin_ns)
        others = [w for w in rivals if w is not worker]
        assert all(w.frozen for w in others) and not worker.frozen
        assert ("freeze" in ablated) == (others == [])
        return out

    monkeypatch.setattr(measure, "_call", spy)
    result = runner.run_trial(PQ.plan(), TrialOptions(kernel=BASELINE, against=BASELINE, seed=7, ablated=ablated,
                                                      replicates=1, sessions=2, queries_per_combo=3))
    assert result.ok, result.failure
    return result, order, len(warmups)


@pytest.mark.slow
def test_each_ablation_switches_off_only_its_feature(monkeypatch) -> None:
    full, order, warmups = _timed_order(monkeypatch, ())
    pairs = [tuple(order[i:i + 2]) for i in range(0, len(order), 2)]
    assert set(pairs) == {("incumbent", "candidate"), ("candidate", "incumbent")}   # random per query
    assert warmups > 0 and full.ablated == []
    cpus = psutil.Process().cpu_affinity()
    if len(cpus) > 1:
        assert full.threads["worker_cpu"] == str(cpus[-1])

    fixed, order, warmups = _timed_order(monkeypatch, ("random-order",))
    assert set(tuple(order[i:i + 2]) for i in range(0, len(order), 2)) == {("incumbent", "candidate")}
    assert warmups > 0 and fixed.ablated == ["random-order"]

    cold, order, warmups = _timed_order(monkeypatch, ("warmup",))
    assert warmups == 0 and len(order) == len(pairs) * 2 and cold.ablated == ["warmup"]

    loose, _, _ = _timed_order(monkeypatch, ("pinning",))
    assert loose.threads["worker_cpu"] == "None" and loose.threads["runner_cpu"] == "None"
    assert psutil.Process().cpu_affinity() == cpus

    unfrozen, _, _ = _timed_order(monkeypatch, ("freeze",))
    assert unfrozen.ablated == ["freeze"]


@pytest.mark.slow
def test_ablated_variants_are_summarised_beside_the_full_trials(tmp_path: Path) -> None:
    data = calibrate.calibrate(options(trials=1, effects=(0.0,), ablations=("warmup",)), tmp_path / "cal", "test machine")
    records = [json.loads(line) for line in (tmp_path / "cal" / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in records) == ["full", "warmup"]
    assert all(r["result"]["ablated"] == ([] if r["variant"] == "full" else ["warmup"]) for r in records)
    summary = data["summary"]
    # The goals and the headline table come from the full trials only ...
    assert summary["per_effect"]["0"]["trials"] == 1
    # ... and each variant has its own table, judged by the same gate.
    assert set(summary["variants"]) == {"full", "warmup"}
    assert summary["variants"]["warmup"]["per_effect"]["0"]["trials"] == 1
    assert summary["variants"]["full"]["per_effect"]["0"] == summary["per_effect"]["0"]
    assert summary["variants"]["full"]["sweep"] == summary["sweep"]
    text = (tmp_path / "cal" / "summary.md").read_text()
    assert "## Measurement features switched off" in text and "| warmup | " in text and "| full | " in text
