"""The loop with several attempts in flight: ``orchestrator loop --ray ADDRESS --parallel N``.

The model writes proposals in worker threads; each candidate's trial runs on a measurement node of
the cluster (``orchestrator.cluster``). Everything else — the ledger, git, the gate, keeps — happens
in the daemon's main thread, one event at a time, so the run is what it is without ``--ray``: one
ledger, one branch, one worktree, one incumbent. ``orchestrator fleet`` steps several runs in the
same main thread; they share the nodes through one ``cluster.Slots``.

The incumbent is never raced. A candidate is measured against the kernel it was proposed against;
if another keep landed meanwhile, a candidate the gate would keep is measured again against the
new incumbent before it can be kept (once: if the incumbent moved again, it is discarded as
``stale``, with both measurements on record). A trial whose node was lost is sent again to any
node, once; a second loss ends the attempt as ``infra_error``. A trial that other work disturbed
on its node, and that was not kept, is sent again once the node's core is quiet.
"""

from __future__ import annotations

import difflib
import hashlib
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, replace
from typing import Any

from orchestrator import cluster as cluster_mod, edit, gate, ledger as ledger_mod, report
from orchestrator.gate import Reason
from orchestrator.ledger import LedgerState, RunHistory
from orchestrator.loop import (Attempt, DaemonStop, Discard, Interrupted, Phases, Run, RunEnded, _copy_metrics,
                               _keep, _propose, _reject_duplicate, _request, budget_stop, disturbed,
                               start_attempt, trial_label)


LEDGER_SECONDS = 5.0        # re-read the ledger at least this often (a STOP file needs no read)


