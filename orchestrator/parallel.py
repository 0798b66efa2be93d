"""The loop with several attempts in flight: ``orchestrator loop --ray ADDRESS --parallel N``.

The model writes proposals in worker threads; each candidate's trial runs on a measurement node of
the cluster (``orchestrator.cluster``). Everything else — the ledger, git, the gate, keeps — happens
in the daemon's main thread, one event at a time, so the run is what it is without ``--ray``: one
ledger, one branch, one worktree, one incumbent.

The incumbent is never raced. A candidate is measured against the kernel it was proposed against;
if another keep landed meanwhile, a candidate the gate would keep is measured again against the
new incumbent before it can be kept (once: if the incumbent moved again, it is discarded as
``stale``, with both measurements on record). A trial whose node was lost is sent again to any
node, once; a second loss ends the attempt as ``infra_error``.
"""

from __future__ import annotations

import difflib
import hashlib
import signal
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator import cluster as cluster_mod, edit, gate, ledger as ledger_mod, report
from orchestrator.gate import Reason
from orchestrator.ledger import RunHistory
from orchestrator.loop import (Attempt, DaemonStop, Discard, Interrupted, Phases, Run, RunEnded, _copy_metrics,
                               _keep, _propose, _reject_duplicate, _request, budget_stop, start_attempt)


@dataclass
class Flight:
    """One attempt in flight: proposed against ``incumbent``, then measured on a node."""

    att: Attempt
    incumbent: str
    history: RunHistory
    change: edit.Edit | None = None
    measured: int = 0                # trials sent (a stale re-measure or a lost node sends another)
    lost: int = 0


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_parallel(run: Run, parallel: int) -> int:
    """As ``loop.run_loop``, with up to ``parallel`` attempts in flight and trials on ``run.cluster``."""
    assert run.cluster is not None and parallel >= 1
    clu = run.cluster

    def on_signal(signum: int, frame: Any) -> None:
        # Only a flag: raising from a handler that interrupts Ray's C code corrupts that call. The
        # main loop and the cluster's waits look at it every cluster.POLL_SECONDS. Once: a second Ctrl-C
        # must not cut the recording short.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        clu.stop_signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    # Replays (offline, script) hand out replies in order and pair a repair turn with the reply
    # before it: their proposals are made one at a time. A live model answers prompts concurrently.
    serial = threading.Lock() if run.provider.name in ("offline", "scripted") else None
    proposing: dict[Future[edit.Edit], Flight] = {}
    measuring: dict[Any, Flight] = {}
    ending: str | None = None
    code = 0
    try:
        while True:
            if clu.stop_signal is not None:
                raise Interrupted(clu.stop_signal)
            history = run.ledger.read().history
            if ending is None:
                stop = budget_stop(run, history)
                # --max-attempts counts attempts started, so it caps starts below, not the run.
                if stop is not None and not stop.reason.startswith("reached --max-attempts"):
                    ending, code = stop.reason, stop.code
            while ending is None and len(proposing) + len(measuring) < parallel and not _capped(run, history,
                                                                                             proposing, measuring):
                flight = _start(run, history)
                proposing[_in_thread(_propose_in_thread, flight, serial)] = flight
            if not proposing and not measuring:
                if ending is None:
                    stop = budget_stop(run, run.ledger.read().history)
                    ending = stop.reason if stop is not None else "nothing left to run"
                break
            done, _ = wait(list(proposing), timeout=cluster_mod.POLL_SECONDS, return_when=FIRST_COMPLETED) if proposing \
                else (set(), set())
            for future in done:
                flight = proposing.pop(future)
                try:
                    flight.change = future.result()
                except Discard as stop:
                    flight.att.finish(stop.verdict, stop.reason, stop.detail, stop.evidence)
                    if isinstance(stop.then, (RunEnded, DaemonStop)) and ending is None:
                        ending, code = str(stop.then), 1 if isinstance(stop.then, DaemonStop) else 0
                    continue
                except Exception as exc:  # noqa: BLE001 (a daemon bug in a proposal: recorded, the run stops)
                    flight.att.finish(ledger_mod.DISCARD, Reason.DAEMON_ERROR, f"{type(exc).__name__}: {exc}",
                                      "".join(traceback.format_exception(exc)))
                    ending, code = ending or f"internal error in attempt {flight.att.rec.attempt}: {exc}", 1
                    continue
                ref = _submit(run, flight)
                if ref is not None:
                    measuring[ref] = flight
            for ref in run.cluster.wait(list(measuring), timeout=0 if done else cluster_mod.POLL_SECONDS):
                flight = measuring.pop(ref)
                again = _judge(run, flight, ref)
                if again is not None:
                    measuring[again] = flight
    except (Interrupted, cluster_mod.Stopped) as exc:
        ending = f"interrupted by {exc}"
        _abandon(run, proposing, measuring, "stopped by a signal")
    except Exception as exc:  # noqa: BLE001 (a daemon bug: every attempt in flight is recorded)
        ending, code = f"internal error: {type(exc).__name__}: {exc} (recorded in the ledger)", 1
        _abandon(run, proposing, measuring, f"the daemon stopped: {type(exc).__name__}: {exc}")
    finally:
        if not (ending or "").startswith("interrupted"):
            for s, handler in previous.items():
                signal.signal(s, handler)
        run.ledger.release_lock()
    run.stop_reason = ending or ""
    run.log(report.summary(run.ledger, run.ws, run.stop_reason))
    return code


