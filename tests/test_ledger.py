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

from orchestrator.ledger import RESULTS_COLUMNS, Ledger, LedgerError, LockHeld, write_atomic


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
    ledger.start(1, {"provider": "offline"})
    state = ledger.read()
    assert list(state.in_flight) == [1] and state.finished == {}
    assert state.in_flight[1]["provider"] == "offline" and state.in_flight[1]["event"] == "started"
    assert state.records == []
    assert state.next_attempt == 2


def test_finished_leaves_in_flight(ledger: Ledger) -> None:
    ledger.start(1, {})
    ledger.finish(1, {"verdict": "keep"})
    state = ledger.read()
    assert state.in_flight == {} and list(state.finished) == [1]
    assert state.finished[1]["verdict"] == "keep" and state.finished[1]["attempt"] == 1


def test_next_attempt_counts_in_flight_ids(ledger: Ledger) -> None:
    assert ledger.read().next_attempt == 1
    ledger.start(1, {})
    ledger.finish(1, {"verdict": "discard"})
    ledger.start(2, {})
    ledger.finish(2, {"verdict": "keep"})
    ledger.start(5, {})                 # in flight, and the highest id
    state = ledger.read()
    assert state.next_attempt == 6
    assert set(state.in_flight) == {5} and set(state.finished) == {1, 2}


def test_records_sorted_by_attempt(ledger: Ledger) -> None:
    for n in (3, 1, 2):
        ledger.start(n, {})
    for n in (3, 1, 2):
        ledger.finish(n, {"verdict": f"v{n}"})
    assert [r["attempt"] for r in ledger.read().records] == [1, 2, 3]
    assert [r["verdict"] for r in ledger.read().records] == ["v1", "v2", "v3"]


def test_missing_attempts_file_reads_as_empty(tmp_path: Path) -> None:
    state = Ledger(tmp_path / "nowhere").read()
    assert state.finished == {} and state.in_flight == {} and state.next_attempt == 1


def test_torn_last_line_is_ignored(ledger: Ledger) -> None:
    ledger.start(1, {})
    ledger.finish(1, {"verdict": "keep"})
    ledger.start(2, {})
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "finished", "attem')          # power loss mid-write: no newline
    state = ledger.read()
    assert list(state.finished) == [1] and list(state.in_flight) == [2]


def test_corrupt_middle_line_raises(ledger: Ledger) -> None:
    ledger.start(1, {})
    with open(ledger.attempts_path, "a") as fh:
        fh.write("this is not json\n")
    ledger.finish(1, {"verdict": "keep"})
    with pytest.raises(LedgerError, match="line 2 is not a ledger record"):
        ledger.read()


def test_record_without_attempt_in_the_middle_raises(ledger: Ledger) -> None:
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "started"}\n')
    ledger.start(1, {})
    with pytest.raises(LedgerError, match="line 1"):
        ledger.read()


def test_appending_after_a_torn_line_keeps_the_new_record(ledger: Ledger) -> None:
    ledger.start(1, {})
    ledger.finish(1, {"verdict": "keep"})
    ledger.start(2, {})
    with open(ledger.attempts_path, "a") as fh:
        fh.write('{"event": "finished", "attem')          # the daemon died mid-write
    # Resume records attempt 2 as interrupted, then the loop starts attempt 3.
    ledger.finish(2, {"verdict": "interrupted"})
    ledger.start(3, {})
    state = ledger.read()
    assert state.finished[2]["verdict"] == "interrupted"
    assert list(state.in_flight) == [3]


# -- results.tsv ---------------------------------------------------------------------------------

TRIAL = {"correctness": "pass", "geomean_ns_per_query": 1234.5, "geomean_ns_ci_90pct": [1200.0, 1300.0],
         "worst_ns_per_query": {"value": 2000.0, "combo": "768x96/sparse"},
         "best_ns_per_query": {"value": 900.0, "combo": "128x16/uniform"},
         "peak_mem_mb": 55.5, "total_seconds": 42.0, "speedup_geomean": 1.25, "speedup_ci_90pct": [1.2, 1.3]}


def test_results_row_from_trial(ledger: Ledger) -> None:
    record = {"commit": "abcdef0123456789abcdef", "finished_at": "2025-01-02T03:04:05.000+00:00",
              "verdict": "keep", "provider": "offline", "cost_usd": 0.25,
              "hypothesis": "vectorise\tthe gather\nand sum", "trial": TRIAL}
    ledger.start(3, {})
    ledger.finish(3, record)
    rows = tsv_rows(ledger)
    assert len(rows) == 2 and all(len(r) == len(RESULTS_COLUMNS) == 20 for r in rows)
    assert rows[1] == ["3", "abcdef0123", "2025-01-02T03:04:05.000+00:00", "pass", "1234.5", "1200.0", "1300.0",
                       "2000.0", "768x96/sparse", "900.0", "128x16/uniform", "55.5", "42.0", "keep", "1.25",
                       "1.2", "1.3", "offline", "0.25", "vectorise the gather and sum"]


def test_results_row_without_trial(ledger: Ledger) -> None:
    ledger.finish(1, {"verdict": "discard", "reason_detail": "block 1: the SEARCH text does not occur",
                      "hypothesis": None, "provider": "scripted"})
    ledger.finish(2, {"verdict": "discard", "hypothesis": "h2", "reason_detail": "ignored"})
    rows = tsv_rows(ledger)
    assert len(rows) == 3 and all(len(r) == 20 for r in rows)
    row = dict(zip(RESULTS_COLUMNS, rows[1]))
    assert row["attempt"] == "1" and row["correctness"] == "not_run" and row["keep"] == "discard"
    assert row["commit"] == "" and row["speedup"] == "" and row["ci_lo"] == "" and row["worst_combo"] == ""
    assert row["provider"] == "scripted" and row["cost_usd"] == "0.0"
    assert row["description"] == "block 1: the SEARCH text does not occur"
    assert dict(zip(RESULTS_COLUMNS, rows[2]))["description"] == "h2"


def test_one_row_per_finish_not_per_start(ledger: Ledger) -> None:
    ledger.start(1, {})
    ledger.start(2, {})
    ledger.finish(1, {"verdict": "keep", "trial": TRIAL})
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
