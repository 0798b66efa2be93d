"""The run's ledger under ``runs/<target>/<run-id>/``: crash-safe, append-only, human-readable.

- ``run.json``: config, base commit, branch, machine and library versions (written atomically).
- ``attempts.jsonl``: one JSON line when an attempt starts (write-ahead) and one when it ends;
  a keep's later measurement against the baseline adds a ``measured`` line. A SIGKILL at any
  moment leaves whole lines; an attempt with a start and no end was in flight.
- ``results.tsv``: the original's columns plus attempt, speedup, CI, provider, cost.
- ``attempts/<n>/``: prompt, replies, candidate, diff and trial logs of attempt n.
- ``lock``: the pid owning the run; a lock whose pid is gone is stale and taken over.

An attempt is an ``AttemptRecord`` and a run's records a ``RunHistory``: this module is the only
one that turns them into JSON and back, so a new field is added here (and only read elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections import Counter
from collections.abc import Callable
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


# ---------------------------------------------------------------------------------- the record

SCHEMA = 2          # 1: the same fields as an untyped dict, no "schema" key (read as they are)

KEEP, DISCARD, NOT_RUN, INTERRUPTED = "keep", "discard", "not_run", "interrupted"   # verdicts


@dataclass
class AttemptRecord:
    """One attempt as the ledger keeps it: flat fields named as in ``attempts.jsonl``."""

    attempt: int
    started_at: str | None = None
    provider: str | None = None
    model: str | None = None
    price: dict[str, float | None] | None = None        # the model's price when the attempt ran
    # what was proposed
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)    # per reply: the model, or the playbook file
    retries: list[dict[str, Any]] = field(default_factory=list)
    hypothesis: str | None = None
    lesson: str | None = None
    edit_format: str | None = None
    edit_error: str | None = None
    repair_turns: int = 0
    repair_prompts: list[str] = field(default_factory=list)   # sha256 of each repair-<turn>.md sent
    edit_notes: list[str] = field(default_factory=list)       # leniencies the reply parser applied
    analysis: str | None = None                               # the reply's ANALYSIS: section
    diff: str = ""
    ast_sha256: str | None = None                       # the candidate's normalised syntax tree
    duplicate_of: int | None = None                     # an earlier attempt (0: the baseline) with that tree
    # how it was measured and judged
    trial_exit_code: int | None = None
    trial: dict[str, Any] | None = None                 # the runner's TrialResult, as it wrote it
    remeasured: list[dict[str, Any]] = field(default_factory=list)   # trials redone after contention
    reasons: list[str] = field(default_factory=list)    # every failing gate rule, "<code>: <detail>"
    speedup: float | None = None                        # vs the incumbent, from the trial
    speedup_ci: list[float] = field(default_factory=list)
    worst_combo: dict[str, Any] | None = None
    verdict: str = ""                                   # keep | discard | not_run | interrupted
    reason: str = ""                                    # a gate.Reason
    reason_detail: str = ""
    evidence: str = ""
    commit: str | None = None
    finished_at: str | None = None
    duration_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    # measured after a keep was recorded (the "measured" event): reported, never gated
    cumulative_speedup: float | None = None             # vs the run's original baseline
    cumulative_ci: list[float] = field(default_factory=list)
    cumulative_per_combo: dict[str, float] = field(default_factory=dict)
    cumulative_worst_combo: dict[str, Any] | None = None
    cumulative_error: str | None = None
    vs_lance: float | None = None                       # vs Lance itself: > 1 beats it
    vs_lance_ci: list[float] = field(default_factory=list)
    vs_lance_per_combo: dict[str, float] = field(default_factory=dict)
    vs_lance_worst_combo: dict[str, Any] | None = None
    lance_anchor: str | None = None
    lance_per_combo_ns: dict[str, float] = field(default_factory=dict)
    vs_lance_error: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)   # the kept kernel's time split by stage
    extra: dict[str, Any] = field(default_factory=dict)  # fields a newer version wrote: kept as read

    @property
    def kept(self) -> bool:
        return self.verdict == KEEP

    @property
    def done(self) -> bool:
        """A keep or a discard: what --max-attempts counts (not interrupted, not refused a call)."""
        return self.verdict in (KEEP, DISCARD)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, "schema": SCHEMA, **out}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        """Any schema so far: schema 1 had the same names, so migrating is reading."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        # A null where this version has a list or mapping (older writers): the default instead.
        values = {k: v for k, v in data.items() if k in known and (v is not None or k not in _CONTAINERS)}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("event", "schema")}
        return cls(**values, extra=extra)