def _abandon(run: Run, proposing: dict[Future[edit.Edit], Flight], measuring: dict[Any, Flight], why: str) -> None:
    for flight in [*proposing.values(), *measuring.values()]:
        if not flight.att.rec.verdict:
            if flight.att.staged:
                run.ws.reset()
            flight.att.finish(ledger_mod.INTERRUPTED, Reason.INTERRUPTED, why)
    for ref in measuring:
        run.cluster.cancel(ref)


def _capped(run: Run, history: RunHistory, *in_flight: dict[Any, Flight]) -> bool:
    cap = run.config.max_attempts
    return cap is not None and history.totals.done + sum(len(f) for f in in_flight) >= cap


def _start(run: Run, history: RunHistory) -> Flight:
    att = start_attempt(run, run.ledger.read().next_attempt, Phases(None))
    return Flight(att, run.ws.committed_kernel(), history)


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


def _propose_in_thread(flight: Flight, serial: threading.Lock | None) -> edit.Edit:
    if serial is None:
        return _propose(flight.att, flight.incumbent, flight.history)
    with serial:
        return _propose(flight.att, flight.incumbent, flight.history)


def _submit(run: Run, flight: Flight) -> Any:
    """The candidate's trial against the incumbent it was proposed against; None if it ended here."""
    att, change = flight.att, flight.change
    assert change is not None
    try:
        _reject_duplicate(att, change, flight.incumbent, run.ledger.read().history)
        if change.new_text == flight.incumbent:
            raise Discard(Reason.NO_CHANGE, "the edit leaves kernels.py unchanged")
        (att.dir / "candidate.py").write_text(change.new_text)
        att.rec.diff = "".join(difflib.unified_diff(flight.incumbent.splitlines(True), change.new_text.splitlines(True),
                                                    f"a/{run.ws.kernel_rel}", f"b/{run.ws.kernel_rel}"))
        (att.dir / "diff.patch").write_text(att.rec.diff)
    except Discard as stop:
        att.finish(stop.verdict, stop.reason, stop.detail, stop.evidence)
        return None
    return _send(run, flight)


def _send(run: Run, flight: Flight) -> Any:
    assert flight.change is not None
    flight.measured += 1
    against = flight.att.dir / f"incumbent-{flight.measured}.py"
    against.write_text(flight.incumbent)
    request = _request(run, against, kernel=flight.att.dir / "candidate.py")
    return run.cluster.submit(cluster_mod.job_for(request, run.cluster.head))


def _judge(run: Run, flight: Flight, ref: Any) -> Any:
    """A trial came back: the gate's verdict, then a keep, a discard, or another trial (returned)."""
    att, rec, c = flight.att, flight.att.rec, run.config
    assert flight.change is not None
    out = att.dir / ("trial" if flight.measured == 1 else f"trial-{flight.measured}")
    try:
        returned = run.cluster.get(ref)
    except cluster_mod.NodeLost as exc:
        flight.lost += 1
        rec.remeasured.append({"node_lost": str(exc)})
        if flight.lost < cluster_mod.SENDS:
            run.log(f"attempt {rec.attempt}: its trial's node was lost ({exc}); sent again")
            return _send(run, flight)
        att.finish(ledger_mod.DISCARD, Reason.INFRA_ERROR, f"the trial's node was lost {flight.lost} times: {exc}")
        return None
    outcome = cluster_mod.outcome(returned, out)
    rec.trial_exit_code, rec.trial = outcome.exit_code, asdict(outcome.result) if outcome.result else None
    _copy_metrics(rec, outcome.result)
    verdict = gate.judge(outcome.result, c.gate, c.trial_budget_seconds, outcome.error or "", outcome.exit_code,
                         None, gate.Integrity((), _sha(flight.change.new_text)))
    rec.reasons = verdict.reasons
    if not verdict.keep:
        evidence = outcome.result.failure if outcome.result and outcome.result.failure else outcome.error
        att.finish(ledger_mod.DISCARD, verdict.primary, "; ".join(verdict.reasons), evidence)
        return None
    current = run.ws.committed_kernel()
    if current != flight.incumbent:
        # A keep landed while this was measured: its win was against a kernel that is no longer best.
        rec.remeasured.append({"stale": True, "measured_against": _sha(flight.incumbent)[:12],
                               "incumbent_now": _sha(current)[:12], "speedup": rec.speedup})
        if edit.tree_sha256(flight.change.new_text) == edit.tree_sha256(current):
            best = run.ledger.read().history.best
            rec.duplicate_of = best.attempt if best else 0
            att.finish(ledger_mod.DISCARD, Reason.DUPLICATE, f"the candidate is the code attempt {rec.duplicate_of} "
                       "kept while it was measured (comments and docstrings aside)")
            return None
        if flight.measured >= 2:
            att.finish(ledger_mod.DISCARD, Reason.STALE, "the incumbent changed again while the candidate was "
                       "measured against the new one")
            return None
        run.log(f"attempt {rec.attempt}: a keep landed while it was measured; measuring it against the new best")
        flight.incumbent = current
        return _send(run, flight)
    run.ws.write_candidate(flight.change.new_text)
    att.staged = True
    if run.ws.changed_paths() != [run.ws.kernel_rel]:
        run.ws.reset()
        att.finish(ledger_mod.DISCARD, Reason.REJECTED_CHANGE, f"files other than {run.ws.kernel_rel} changed")
        return None
    _keep(att, flight.change, outcome)
    return None
