"""The run's ledger under ``runs/<target>/<run-id>/``: crash-safe, append-only, human-readable.

- ``run.json``: config, base commit, branch, machine and library versions (written atomically).
- ``attempts.jsonl``: one JSON line when an attempt starts (write-ahead) and one when it ends;
  a keep's later measurement against the baseline adds a ``measured`` line. A SIGKILL at any
  moment leaves whole lines; an attempt with a start and no end was in flight.
- ``results.tsv``: the original's columns plus attempt, speedup, CI, provider, cost.
- ``attempts/<n>/``: prompt, replies, candidate, diff and trial logs of attempt n.
- ``lock``: the pid owning the run; a lock whose pid is gone is stale and taken over.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from orchestrator.redact import scrub_obj
from targets.harness.files import write_atomic

RESULTS_COLUMNS = ("attempt", "commit", "timestamp", "correctness", "geomean_ns", "ci_lo", "ci_hi", "worst_ns",
                   "worst_combo", "best_ns", "best_combo", "peak_mem_mb", "total_seconds", "keep", "speedup",
                   "speedup_ci_lo", "speedup_ci_hi", "provider", "cost_usd", "description")


class LedgerError(Exception):
    pass


class LockHeld(LedgerError):
    pass


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _append_line(path: Path, line: str) -> None:
    # One write of a whole line with O_APPEND: a crash leaves the line whole or torn at the end.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A torn last line (crash mid-write; `read` ignores it): drop it, or the new line
            # would be glued to it and lost.
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class LedgerState:
    """What a run's ledger says, rebuilt on resume."""

    finished: dict[int, dict[str, Any]] = field(default_factory=dict)   # attempt -> finished record
    in_flight: dict[int, dict[str, Any]] = field(default_factory=dict)  # started, never finished

    @property
    def next_attempt(self) -> int:
        ids = set(self.finished) | set(self.in_flight)
        return max(ids) + 1 if ids else 1

    @property
    def records(self) -> list[dict[str, Any]]:
        return [self.finished[k] for k in sorted(self.finished)]