@dataclass
class Flight:
    """One attempt in flight: proposed against ``incumbent``, then measured on a node."""

    att: Attempt
    incumbent: str
    history: RunHistory
    change: edit.Edit | None = None
    measured: int = 0                # trials sent (a stale re-measure, a lost node or a busy node sends another)
    lost: int = 0
    busy: int = 0                    # re-measures because other work took the node's worker core


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RunInFlight:
    """One run with up to ``parallel`` attempts in flight. ``step`` does what is due (start
    proposals, send finished proposals' trials, judge finished trials) and never blocks, except
    on a keep's own re-measures; ``drive`` steps every run of the daemon in its main thread."""

    def __init__(self, run: Run, parallel: int) -> None:
        assert run.slots is not None and parallel >= 1
        self.run, self.parallel = run, parallel
        # Replays (offline, script) hand out replies in order and pair a repair turn with the reply
        # before it: their proposals are made one at a time. A live model answers concurrently.
        self.serial = threading.Lock() if run.provider.name in ("offline", "scripted") else None
        self.proposing: dict[Future[edit.Edit], Flight] = {}
        self.measuring: dict[int, tuple[cluster_mod.Ticket, Flight]] = {}
        self.ending: str | None = None
        self.code = 0
        self.handling: Flight | None = None      # taken out of the maps above while its event is handled
        self._read: LedgerState | None = None
        self._read_at = 0.0
        self._stale = True

    @property
    def over(self) -> bool:
        return self.ending is not None and not self.proposing and not self.measuring

    def step(self) -> None:
        run = self.run
        if self.ending is None:
            stop = budget_stop(run, self._ledger().history)
            # --max-attempts counts attempts started, so it caps starts below, not the run.
            if stop is not None and not stop.reason.startswith("reached --max-attempts"):
                self.ending, self.code = stop.reason, stop.code
        while self.ending is None and len(self.proposing) + len(self.measuring) < self.parallel \
                and not self._capped(self._ledger().history):
            state = self._ledger()
            flight = Flight(start_attempt(run, state.next_attempt, Phases(None)), run.ws.committed_kernel(),
                            state.history)
            self._stale = True
            self.proposing[_in_thread(self._propose, flight)] = flight
        if not self.proposing and not self.measuring and self.ending is None:
            stop = budget_stop(run, self._ledger().history)
            self.ending = stop.reason if stop is not None else "nothing left to run"
        for future in [f for f in self.proposing if f.done()]:
            self.handling = self.proposing.pop(future)
            self._stale = True
            self._proposed(self.handling, future)
            self.handling = None
        for key, (ticket, flight) in list(self.measuring.items()):
            if ticket.done:
                self.handling = flight
                del self.measuring[key]
                self._stale = True
                self._judge(flight, ticket)
                self.handling = None

    def _ledger(self) -> LedgerState:
        """The ledger as last read: again after this run wrote to it, else every few seconds (a long
        run's ledger is megabytes, and the daemon steps five times a second)."""
        if self._read is None or self._stale or time.monotonic() - self._read_at > LEDGER_SECONDS:
            self._read, self._read_at, self._stale = self.run.ledger.read(), time.monotonic(), False
        return self._read

    def futures(self) -> list[Future[edit.Edit]]:
        return list(self.proposing)

    def fail(self, exc: BaseException) -> None:
        """A daemon bug in this run: every attempt in flight is recorded, the run ends, others go on."""
        self.abandon(f"the daemon stopped: {type(exc).__name__}: {exc}")
        self.ending, self.code = f"internal error: {type(exc).__name__}: {exc} (recorded in the ledger)", 1

    def abandon(self, why: str) -> None:
        handling = [self.handling] if self.handling is not None else []
        for flight in [*self.proposing.values(), *(f for _, f in self.measuring.values()), *handling]:
            if not flight.att.rec.verdict:
                if flight.att.staged:
                    self.run.ws.reset()
                flight.att.finish(ledger_mod.INTERRUPTED, Reason.INTERRUPTED, why)
        for ticket, _ in self.measuring.values():
            self.run.slots.cancel(ticket)
        self.proposing.clear()
        self.measuring.clear()
        self.handling = None

    def close(self) -> None:
        run = self.run
        run.ledger.release_lock()
        run.stop_reason = self.ending or ""
        run.log(report.summary(run.ledger, run.ws, run.stop_reason))

    def _capped(self, history: RunHistory) -> bool:
        cap = self.run.config.max_attempts
        return cap is not None and history.totals.done + len(self.proposing) + len(self.measuring) >= cap

    def _propose(self, flight: Flight) -> edit.Edit:
        if self.serial is None:
            return _propose(flight.att, flight.incumbent, flight.history)
        with self.serial:
            return _propose(flight.att, flight.incumbent, flight.history)

    def _proposed(self, flight: Flight, future: Future[edit.Edit]) -> None:
        att = flight.att
        try:
            flight.change = future.result()
        except Discard as stop:
            att.finish(stop.verdict, stop.reason, stop.detail, stop.evidence)
            if isinstance(stop.then, (RunEnded, DaemonStop)) and self.ending is None:
                self.ending, self.code = str(stop.then), 1 if isinstance(stop.then, DaemonStop) else 0
            return
        except Exception as exc:  # noqa: BLE001 (a daemon bug in a proposal: recorded, the run stops)
            att.finish(ledger_mod.DISCARD, Reason.DAEMON_ERROR, f"{type(exc).__name__}: {exc}",
                       "".join(traceback.format_exception(exc)))
            self.ending, self.code = self.ending or f"internal error in attempt {att.rec.attempt}: {exc}", 1
            return
        run, change = self.run, flight.change
        try:
            _reject_duplicate(att, change, flight.incumbent, run.ledger.read().history)
            if change.new_text == flight.incumbent:
                raise Discard(Reason.NO_CHANGE, "the edit leaves kernels.py unchanged")
            (att.dir / "candidate.py").write_text(change.new_text)
            att.rec.diff = "".join(difflib.unified_diff(flight.incumbent.splitlines(True),
                                                        change.new_text.splitlines(True),
                                                        f"a/{run.ws.kernel_rel}", f"b/{run.ws.kernel_rel}"))
            (att.dir / "diff.patch").write_text(att.rec.diff)
        except Discard as stop:
            att.finish(stop.verdict, stop.reason, stop.detail, stop.evidence)
            return
        self._send(flight)

    def _send(self, flight: Flight, quiet: bool = False) -> None:
        """The candidate's trial against ``flight.incumbent`` on the next free node; ``quiet``: the
        node first waits until nothing else takes the core the trial's workers will use."""
        run, c = self.run, self.run.config
        flight.measured += 1
        against = flight.att.dir / f"incumbent-{flight.measured}.py"
        against.write_text(flight.incumbent)
        job = cluster_mod.job_for(_request(run, against, kernel=flight.att.dir / "candidate.py"), run.slots.cluster.head)
        if quiet:
            job = replace(job, quiet_threshold=c.contention_threshold, quiet_wait_seconds=c.quiet_wait_seconds)
        ticket = run.slots.place(cluster_mod.Ticket(run.run_id, run.target.name, trial_label(run, self._out(flight)),
                                                    job, urgent=False))
        self.measuring[id(ticket)] = (ticket, flight)

    def _out(self, flight: Flight) -> Any:
        return flight.att.dir / ("trial" if flight.measured == 1 else f"trial-{flight.measured}")

    def _judge(self, flight: Flight, ticket: cluster_mod.Ticket) -> None:
        """A trial came back: the gate's verdict, then a keep, a discard, or another trial."""
        run, att, rec, c = self.run, flight.att, flight.att.rec, self.run.config
        assert flight.change is not None
        try:
            returned = run.slots.reply(ticket)
        except cluster_mod.NodeLost as exc:
            flight.lost += 1
            rec.remeasured.append({"node_lost": str(exc)})
            if flight.lost < cluster_mod.SENDS:
                run.log(f"attempt {rec.attempt}: its trial's node was lost ({exc}); sent again")
                self._send(flight)
                return
            att.finish(ledger_mod.DISCARD, Reason.INFRA_ERROR, f"the trial's node was lost {flight.lost} times: {exc}")
            return
        outcome = cluster_mod.outcome(returned, self._out(flight))
        rec.trial_exit_code, rec.trial = outcome.exit_code, asdict(outcome.result) if outcome.result else None
        _copy_metrics(rec, outcome.result)
        verdict = gate.judge(outcome.result, c.gate, c.trial_budget_seconds, outcome.error or "", outcome.exit_code,
                             None, gate.Integrity((), _sha(flight.change.new_text)))
        rec.reasons = verdict.reasons
        busy = disturbed(verdict, outcome.result, c, flight.busy)
        if busy is not None:
            flight.busy += 1
            rec.remeasured.append({"foreign_cpu_share": busy, "reasons": verdict.reasons, "node": returned.node})
            run.log(f"attempt {rec.attempt}: other work took {busy:.0%} of the worker core on {returned.node}; "
                    "measuring again once a node's core is quiet")
            self._send(flight, quiet=True)
            return
        if not verdict.keep:
            evidence = outcome.result.failure if outcome.result and outcome.result.failure else outcome.error
            att.finish(ledger_mod.DISCARD, verdict.primary, "; ".join(verdict.reasons), evidence)
            return
        current = run.ws.committed_kernel()
        if current != flight.incumbent:
            # A keep landed while this was measured: its win was against a kernel that is no longer best.
            rec.remeasured.append({"stale": True, "measured_against": _sha(flight.incumbent)[:12],
                                   "incumbent_now": _sha(current)[:12], "speedup": rec.speedup})
            if edit.tree_sha256(flight.change.new_text) == edit.tree_sha256(current):
                best = run.ledger.read().history.best
                rec.duplicate_of = best.attempt if best else 0
                att.finish(ledger_mod.DISCARD, Reason.DUPLICATE, f"the candidate is the code attempt "
                           f"{rec.duplicate_of} kept while it was measured (comments and docstrings aside)")
                return
            if any(r.get("stale") for r in rec.remeasured[:-1]):
                att.finish(ledger_mod.DISCARD, Reason.STALE, "the incumbent changed again while the candidate was "
                           "measured against the new one")
                return
            run.log(f"attempt {rec.attempt}: a keep landed while it was measured; measuring it against the new best")
            flight.incumbent = current
            self._send(flight)
            return
        run.ws.write_candidate(flight.change.new_text)
        att.staged = True
        if run.ws.changed_paths() != [run.ws.kernel_rel]:
            run.ws.reset()
            att.finish(ledger_mod.DISCARD, Reason.REJECTED_CHANGE, f"files other than {run.ws.kernel_rel} changed")
            return
        _keep(att, flight.change, outcome)


