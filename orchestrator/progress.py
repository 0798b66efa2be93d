"""The daemon's live progress: a status panel on a terminal (rich), one plain line per phase
change without one (nohup, systemd, CI logs), and ``status.json`` in the run directory for
`orchestrator status` either way.

It only shows what the loop tells it; it never decides anything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.ledger import RunHistory
from orchestrator.redact import scrub, scrub_obj
from targets.harness.files import write_atomic

# What a person calls each of the loop's phases; phases with the same label print one line.
BUSY_SHARE = 0.10                 # other work's share of the worker core worth telling the user about
PHASE_LABELS = {"prompt": "proposing", "propose": "proposing", "edit": "editing", "workspace": "editing",
                "trial": "trial", "gate": "gate", "git": "committing", "cumulative": "measuring vs baseline",
                "vs_lance": "measuring vs Lance", "profile": "profiling the new best (time by stage)",
                "baseline profile": "profiling the baseline (time by stage)", "ledger": "logging"}


@dataclass
class Status:
    """What status.json holds: the daemon's state at its last phase change."""

    run_id: str
    target: str
    model: str
    pid: int = field(default_factory=os.getpid)
    attempt: int | None = None
    phase: str = "starting"
    phase_since: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    attempts_done: int = 0
    keeps: int = 0
    not_kept: dict[str, int] = field(default_factory=dict)   # reason -> count
    best_speedup: float | None = None                        # the last keep's speedup vs the baseline
    best_vs_lance: float | None = None                       # the last keep's speedup vs Lance itself (> 1: beats it)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    budget_left: str = ""
    stop_reason: str = ""
    sandbox: str = ""                                        # its label; "OFF ..." is shown on every line
    contention: float | None = None                          # other work's share of the worker core, last trial


def recount(status: Status, history: RunHistory) -> None:
    """Refresh the run's totals from its finished records."""
    t, best = history.totals, history.best
    status.attempts_done, status.keeps, status.not_kept = t.attempts, t.keeps, t.not_kept
    status.best_speedup = best.cumulative_speedup if best else None
    status.best_vs_lance = best.vs_lance if best else None
    status.input_tokens, status.output_tokens = t.input_tokens, t.output_tokens
    status.contention = (history.last_trial().get("contention") or {}).get("foreign_cpu_share")
    status.cost_usd = round(t.cost_usd, 6)


class LiveStatus:
    def __init__(self, run_dir: Path, status: Status, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.path = run_dir / "status.json"
        self.status = status
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._live: Live | None = None
        if self.tty:
            self._live = Live(self, console=Console(file=self.stream), refresh_per_second=4, transient=True)
            self._live.start()
        self._save()

    # -- what the loop tells it --------------------------------------------------------------
    def begin_attempt(self, n: int, history: RunHistory, budget_left: str) -> None:
        recount(self.status, history)
        self.status.attempt, self.status.budget_left = n, budget_left
        self.phase("prompt")

    def phase(self, name: str) -> None:
        label = PHASE_LABELS.get(name, name)
        if label == self.status.phase:
            return
        self.status.phase, self.status.phase_since = label, time.time()
        self._save()
        if not self.tty:
            who = f"attempt {self.status.attempt}" if self.status.attempt is not None else "run"
            self._print(f"{who}: {label} ({self._totals()})")

    def end_attempt(self, history: RunHistory) -> None:
        recount(self.status, history)
        self.status.phase, self.status.phase_since = "between attempts", time.time()
        self._save()

    def log(self, line: str) -> None:
        self._print(line)

    def close(self, stop_reason: str) -> None:
        self.status.phase, self.status.stop_reason = "stopped", stop_reason
        self._save()
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- rendering ---------------------------------------------------------------------------
    @property
    def unsandboxed(self) -> bool:
        return self.status.sandbox.startswith("OFF")

    def _totals(self) -> str:
        s = self.status
        best = ("UNSANDBOXED; " if self.unsandboxed else "") + (
            f"best {s.best_speedup:.2f}x" if s.best_speedup else "best: baseline") + (
            f" ({s.best_vs_lance:.2f}x vs Lance)" if s.best_vs_lance else "")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.not_kept.items()))
        return (f"{best}; {s.keeps} kept, {s.attempts_done - s.keeps} not" + (f" ({reasons})" if reasons else "")
                + f"; {s.input_tokens + s.output_tokens} tokens, ${s.cost_usd:.4f}"
                + (f"; BUSY MACHINE: others took {s.contention:.0%} of the worker core in the last trial"
                   if s.contention is not None and s.contention > BUSY_SHARE else "")
                + (f"; left: {s.budget_left}" if s.budget_left else ""))

    def __rich__(self) -> Table:
        s = self.status
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("run", f"{s.run_id} ({s.target}, {s.model})")
        if self.unsandboxed:
            grid.add_row("SANDBOX", "OFF (--unsafe-no-sandbox): kernels run with your rights")
        grid.add_row("attempt", f"{s.attempt or '-'}: {s.phase} for {time.time() - s.phase_since:.0f} s")
        grid.add_row("best", (f"{s.best_speedup:.3f}x vs baseline" if s.best_speedup else "the baseline")
                     + (f", {s.best_vs_lance:.2f}x vs Lance" + (" (an upstream candidate)" if s.best_vs_lance > 1 else "")
                        if s.best_vs_lance else ""))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.not_kept.items())) or "-"
        grid.add_row("verdicts", f"{s.keeps} kept; not kept: {reasons}")
        grid.add_row("spent", f"{s.input_tokens:,} in / {s.output_tokens:,} out tokens, ${s.cost_usd:.4f}")
        grid.add_row("budget left", s.budget_left or "unlimited")
        if s.contention is not None and s.contention > BUSY_SHARE:
            grid.add_row("BUSY MACHINE", f"others took {s.contention:.0%} of the worker core in the last trial")
        return grid

    def _print(self, line: str) -> None:
        line = scrub(line)
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def _save(self) -> None:
        self.status.updated_at = time.time()
        write_atomic(self.path, json.dumps(scrub_obj(asdict(self.status)), indent=1) + "\n")


def read_status(run_dir: Path) -> Status | None:
    """The last status a daemon wrote for this run, or None (never run, or an older version)."""
    try:
        return Status(**json.loads((run_dir / "status.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