class Ledger:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.attempts_path = run_dir / "attempts.jsonl"
        self.results_path = run_dir / "results.tsv"

    # -- run ---------------------------------------------------------------------------------
    def create(self, run_info: dict[str, Any]) -> None:
        """Write the run's files; ``run.json`` last, as the mark that the run exists (a run is
        found by it: a daemon killed while setting a run up leaves nothing that looks like one)."""
        if (self.dir / "run.json").exists():
            raise FileExistsError(f"{self.dir} already holds a run")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.results_path, "\t".join(RESULTS_COLUMNS) + "\n")
        self.attempts_path.touch()
        write_atomic(self.dir / "run.json", json.dumps(run_info, indent=2) + "\n")

    def run_info(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise LedgerError(f"{self.dir / 'run.json'} is missing or unreadable: {exc}") from exc

    def update_run_info(self, **changes: Any) -> None:
        info = self.run_info()
        info.update(changes)
        write_atomic(self.dir / "run.json", json.dumps(info, indent=2) + "\n")

    # -- attempts ----------------------------------------------------------------------------
    def attempt_dir(self, attempt: int) -> Path:
        path = self.dir / "attempts" / f"{attempt:04d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, attempt: int, record: dict[str, Any]) -> None:
        _append_line(self.attempts_path, json.dumps(scrub_obj({"event": "started", "attempt": attempt, **record})))

    def finish(self, attempt: int, record: dict[str, Any]) -> None:
        """Record how an attempt ended; every text in it is scrubbed of secrets first."""
        record = scrub_obj(record)
        _append_line(self.attempts_path, json.dumps({"event": "finished", "attempt": attempt, **record}))
        row = results_row(attempt, record)
        _append_line(self.results_path, "\t".join(_tsv(row.get(c, "")) for c in RESULTS_COLUMNS))

    def annotate(self, attempt: int, fields: dict[str, Any]) -> None:
        """Add measurements to a finished record (the keep's speedup vs the baseline, taken after
        the keep is safely recorded); ``read`` merges them into the record."""
        _append_line(self.attempts_path, json.dumps(scrub_obj({"event": "measured", "attempt": attempt, **fields})))

    def read(self) -> LedgerState:
        """Fold the event log; a torn last line (power loss mid-write) is ignored."""
        state = LedgerState()
        try:
            lines = self.attempts_path.read_text().splitlines()
        except OSError:
            return state
        for i, line in enumerate(lines):
            try:
                event = json.loads(line)
                attempt = int(event["attempt"])
            except (ValueError, KeyError, TypeError):
                if i == len(lines) - 1:
                    continue
                raise LedgerError(f"{self.attempts_path}: line {i + 1} is not a ledger record (damaged?); move "
                                  "that line out of the file to resume without it, or start a new run") from None
            if event.get("event") == "started":
                state.in_flight[attempt] = event
            elif event.get("event") == "finished":
                state.in_flight.pop(attempt, None)
                state.finished[attempt] = event
            elif event.get("event") == "measured" and attempt in state.finished:
                state.finished[attempt] = {**state.finished[attempt],
                                           **{k: v for k, v in event.items() if k not in ("event", "attempt")}}
        return state

    # -- lock --------------------------------------------------------------------------------
    def acquire_lock(self) -> str | None:
        """Take the run's lock; return a warning if a stale lock was taken over."""
        path = self.dir / "lock"
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now(),
                              "create_time": psutil.Process().create_time()})
        warning = None
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.lock_holder()
                if holder is not None:
                    raise LockHeld(f"run {self.dir} is locked by a live daemon (pid {holder}); stop it first "
                                   f"(touch {self.dir / 'STOP'}) or start a new run") from None
                stale = path.read_text(errors="replace")
                path.unlink(missing_ok=True)
                warning = f"took over a stale lock ({stale.strip()})"
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(payload)
            return warning
        raise LockHeld(f"could not take the lock of {self.dir}")

    def lock_holder(self) -> int | None:
        """The pid holding the lock if that process is alive and is the one that took it."""
        path = self.dir / "lock"
        try:
            info = json.loads(path.read_text())
            pid, created = int(info["pid"]), float(info["create_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if info.get("host") != socket.gethostname():
            return pid                    # another machine's lock: never assume it is stale
        try:
            proc = psutil.Process(pid)
            return pid if abs(proc.create_time() - created) < 1.0 else None
        except psutil.Error:
            return None

    def release_lock(self) -> None:
        if self.lock_holder() == os.getpid():
            (self.dir / "lock").unlink(missing_ok=True)


@dataclass(frozen=True)
class Totals:
    """What a run's finished records add up to: budgets, the live status and reports read this."""

    attempts: int                  # finished records, every verdict
    done: int                      # keeps and discards: what --max-attempts counts
    keeps: int
    not_kept: dict[str, int]       # reason -> count
    hours: float
    cost_usd: float
    input_tokens: int
    output_tokens: int


def tally(records: list[dict[str, Any]]) -> Totals:
    tokens = [r.get("tokens") or {} for r in records]
    return Totals(attempts=len(records), done=sum(r.get("verdict") in ("keep", "discard") for r in records),
                  keeps=sum(r.get("verdict") == "keep" for r in records),
                  not_kept=dict(Counter(str(r.get("reason", "?")) for r in records if r.get("verdict") != "keep")),
                  hours=sum(r.get("duration_seconds", 0.0) for r in records) / 3600.0,
                  cost_usd=sum(r.get("cost_usd", 0.0) for r in records),
                  input_tokens=sum(int(t.get("input_tokens", 0)) for t in tokens),
                  output_tokens=sum(int(t.get("output_tokens", 0)) for t in tokens))


def results_row(attempt: int, record: dict[str, Any]) -> dict[str, Any]:
    """One results.tsv row: the original harness's columns plus attempt, speedup, provider, cost."""
    trial = record.get("trial") or {}
    ci = trial.get("geomean_ns_ci_90pct") or ["", ""]
    sci = trial.get("speedup_ci_90pct") or ["", ""]
    worst, best = trial.get("worst_ns_per_query") or {}, trial.get("best_ns_per_query") or {}
    return {"attempt": attempt, "commit": (record.get("commit") or "")[:10], "timestamp": record.get("finished_at", ""),
            "correctness": trial.get("correctness", "not_run"), "geomean_ns": trial.get("geomean_ns_per_query", ""),
            "ci_lo": ci[0], "ci_hi": ci[1], "worst_ns": worst.get("value", ""), "worst_combo": worst.get("combo", ""),
            "best_ns": best.get("value", ""), "best_combo": best.get("combo", ""),
            "peak_mem_mb": trial.get("peak_mem_mb", ""), "total_seconds": trial.get("total_seconds", ""),
            "keep": record.get("verdict", ""), "speedup": trial.get("speedup_geomean", ""),
            "speedup_ci_lo": sci[0], "speedup_ci_hi": sci[1], "provider": record.get("provider", ""),
            "cost_usd": record.get("cost_usd", 0.0),
            "description": record.get("hypothesis") or record.get("reason_detail", "")}


def _tsv(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\t", " ").replace("\n", " ")
