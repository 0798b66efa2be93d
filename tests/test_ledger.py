"""orchestrator.ledger: run files, the write-ahead attempt log, results.tsv, the run lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from orchestrator.ledger import (RESULTS_COLUMNS, SCHEMA, AttemptRecord, Ledger, LedgerError, LockHeld, RunHistory,
                                 write_atomic)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "runs" / "pq-l2" / "r1")
    led.create({"run_id": "r1", "branch": "autoresearch/pq-l2/r1"})
    return led


def tsv_rows(led: Ledger) -> list[list[str]]:
    return [line.split("\t") for line in led.results_path.read_text().splitlines()]


# -- create --------------------------------------------------------------------------------------

def test_create_writes_run_files(ledger: Ledger) -> None:
    assert json.loads((ledger.dir / "run.json").read_text()) == {"run_id": "r1", "branch": "autoresearch/pq-l2/r1"}
    assert ledger.run_info()["run_id"] == "r1"
    header = ledger.results_path.read_text()
    assert header.endswith("\n") and header.count("\n") == 1
    cols = header.rstrip("\n").split("\t")
    assert len(cols) == 20 and cols[0] == "attempt" and cols[-1] == "description"
    assert cols[:4] == ["attempt", "commit", "timestamp", "correctness"]
    assert ledger.attempts_path.is_file() and ledger.attempts_path.read_text() == ""
    assert sorted(p.name for p in ledger.dir.iterdir()) == ["attempts.jsonl", "results.tsv", "run.json"]


def test_create_refuses_an_existing_run(ledger: Ledger) -> None:
    with pytest.raises(FileExistsError):
        Ledger(ledger.dir).create({"run_id": "again"})
    assert ledger.run_info()["run_id"] == "r1"


def test_update_run_info_merges(ledger: Ledger) -> None:
    ledger.update_run_info(resumed_at="later")
    assert ledger.run_info() == {"run_id": "r1", "branch": "autoresearch/pq-l2/r1", "resumed_at": "later"}


def test_run_info_missing_is_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="run.json"):
        Ledger(tmp_path / "nothing").run_info()


# -- attempts ------------------------------------------------------------------------------------

def test_started_without_finished_is_in_flight(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1, provider="offline"))
    state = ledger.read()
    assert list(state.in_flight) == [1] and state.finished == {}
    assert state.in_flight[1]["provider"] == "offline" and state.in_flight[1]["event"] == "started"
    assert state.records == []
    assert state.next_attempt == 2


def test_finished_leaves_in_flight(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1))
    ledger.finish(AttemptRecord(1, **{"verdict": "keep"}))
    state = ledger.read()
    assert state.in_flight == {} and list(state.finished) == [1]
    assert state.finished[1].verdict == "keep" and state.finished[1].attempt == 1


def test_next_attempt_counts_in_flight_ids(ledger: Ledger) -> None:
    assert ledger.read().next_attempt == 1
    ledger.start(1, AttemptRecord(1))
    ledger.finish(AttemptRecord(1, **{"verdict": "discard"}))
    ledger.start(2, AttemptRecord(2))
    ledger.finish(AttemptRecord(2, **{"verdict": "keep"}))
    ledger.start(5, AttemptRecord(5))                 # in flight, and the highest id
    state = ledger.read()
    assert state.next_attempt == 6
    assert set(state.in_flight) == {5} and set(state.finished) == {1, 2}


def test_records_sorted_by_attempt(ledger: Ledger) -> None:
    for n in (3, 1, 2):
        ledger.start(n, AttemptRecord(n))
    for n in (3, 1, 2):
        ledger.finish(AttemptRecord(n, verdict=f"v{n}"))
    assert [r.attempt for r in ledger.read().records] == [1, 2, 3]
    assert [r.verdict for r in ledger.read().records] == ["v1", "v2", "v3"]


def test_missing_attempts_file_reads_as_empty(tmp_path: Path) -> None:
    state = Ledger(tmp_path / "nowhere").read()
    assert state.finished == {} and state.in_flight == {} and state.next_attempt == 1


def test_torn_last_line_is_ignored(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1))
    ledger.finish(AttemptRecord(1, **{"verdict": "keep"}))
    ledger.start(2, AttemptRecord(2))
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "finished", "attem')          # power loss mid-write: no newline
    state = ledger.read()
    assert list(state.finished) == [1] and list(state.in_flight) == [2]


def test_corrupt_middle_line_raises(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1))
    with open(ledger.attempts_path, "a") as fh:
        fh.write("this is not json\n")
    ledger.finish(AttemptRecord(1, **{"verdict": "keep"}))
    with pytest.raises(LedgerError, match="line 2 is not a ledger record"):
        ledger.read()


def test_record_without_attempt_in_the_middle_raises(ledger: Ledger) -> None:
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "started"}\n')
    ledger.start(1, AttemptRecord(1))
    with pytest.raises(LedgerError, match="line 1"):
        ledger.read()


def test_appending_after_a_torn_line_keeps_the_new_record(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1))
    ledger.finish(AttemptRecord(1, **{"verdict": "keep"}))
    ledger.start(2, AttemptRecord(2))
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "finished", "attem')          # the daemon died mid-write
    # Resume records attempt 2 as interrupted, then the loop starts attempt 3.
    ledger.finish(AttemptRecord(2, **{"verdict": "interrupted"}))
    ledger.start(3, AttemptRecord(3))
    state = ledger.read()
    assert state.finished[2].verdict == "interrupted"
    assert list(state.in_flight) == [3]


# -- the record and the history ------------------------------------------------------------------

SCHEMA_1_LINE = {"event": "finished", "attempt": 4, "started_at": "2026-11-20T00:00:00.000+00:00",
                 "provider": "offline", "model": "playbook:pq_l2", "hypothesis": "fuse", "lesson": None,
                 "edit_format": "whole_file", "repair_turns": 0, "diff": "-a\n+b\n", "trial_exit_code": 0,
                 "trial": {"mode": "paired"}, "commit": "abc", "cumulative_speedup": None, "cumulative_ci": None,
                 "sources": ["01-x.md"], "verdict": "keep", "reason": "keep", "reason_detail": "fuse; 1.1x",
                 "evidence": "fuse; 1.1x", "finished_at": "2026-11-20T00:01:00.000+00:00", "duration_seconds": 60.0,
                 "phase_seconds": {"trial": 50.0}, "tokens": {"input_tokens": 0}, "cost_usd": 0.0,
                 "speedup": 1.1, "speedup_ci": [1.05, 1.15], "reasons": []}


def test_a_schema_1_ledger_reads_as_records(ledger: Ledger) -> None:
    # What the untyped version wrote (no schema, nulls where lists are now): read, migrated.
    with open(ledger.attempts_path, "a") as fh:
        fh.write(json.dumps(SCHEMA_1_LINE) + "\n")
        fh.write(json.dumps({"event": "measured", "attempt": 4, "cumulative_speedup": 1.1,
                             "cumulative_ci": [1.0, 1.2]}) + "\n")
    rec = ledger.read().finished[4]
    assert rec.kept and rec.hypothesis == "fuse" and rec.sources == ["01-x.md"] and rec.speedup_ci == [1.05, 1.15]
    assert rec.cumulative_speedup == 1.1 and rec.cumulative_ci == [1.0, 1.2] and rec.extra == {}


def test_records_round_trip_and_keep_fields_they_do_not_know(ledger: Ledger) -> None:
    newer = {**SCHEMA_1_LINE, "attempt": 1, "schema": SCHEMA + 1, "novelty": {"score": 0.3}}
    with open(ledger.attempts_path, "a") as fh:
        fh.write(json.dumps(newer) + "\n")
    rec = ledger.read().finished[1]
    assert rec.extra == {"novelty": {"score": 0.3}}
    again = json.loads(json.dumps(rec.to_json()))
    assert again["novelty"] == {"score": 0.3} and again["schema"] == SCHEMA
    assert AttemptRecord.from_json(again) == rec


def test_finish_writes_the_schema_and_every_field(ledger: Ledger) -> None:
    ledger.finish(AttemptRecord(1, verdict="discard", reason="incorrect"))
    line = json.loads(ledger.attempts_path.read_text().splitlines()[-1])
    assert line["schema"] == SCHEMA and line["event"] == "finished" and line["reason"] == "incorrect"
    assert set(line) - {"event", "schema"} == set(AttemptRecord.__dataclass_fields__) - {"extra"}


def test_annotate_takes_only_measurements(ledger: Ledger) -> None:
    ledger.finish(AttemptRecord(1, verdict="keep"))
    with pytest.raises(ValueError, match="verdict"):
        ledger.annotate(1, {"verdict": "discard"})
    ledger.annotate(1, {"vs_lance": 1.2, "vs_lance_ci": [1.1, 1.3]})
    assert ledger.read().finished[1].vs_lance == 1.2


def _rec(n: int, verdict: str, reason: str = "", **kw) -> AttemptRecord:
    return AttemptRecord(n, verdict=verdict, reason=reason or verdict, **kw)


def test_history_best_is_the_last_keep_and_streaks_count_done_attempts() -> None:
    h = RunHistory((_rec(1, "keep", cumulative_speedup=1.1, vs_lance=0.5), _rec(2, "discard", "not_faster"),
                    _rec(3, "keep", cumulative_speedup=1.3, vs_lance=0.65), _rec(4, "discard", "provider_error"),
                    _rec(5, "interrupted"), _rec(6, "discard", "provider_error"), _rec(7, "not_run", "cost_budget")))
    assert h.best is not None and h.best.attempt == 3 and [r.attempt for r in h.keeps] == [1, 3]
    assert h.discard_streak == 2 and h.streak_of("provider_error") == 2 and h.streak_of("incorrect") == 0
    assert h.lance_level == pytest.approx(2.0)
    t = h.totals
    assert (t.attempts, t.done, t.keeps) == (7, 5, 2)
    assert t.not_kept == {"not_faster": 1, "provider_error": 2, "interrupted": 1, "cost_budget": 1}
    assert RunHistory().best is None and RunHistory().discard_streak == 0 and RunHistory().lance_level is None


def test_history_last_failure_and_replies_consumed() -> None:
    failed = _rec(2, "discard", "incorrect", evidence="case 3: wrong ids", sources=["02-x.md", "02-x.repair.md"])
    h = RunHistory((_rec(1, "keep", sources=["01-a.md"]), failed, _rec(3, "interrupted", sources=["03-b.md"])))
    assert h.last_failure == "attempt 3 (interrupted): "
    assert RunHistory(h.records[:2]).last_failure == "attempt 2 (incorrect): case 3: wrong ids"
    assert RunHistory(h.records[:1]).last_failure is None
    assert h.replies_consumed == 2           # repairs and the interrupted attempt's reply don't count


# -- results.tsv ---------------------------------------------------------------------------------

TRIAL = {"correctness": "pass", "geomean_ns_per_query": 1234.5, "geomean_ns_ci_90pct": [1200.0, 1300.0],
         "worst_ns_per_query": {"value": 2000.0, "combo": "768x96/sparse"},
         "best_ns_per_query": {"value": 900.0, "combo": "128x16/uniform"},
         "peak_mem_mb": 55.5, "total_seconds": 42.0, "speedup_geomean": 1.25, "speedup_ci_90pct": [1.2, 1.3]}


def test_results_row_from_trial(ledger: Ledger) -> None:
    record = {"commit": "abcdef0123456789abcdef", "finished_at": "2025-01-02T03:04:05.000+00:00",
              "verdict": "keep", "provider": "offline", "cost_usd": 0.25,
              "hypothesis": "vectorise\tthe gather\nand sum", "trial": TRIAL}
    ledger.start(3, AttemptRecord(3))
    ledger.finish(AttemptRecord(3, **record))
    rows = tsv_rows(ledger)
    assert len(rows) == 2 and all(len(r) == len(RESULTS_COLUMNS) == 20 for r in rows)
    assert rows[1] == ["3", "abcdef0123", "2025-01-02T03:04:05.000+00:00", "pass", "1234.5", "1200.0", "1300.0",
                       "2000.0", "768x96/sparse", "900.0", "128x16/uniform", "55.5", "42.0", "keep", "1.25",
                       "1.2", "1.3", "offline", "0.25", "vectorise the gather and sum"]


def test_results_row_without_trial(ledger: Ledger) -> None:
    ledger.finish(AttemptRecord(1, **{"verdict": "discard", "reason_detail": "block 1: the SEARCH text does not occur",
                      "hypothesis": None, "provider": "scripted"}))
    ledger.finish(AttemptRecord(2, **{"verdict": "discard", "hypothesis": "h2", "reason_detail": "ignored"}))
    rows = tsv_rows(ledger)
    assert len(rows) == 3 and all(len(r) == 20 for r in rows)
    row = dict(zip(RESULTS_COLUMNS, rows[1]))
    assert row["attempt"] == "1" and row["correctness"] == "not_run" and row["keep"] == "discard"
    assert row["commit"] == "" and row["speedup"] == "" and row["ci_lo"] == "" and row["worst_combo"] == ""
    assert row["provider"] == "scripted" and row["cost_usd"] == "0.0"
    assert row["description"] == "block 1: the SEARCH text does not occur"
    assert dict(zip(RESULTS_COLUMNS, rows[2]))["description"] == "h2"


def test_one_row_per_finish_not_per_start(ledger: Ledger) -> None:
    ledger.start(1, AttemptRecord(1))
    ledger.start(2, AttemptRecord(2))
    ledger.finish(AttemptRecord(1, **{"verdict": "keep", "trial": TRIAL}))
    assert len(tsv_rows(ledger)) == 2


# -- lock ----------------------------------------------------------------------------------------

def lock_payload(pid: int, create_time: float, host: str | None = None) -> str:
    return json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "x", "create_time": create_time})


def test_acquire_creates_lock_naming_us(ledger: Ledger) -> None:
    assert ledger.acquire_lock() is None
    info = json.loads((ledger.dir / "lock").read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert abs(info["create_time"] - psutil.Process().create_time()) < 1e-6


def test_second_acquire_while_held_raises(ledger: Ledger) -> None:
    ledger.acquire_lock()
    before = (ledger.dir / "lock").read_text()
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        Ledger(ledger.dir).acquire_lock()
    assert (ledger.dir / "lock").read_text() == before


def test_lock_of_another_host_is_never_stale(ledger: Ledger) -> None:
    (ledger.dir / "lock").write_text(lock_payload(999999, 0.0, host="some-other-machine"))
    with pytest.raises(LockHeld, match="pid 999999"):
        ledger.acquire_lock()


def test_dead_pid_lock_is_taken_over(ledger: Ledger) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    created = psutil.Process(proc.pid).create_time()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert not psutil.pid_exists(proc.pid)
    (ledger.dir / "lock").write_text(lock_payload(proc.pid, created))
    warning = ledger.acquire_lock()
    assert warning is not None and "stale lock" in warning and str(proc.pid) in warning
    assert json.loads((ledger.dir / "lock").read_text())["pid"] == os.getpid()


def test_live_pid_with_other_create_time_is_stale(ledger: Ledger) -> None:
    # Our pid, but a different process start: the pid was reused, the lock's owner is gone.
    (ledger.dir / "lock").write_text(lock_payload(os.getpid(), psutil.Process().create_time() - 1000.0))
    assert "stale lock" in (ledger.acquire_lock() or "")


def test_live_other_process_holds_the_lock(ledger: Ledger) -> None:
    parent = psutil.Process(os.getppid())
    (ledger.dir / "lock").write_text(lock_payload(parent.pid, parent.create_time()))
    with pytest.raises(LockHeld, match=f"pid {parent.pid}"):
        ledger.acquire_lock()


@pytest.mark.parametrize("content", ["garbage", "", '{"pid": "x"}', "[1, 2]", '{"pid": 1}'])
def test_garbage_lock_is_taken_over(ledger: Ledger, content: str) -> None:
    (ledger.dir / "lock").write_text(content)
    warning = ledger.acquire_lock()
    assert warning is not None and warning.startswith("took over a stale lock")
    assert json.loads((ledger.dir / "lock").read_text())["pid"] == os.getpid()


def test_release_removes_our_lock(ledger: Ledger) -> None:
    ledger.acquire_lock()
    ledger.release_lock()
    assert not (ledger.dir / "lock").exists()
    ledger.release_lock()                          # nothing to release: no error
    assert ledger.acquire_lock() is None           # and it can be taken again


def test_release_leaves_a_lock_we_do_not_hold(ledger: Ledger) -> None:
    parent = psutil.Process(os.getppid())
    payload = lock_payload(parent.pid, parent.create_time())
    (ledger.dir / "lock").write_text(payload)
    ledger.release_lock()
    assert (ledger.dir / "lock").read_text() == payload
    (ledger.dir / "lock").write_text("garbage")
    ledger.release_lock()
    assert (ledger.dir / "lock").read_text() == "garbage"


# -- write_atomic --------------------------------------------------------------------------------

def test_write_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, "one\n")
    write_atomic(path, "two\n")
    assert path.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