_CONTAINERS = frozenset(f.name for f in dataclasses.fields(AttemptRecord) if f.default_factory is not dataclasses.MISSING)
MEASURED_FIELDS = frozenset(f.name for f in dataclasses.fields(AttemptRecord)
                            if f.name.startswith(("cumulative_", "vs_lance", "lance_")) or f.name == "profile")


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
    cache_read_tokens: int
    cache_write_tokens: int
    repair_turns: int
    duplicates: int

    @property
    def cache_hit_share(self) -> float | None:
        """Cache-read tokens as a share of all input tokens (None before any was counted)."""
        seen = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / seen if seen else None


@dataclass(frozen=True)
class RunHistory:
    """A run's finished attempts in order, and what every reader derives from them (one place)."""

    records: tuple[AttemptRecord, ...] = ()

    @property
    def keeps(self) -> list[AttemptRecord]:
        return [r for r in self.records if r.kept]

    @property
    def best(self) -> AttemptRecord | None:
        """The current best kernel's attempt: the last keep (each keep beat the one before it)."""
        keeps = self.keeps
        return keeps[-1] if keeps else None

    @property
    def totals(self) -> Totals:
        tokens = [r.tokens for r in self.records]
        hours = sum(r.duration_seconds for r in self.records) / 3600.0
        return Totals(attempts=len(self.records), done=sum(r.done for r in self.records),
                      keeps=len(self.keeps),
                      not_kept=dict(Counter(r.reason or "?" for r in self.records if not r.kept)),
                      hours=hours, cost_usd=sum(r.cost_usd for r in self.records),
                      input_tokens=sum(int(t.get("input_tokens", 0)) for t in tokens),
                      output_tokens=sum(int(t.get("output_tokens", 0)) for t in tokens),
                      cache_read_tokens=sum(int(t.get("cache_read_tokens", 0)) for t in tokens),
                      cache_write_tokens=sum(int(t.get("cache_write_tokens", 0)) for t in tokens),
                      repair_turns=sum(r.repair_turns for r in self.records),
                      duplicates=sum(r.reason == "duplicate" for r in self.records))

    def _streak(self, ends: Callable[[AttemptRecord], bool]) -> int:
        """Finished keeps/discards at the end of the run, counted back until ``ends`` holds."""
        streak = 0
        for r in reversed([r for r in self.records if r.done]):
            if ends(r):
                break
            streak += 1
        return streak

    @property
    def discard_streak(self) -> int:
        """Discards since the last keep (interrupted and unrun attempts don't count)."""
        return self._streak(lambda r: r.kept)

    def streak_of(self, reason: str) -> int:
        """How many of the last finished keeps/discards in a row failed for ``reason``."""
        return self._streak(lambda r: r.reason != reason)

    @property
    def last_failure(self) -> str | None:
        """The last attempt's failure and its evidence, for the next prompt; None after a keep."""
        if not self.records or self.records[-1].kept:
            return None
        r = self.records[-1]
        return f"attempt {r.attempt} ({r.reason}): {r.evidence or r.reason_detail}"

    @property
    def replies_consumed(self) -> int:
        """Proposals (not repair replies) that completed attempts used: where a replay resumes."""
        return sum(1 for r in self.records if r.done for src in r.sources if not src.endswith(".repair.md"))

    @property
    def lance_level(self) -> float | None:
        """Lance's speed on the baseline's scale (cumulative / vs_lance of the latest keep measured
        both ways): the speedup over the baseline that Lance itself would have."""
        for r in reversed(self.keeps):
            if r.cumulative_speedup and r.vs_lance:
                return r.cumulative_speedup / r.vs_lance
        return None

    def incumbent_times(self) -> tuple[str, dict[str, float]]:
        """The current best kernel's ns per op per combo, as last measured, and which kernel that
        is: the best keep's own trial, else the baseline as the first trial's incumbent arm."""
        best = self.best
        if best is not None and best.trial:
            return f"attempt {best.attempt}", dict(best.trial.get("per_combo_geomean_ns") or {})
        return "the baseline", dict(self.first_trial().get("incumbent_per_combo_geomean_ns") or {})

    def near_misses(self, limit: int) -> list[AttemptRecord]:
        """Discarded attempts that were correct and measured faster than their incumbent but failed
        a gate rule (the CI, the worst combo, a trade-off): fastest first."""
        found = [r for r in self.records if r.verdict == DISCARD and r.speedup and r.speedup > 1.0
                 and r.reason in ("not_faster", "worst_combo", "tradeoff")]
        return sorted(found, key=lambda r: -(r.speedup or 0.0))[:limit]

    def failures(self, limit: int) -> list[AttemptRecord]:
        """The last ``limit`` discarded attempts, oldest first."""
        return [r for r in self.records if r.verdict == DISCARD][-limit:]

    def with_tree(self, ast_sha256: str) -> AttemptRecord | None:
        """The first attempt whose candidate had this normalised syntax tree."""
        return next((r for r in self.records if r.ast_sha256 == ast_sha256), None)

    def last_trial(self) -> dict[str, Any]:
        return (self.records[-1].trial or {}) if self.records else {}

    def first_trial(self) -> dict[str, Any]:
        return next((r.trial for r in self.records if r.trial), None) or {}