def run_parallel(run: Run, parallel: int) -> int:
    """As ``loop.run_loop``, with up to ``parallel`` attempts in flight and trials on ``run.slots``."""
    return drive([RunInFlight(run, parallel)])[0]


def drive(runs: list[RunInFlight]) -> list[int]:
    """Steps every run until each has ended; returns their exit codes. One run's daemon error ends
    that run (its attempts recorded); a signal ends them all, every attempt in flight recorded."""
    slots = runs[0].run.slots
    clu = slots.cluster

    def on_signal(signum: int, frame: Any) -> None:
        # Only a flag: raising from a handler that interrupts Ray's C code corrupts that call. The
        # loop below and every wait on a trial look at it every cluster.POLL_SECONDS. Once: a
        # second Ctrl-C must not cut the recording short.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        clu.stop_signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not all(r.over for r in runs):
            if clu.stop_signal is not None:
                raise Interrupted(clu.stop_signal)
            for r in runs:
                if not r.over:
                    try:
                        r.step()
                    except (Interrupted, cluster_mod.Stopped):
                        raise
                    except Exception as exc:  # noqa: BLE001 (a daemon bug: this run ends, recorded)
                        r.fail(exc)
            slots.step()
            pending = [f for r in runs for f in r.futures()]
            if pending:
                wait(pending, timeout=cluster_mod.POLL_SECONDS, return_when=FIRST_COMPLETED)
            else:
                time.sleep(cluster_mod.POLL_SECONDS)
    except (Interrupted, cluster_mod.Stopped) as exc:
        for r in runs:
            r.abandon("stopped by a signal")
            r.ending = f"interrupted by {exc}"
    finally:
        if clu.stop_signal is None:
            for s, handler in previous.items():
                signal.signal(s, handler)
        for r in runs:
            r.close()
    return [r.code for r in runs]


def _in_thread(fn: Callable[..., edit.Edit], *args: Any) -> Future[edit.Edit]:
    """``fn(*args)`` in a daemon thread: a model call still running when the daemon stops must not
    hold the process open (a pool's threads are joined at exit)."""
    future: Future[edit.Edit] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread, which records it)
            future.set_exception(exc)
    threading.Thread(target=run, name="propose", daemon=True).start()
    return future