# ---------------------------------------------------------------------------------- the files

@dataclass
class LedgerState:
    """What a run's ledger says, rebuilt on resume."""

    finished: dict[int, AttemptRecord] = field(default_factory=dict)
    in_flight: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt -> its "started" event

    @property
    def next_attempt(self) -> int:
        ids = set(self.finished) | set(self.in_flight)
        return max(ids) + 1 if ids else 1

    @property
    def records(self) -> list[AttemptRecord]:
        return [self.finished[k] for k in sorted(self.finished)]

    @property
    def history(self) -> RunHistory:
        return RunHistory(tuple(self.records))


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

    def start(self, attempt: int, record: AttemptRecord) -> None:
        """Write ahead: the attempt exists from here on, whatever happens to the daemon."""
        event = {"event": "started", "attempt": attempt, "schema": SCHEMA, "started_at": record.started_at,
                 "provider": record.provider, "model": record.model}
        _append_line(self.attempts_path, json.dumps(scrub_obj(event)))

    def finish(self, record: AttemptRecord) -> None:
        """Record how an attempt ended; every text in it is scrubbed of secrets first."""
        data = scrub_obj(record.to_json())
        _append_line(self.attempts_path, json.dumps({"event": "finished", **data}))
        row = results_row(AttemptRecord.from_json(data))
        _append_line(self.results_path, "\t".join(_tsv(row.get(c, "")) for c in RESULTS_COLUMNS))

    def annotate(self, attempt: int, fields: dict[str, Any]) -> None:
        """Add measurements to a finished record (the keep's speedup vs the baseline, taken after
        the keep is safely recorded); ``read`` merges them into the record."""
        unknown = set(fields) - MEASURED_FIELDS
        if unknown:
            raise ValueError(f"not measurements of a keep: {sorted(unknown)}")
        _append_line(self.attempts_path, json.dumps(scrub_obj({"event": "measured", "attempt": attempt, **fields})))

    def read(self) -> LedgerState:
        """Fold the event log; a torn last line (power loss mid-write) is ignored."""
        state = LedgerState()
        try:
            lines = self.attempts_path.read_text().splitlines()
        except OSError:
            return state
        finished: dict[int, dict[str, Any]] = {}
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
                finished[attempt] = event
            elif event.get("event") == "measured" and attempt in finished:
                finished[attempt] = {**finished[attempt],
                                     **{k: v for k, v in event.items() if k not in ("event", "attempt")}}
        state.finished = {n: AttemptRecord.from_json(data) for n, data in finished.items()}
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


def results_row(record: AttemptRecord) -> dict[str, Any]:
    """One results.tsv row: the original harness's columns plus attempt, speedup, provider, cost."""
    trial = record.trial or {}
    ci = trial.get("geomean_ns_ci_90pct") or ["", ""]
    sci = trial.get("speedup_ci_90pct") or ["", ""]
    worst, best = trial.get("worst_ns_per_query") or {}, trial.get("best_ns_per_query") or {}
    return {"attempt": record.attempt, "commit": (record.commit or "")[:10], "timestamp": record.finished_at or "",
            "correctness": trial.get("correctness", "not_run"), "geomean_ns": trial.get("geomean_ns_per_query", ""),
            "ci_lo": ci[0], "ci_hi": ci[1], "worst_ns": worst.get("value", ""), "worst_combo": worst.get("combo", ""),
            "best_ns": best.get("value", ""), "best_combo": best.get("combo", ""),
            "peak_mem_mb": trial.get("peak_mem_mb", ""), "total_seconds": trial.get("total_seconds", ""),
            "keep": record.verdict, "speedup": trial.get("speedup_geomean", ""),
            "speedup_ci_lo": sci[0], "speedup_ci_hi": sci[1], "provider": record.provider or "",
            "cost_usd": record.cost_usd, "description": record.hypothesis or record.reason_detail}


def _tsv(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\t", " ").replace("\n", " ")
