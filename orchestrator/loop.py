"""The daemon: one attempt after another, as a state machine written in code.

prompt -> propose (provider) -> edit (+ repair turns) -> workspace -> trial -> gate ->
keep (commit, cumulative trial) or discard (reset) -> ledger. The LLM only proposes: git, the
trial, the verdict and the log are this module's. Every attempt is written ahead ("started")
and finished exactly once, whatever happens in between.
"""

from __future__ import annotations

import hashlib
import platform
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from orchestrator import (compare, edit, gate, ledger as ledger_mod, policy, project, prompt as prompt_mod, report,
                          trial, workspace)
from orchestrator.config import RunConfig, to_dict
from orchestrator.gate import Reason
from orchestrator.ledger import AttemptRecord, Ledger, RunHistory
from orchestrator.progress import LiveStatus
from orchestrator.provider import ErrorKind, Message, Provider, ProviderError, Usage
from targets import TargetInfo
from targets.harness import contention, machine
from targets.harness.files import write_atomic
from targets.harness.result import TrialResult

EVIDENCE_CHARS = 4000


class Interrupted(BaseException):
    """SIGINT/SIGTERM: finish the attempt as interrupted, release the lock, exit 0."""


class DaemonStop(Exception):
    """A condition that stops the daemon with a message (e.g. the provider refused our key)."""


class RunEnded(Exception):
    """An orderly end found mid-attempt (the replies ran out): exit 0."""


@dataclass
class Run:
    """Everything one run needs, built by ``start`` or ``resume``."""

    config: RunConfig
    target: TargetInfo
    api: dict[str, dict[str, list[str]]]
    allowed_imports: tuple[str, ...]
    provider: Provider
    ledger: Ledger
    ws: workspace.Workspace
    files: prompt_mod.PromptFiles
    run_id: str
    log: Callable[[str], None] = print
    machine: str = field(default_factory=machine.facts)     # what the model is told about this machine
    history_rows: int = 0                 # shrinks when a prompt was too long for the model
    stop_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    status: LiveStatus | None = None      # live progress and status.json, when the CLI runs the loop
    slots: Any = None                     # orchestrator.cluster.Slots with --ray: trials run on its nodes

    @property
    def baseline(self) -> Path:
        return self.ledger.dir / "baseline.py"

    @property
    def incumbent(self) -> Path:
        return self.ledger.dir / "incumbent.py"


class Phases:
    """Wall time per phase of one attempt; ``listener`` hears each phase as it begins."""

    def __init__(self, listener: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.listener = listener

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.listener is not None:
            self.listener(name)
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 4)


def _add(total: Usage, more: Usage) -> Usage:
    return Usage(total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens,
                 total.cache_read_tokens + more.cache_read_tokens, total.cache_write_tokens + more.cache_write_tokens,
                 round(total.cost_usd + more.cost_usd, 6), round(total.latency_seconds + more.latency_seconds, 4))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Discard(Exception):
    """Ends an attempt early with this verdict and reason; ``then`` is raised once it is recorded
    (the run itself must stop, e.g. the API refused our key)."""

    def __init__(self, reason: Reason, detail: str, evidence: str | None = None, verdict: str = ledger_mod.DISCARD,
                 then: BaseException | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.evidence, self.verdict, self.then = reason, detail, evidence, verdict, then


@dataclass
class Attempt:
    """One attempt in progress: its record (what the ledger will keep), phase clock and spend."""

    run: Run
    rec: AttemptRecord
    dir: Path
    phases: Phases
    usage: Usage = field(default_factory=Usage)
    staged: bool = False                       # the candidate is in the worktree: a discard resets it
    t0: float = field(default_factory=time.monotonic)

    def finish(self, verdict: str, reason: Reason, detail: str = "", evidence: str | None = None) -> AttemptRecord:
        run, rec = self.run, self.rec
        rec.verdict, rec.reason, rec.reason_detail = verdict, str(reason), _one_line(detail, 500)
        rec.evidence = (evidence or detail)[-EVIDENCE_CHARS:]
        rec.finished_at, rec.duration_seconds = ledger_mod.now(), round(time.monotonic() - self.t0, 3)
        rec.phase_seconds = self.phases.seconds
        rec.tokens = {k: v for k, v in asdict(self.usage).items() if k != "cost_usd"}
        rec.cost_usd = self.usage.cost_usd
        with self.phases("ledger"):
            run.ledger.finish(rec)
            if rec.lesson and verdict != ledger_mod.INTERRUPTED:
                _append_lesson(run, rec.attempt, rec.lesson, verdict if rec.kept else f"{verdict}: {reason}")
        tag = f"[{run.provider.name}]" if run.provider.name == "offline" else f"[{run.provider.model}]"
        speed = f" speedup {rec.speedup:.3f}x" if rec.speedup else ""
        run.log(f"{tag} attempt {rec.attempt}: {verdict} ({reason}){speed} — "
                f"{_one_line(rec.hypothesis or detail, 100)}")
        return rec


# ---------------------------------------------------------------------------------- one attempt

def start_attempt(run: Run, n: int, phases: Phases) -> Attempt:
    """Attempt ``n``, written ahead to the ledger ("started") before anything can fail."""
    spec = run.provider.spec
    att = Attempt(run, AttemptRecord(n, started_at=ledger_mod.now(), provider=run.provider.name,
                                     model=run.provider.model,
                                     price=asdict(spec.price) if spec is not None and spec.price else None),
                  run.ledger.attempt_dir(n), phases)
    run.ledger.start(n, att.rec)
    return att


def run_attempt(run: Run, n: int, history: RunHistory) -> AttemptRecord:
    """Run attempt ``n`` to its end and return its finished record (already in the ledger).

    Each stage either returns what the next needs or raises ``Discard``; the verdict on a trial is
    the gate's alone."""
    att = start_attempt(run, n, Phases(run.status.phase if run.status else None))
    try:
        incumbent = run.ws.committed_kernel()
        change = _propose(att, incumbent, history)
        _reject_duplicate(att, change, incumbent, history)
        _stage(att, change, incumbent)
        outcome = _trial_and_verdict(att, history)
        return _keep(att, change, outcome)
    except Discard as stop:
        if att.staged:
            run.ws.reset()
        att.finish(stop.verdict, stop.reason, stop.detail, stop.evidence)
        if stop.then is not None:
            raise stop.then from stop
        return att.rec
    except Interrupted:
        if not att.rec.verdict:               # a keep interrupted while measured stays a keep
            run.ws.reset()
            att.finish(ledger_mod.INTERRUPTED, Reason.INTERRUPTED, "stopped by a signal")
        raise
    except (DaemonStop, RunEnded):
        raise
    except Exception as exc:  # a daemon bug still leaves a complete record
        if not att.rec.verdict:
            run.ws.reset()
            att.finish(ledger_mod.DISCARD, Reason.DAEMON_ERROR, f"{type(exc).__name__}: {exc}",
                       "".join(traceback.format_exception(exc)))
        raise DaemonStop(f"internal error in attempt {n}: {exc} (recorded in the ledger)") from exc


def _propose(att: Attempt, incumbent: str, history: RunHistory) -> edit.Edit:
    """Prompt, reply, edit: the model's proposal applied to the incumbent, with repair turns for
    an edit that does not apply or breaks the contract."""
    run, rec = att.run, att.rec
    with att.phases("prompt"):
        try:
            prompt = prompt_mod.build(run.files, _context(run, rec.attempt, incumbent, history))
        except prompt_mod.PromptError as exc:
            raise Discard(Reason.DAEMON_ERROR, str(exc), verdict=ledger_mod.NOT_RUN,
                          then=DaemonStop(f"{exc}; fix the template and --resume")) from exc
        rec.prompt_hashes = prompt.file_hashes
        compare.save_inputs(run.ledger.dir, prompt.file_texts)
        (att.dir / "prompt.md").write_text(prompt.render())
    for turn in range(run.config.repair_turns + 1):
        refusal = _over_cost_budget(run, history, att.usage, prompt.messages)
        if refusal:
            raise Discard(Reason.COST_BUDGET, refusal, verdict=ledger_mod.NOT_RUN, then=RunEnded(refusal))
        try:
            with att.phases("propose"):
                reply = run.provider.complete(prompt.messages, "propose" if turn == 0 else "repair")
        except ProviderError as exc:
            att.usage = _add(att.usage, exc.usage)
            rec.retries.extend(exc.retries)
            _provider_failed(run, exc, rec.edit_error)
        att.usage = _add(att.usage, reply.usage)
        rec.retries.extend(reply.retries)
        rec.sources.append(reply.source or reply.model)
        (att.dir / f"reply-{turn}.md").write_text(reply.text)
        with att.phases("edit"):
            try:
                change = edit.parse_and_apply(reply.text, incumbent, api=run.api)
                edit.validate(change.new_text, run.api)
                policy.check(change.new_text, run.allowed_imports)
            except edit.EditError as exc:
                rec.edit_error = str(exc)
                rec.hypothesis = rec.hypothesis or _one_line(edit.hypothesis_of(reply.text) or "", 300) or None
                if turn == run.config.repair_turns:
                    raise Discard(Reason.POLICY if isinstance(exc, policy.PolicyError) else Reason.EDIT_FAILED,
                                  str(exc)) from None
                rec.repair_turns = turn + 1
                prompt = prompt_mod.repair(prompt, run.files, reply.text, str(exc))
                text = prompt.messages[-1].content
                (att.dir / f"repair-{turn + 1}.md").write_text(text)
                rec.repair_prompts.append(hashlib.sha256(text.encode()).hexdigest())
                rec.prompt_hashes = prompt.file_hashes
                compare.save_inputs(run.ledger.dir, prompt.file_texts)
                continue
        rec.hypothesis, rec.lesson, rec.edit_format = _one_line(change.hypothesis, 300), change.lesson, change.format
        rec.edit_notes, rec.analysis = list(change.notes), change.analysis
        return change
    raise AssertionError("unreachable: the last repair turn either returns or discards")


def _provider_failed(run: Run, exc: ProviderError, edit_error: str | None) -> NoReturn:
    """A call that failed after the provider's own retries: the attempt is discarded, and the run
    stops when the API refuses us or the replies ran out."""
    if exc.kind == ErrorKind.AUTH:
        raise Discard(Reason.PROVIDER_ERROR, str(exc),
                      then=DaemonStop(f"the provider refused the request: {exc}")) from exc
    if exc.kind == ErrorKind.EXHAUSTED:
        raise Discard(Reason.PROVIDER_ERROR, str(exc), then=RunEnded(str(exc))) from exc
    if exc.kind == ErrorKind.CONTEXT:
        run.history_rows = max(1, (run.history_rows or run.config.history_rows) // 2)
        run.log(f"the prompt was too long for the model; next attempts show {run.history_rows} earlier attempts")
    raise Discard(Reason(exc.kind.discard_reason), f"{exc.kind}: {exc}", edit_error) from exc


def _reject_duplicate(att: Attempt, change: edit.Edit, incumbent: str, history: RunHistory) -> None:
    """A candidate whose code (its syntax tree without comments and docstrings) is the current
    best's or an earlier attempt's would only measure again what was measured: no trial."""
    rec = att.rec
    rec.ast_sha256 = edit.tree_sha256(change.new_text)
    if change.new_text == incumbent:
        return                                # no change at all: _stage says so
    best = history.best
    if rec.ast_sha256 == edit.tree_sha256(incumbent):
        rec.duplicate_of = best.attempt if best else 0
        what = f"attempt {best.attempt}'s kept kernel" if best else "the baseline"
        raise Discard(Reason.DUPLICATE, f"the candidate differs from the current best ({what}) only in comments, "
                                        "docstrings or layout")
    earlier = history.with_tree(rec.ast_sha256)
    if earlier is not None:
        rec.duplicate_of = earlier.attempt
        raise Discard(Reason.DUPLICATE, f"the candidate is attempt {earlier.attempt}'s code again (comments and "
                                        f"docstrings aside), which ended as {earlier.verdict} ({earlier.reason})")


def _stage(att: Attempt, change: edit.Edit, incumbent: str) -> None:
    """The candidate into the run's worktree, and only kernels.py may differ from the incumbent."""
    run = att.run
    with att.phases("workspace"):
        run.ws.write_candidate(change.new_text)
        att.staged = True
        (att.dir / "candidate.py").write_text(change.new_text)
        att.rec.diff = run.ws.diff()
        (att.dir / "diff.patch").write_text(att.rec.diff)
        changed = run.ws.changed_paths()
        write_atomic(run.incumbent, incumbent)
    if not changed:
        raise Discard(Reason.NO_CHANGE, "the edit leaves kernels.py unchanged")
    if changed != [run.ws.kernel_rel]:
        raise Discard(Reason.REJECTED_CHANGE, f"files other than {run.ws.kernel_rel} changed: {changed}")


def _trial_and_verdict(att: Attempt, history: RunHistory) -> trial.TrialOutcome:
    """The paired trial against the incumbent and the gate's verdict on it; measured again on a
    quiet machine when other work took the worker core and the verdict was not a keep."""
    run, rec, c = att.run, att.rec, att.run.config
    with att.phases("workspace"):
        guard = workspace.snapshot(workspace.guarded_files(run.ws.repo, run.ws))
    best = gate.stored_best_timing(history) if c.gate.rule == "unpaired" else None
    for measurement in range(c.contention_retries + 1):
        with att.phases("trial"):
            outcome = run_trial(run, _request(run, run.incumbent),
                                att.dir / ("trial" if measurement == 0 else f"trial-{measurement + 1}"))
        result = outcome.result
        rec.trial_exit_code, rec.trial = outcome.exit_code, asdict(result) if result else None
        _copy_metrics(rec, result)
        # Part of judging the trial, so watchers see "trial → gate", not a return to editing.
        with att.phases("gate"):
            integrity = gate.Integrity(guard.restore_changed(), _sha256(run.ws.kernel_path))
            verdict = gate.judge(result, c.gate, c.trial_budget_seconds, outcome.error or "", outcome.exit_code,
                                 best, integrity)
            rec.reasons = verdict.reasons
        busy = disturbed(verdict, result, c, measurement)
        if busy is None:
            break
        # Not kept, but measured while other work took the worker core: a real win may have
        # drowned in that noise. Wait for a quiet machine and measure again.
        with att.phases("waiting for a quiet machine"):
            share, waited = contention.wait_for_quiet(int(result.threads["worker_cpu"]),  # type: ignore[union-attr]
                                                      c.contention_threshold, c.quiet_wait_seconds)
        rec.remeasured.append({"foreign_cpu_share": busy, "reasons": verdict.reasons,
                               "waited_seconds": round(waited, 1), "share_before_retry": share})
        run.log(f"attempt {rec.attempt}: other work took {busy:.0%} of the worker core during the trial; measured "
                f"again after {waited:.0f} s" + ("" if share is None or share < c.contention_threshold
                                                 else f" (still {share:.0%} busy)"))
    if not verdict.keep:
        evidence = outcome.result.failure if outcome.result and outcome.result.failure else outcome.error
        raise Discard(verdict.primary, "; ".join(verdict.reasons), evidence)
    return outcome


def _keep(att: Attempt, change: edit.Edit, outcome: trial.TrialOutcome) -> AttemptRecord:
    """Commit the kept kernel, record the keep, then measure it against the run's baseline and
    against Lance (reported, not gated)."""
    run, rec, result = att.run, att.rec, outcome.result
    assert result is not None and result.worst_combo_speedup is not None and result.speedup_ci_90pct
    lo, hi = result.speedup_ci_90pct
    message = (f"{_one_line(change.hypothesis, 150)}; speedup {result.speedup_geomean:.2f}x [{lo:.2f}, {hi:.2f}] "
               f"(worst combo {result.worst_combo_speedup.value:.2f}x)")
    with att.phases("git"):
        rec.commit = run.ws.commit(message)
    att.staged = False
    # On record before anything slow: the branch and the ledger agree from here on.
    att.finish(ledger_mod.KEEP, Reason.KEEP, message)
    measured: dict[str, Any] = {}
    if run.config.cumulative:
        with att.phases("cumulative"):
            measured = _measure_cumulative(run, att.dir)
    if run.config.vs_lance and run.target.lance_runs:
        with att.phases("vs_lance"):
            measured.update(_measure_vs_lance(run, att.dir))
    if run.config.profile:
        with att.phases("profile"):
            measured["profile"] = measure_profile(run, run.ws.kernel_path, att.dir / "profile", f"attempt {rec.attempt}")
    run.ledger.annotate(rec.attempt, measured)
    for name, value in measured.items():
        setattr(rec, name, value)
    return rec


def _over_cost_budget(run: Run, history: RunHistory, usage: Usage, messages: list[Message]) -> str | None:
    """Why the next call may not be made under --max-cost-usd, judged by its worst case, or None."""
    limit = run.config.max_cost_usd
    if limit is None:
        return None
    worst = run.provider.worst_case_cost(messages)
    spent = history.totals.cost_usd + usage.cost_usd
    if worst is None:
        return f"cost budget: {run.provider.model} has no known price, so no call can be made under --max-cost-usd"
    if spent + worst > limit:
        return (f"cost budget: the next call could cost up to ${worst:.4f} and ${limit - spent:.4f} "
                f"of --max-cost-usd {limit:g} is left")
    return None


def _context(run: Run, n: int, incumbent: str, history: RunHistory) -> prompt_mod.Context:
    return prompt_mod.Context(target=run.target.name, run_id=run.run_id, attempt=n, kernel=incumbent,
                              history=history, history_rows=run.history_rows or run.config.history_rows,
                              machine=run.machine, limits=limits_text(run.config),
                              profile=_incumbent_profile(run, history))


def _incumbent_profile(run: Run, history: RunHistory) -> dict[str, Any] | None:
    """The current best kernel's stage split: measured after its keep, or at the run's start for
    the baseline."""
    best = history.best
    if best is not None:
        return best.profile or None
    return run.ledger.run_info().get("baseline_profile") or None


def _or_default(value: int | None) -> str:
    return "the target's default number of" if value is None else str(value)


def limits_text(c: RunConfig) -> str:
    """The numbers a proposal must live within, as the model reads them."""
    return (f"- Each trial has {c.trial_budget_seconds:g} s of wall time, numba compilation (in every fresh worker "
            f"process) included; over budget is a discard.\n"
            f"- A trial: {_or_default(c.trial_replicates)} fresh worker pairs x {_or_default(c.trial_sessions)} blocks x "
            f"{_or_default(c.trial_queries)} queries per combo and block, candidate and current best alternating on "
            f"one core.\n"
            f"- A reply that does not apply gets {c.repair_turns} repair turn(s), each a full call; then the attempt "
            f"is lost.\n"
            f"- kernels.py may be at most {edit.MAX_KERNEL_BYTES // 1024} KB.\n"
            f"- Keep rule: the speedup's 90% CI lower bound above {1 + c.gate.min_effect:g}x, every combo at least "
            f"{c.gate.worst_combo_min:g}x, summed gains at least {c.gate.tradeoff_ratio:g}x summed losses.")


def disturbed(verdict: gate.Verdict, result: TrialResult | None, c: RunConfig, remeasured: int) -> float | None:
    """The share of the worker core other work took during a trial that should be measured again
    on a quiet core (not kept, not tampering, busier than the threshold, retries left), else None:
    a real win may have drowned in that noise."""
    busy = _contention(result)
    if not verdict.remeasurable or busy is None or busy <= c.contention_threshold or remeasured >= c.contention_retries:
        return None
    return busy


def _contention(result: TrialResult | None) -> float | None:
    """The largest share of the worker core other work took during a trial's timing blocks."""
    if result is None or not result.ok or result.threads.get("worker_cpu") in (None, "None"):
        return None
    return result.contention.get("foreign_cpu_share")


def _copy_metrics(rec: AttemptRecord, result: TrialResult | None) -> None:
    if result is None or result.speedup_geomean is None:
        return
    rec.speedup, rec.speedup_ci = result.speedup_geomean, list(result.speedup_ci_90pct or [])
    if result.worst_combo_speedup:
        rec.worst_combo = asdict(result.worst_combo_speedup)


def run_trial(run: Run, request: trial.TrialRequest, out_dir: Path) -> trial.TrialOutcome:
    """Every trial of a run goes through here: on this machine, or with ``--ray`` on a
    measurement node of the cluster (the same trial; its logs come back into ``out_dir``)."""
    if run.slots is None:
        return trial.run(request, out_dir)
    from orchestrator import cluster

    return cluster.run_remote(run.slots, request, out_dir, run.run_id, trial_label(run, out_dir))


def trial_label(run: Run, out_dir: Path) -> str:
    """A trial as ``orchestrator status`` names it: its folder in the run, e.g. attempts/0005/trial."""
    return out_dir.relative_to(run.ledger.dir).as_posix() if out_dir.is_relative_to(run.ledger.dir) else str(out_dir)


def _request(run: Run, against: Path, kernel: Path | None = None) -> trial.TrialRequest:
    """The run's paired trial of ``kernel`` (default: the worktree's) against ``against``."""
    c = run.config
    return trial.TrialRequest(run.target, kernel or run.ws.kernel_path, against=against,
                              budget_seconds=c.trial_budget_seconds,
                              replicates=c.trial_replicates, sessions=c.trial_sessions, queries_per_combo=c.trial_queries,
                              unsafe_no_sandbox=c.unsafe_no_sandbox)


def _measure_cumulative(run: Run, adir: Path) -> dict[str, Any]:
    """After a keep: the new best against the run's original baseline (reported, not gated)."""
    outcome = run_trial(run, _request(run, run.baseline), adir / "cumulative")
    if outcome.result is None or not outcome.result.ok:
        return {"cumulative_error": outcome.error or (outcome.result.failure if outcome.result else "")}
    measured: dict[str, Any] = {"cumulative_speedup": outcome.result.speedup_geomean,
                                "cumulative_ci": list(outcome.result.speedup_ci_90pct or []),
                                "cumulative_per_combo": dict(outcome.result.per_combo_speedup)}
    if outcome.result.worst_combo_speedup:
        measured["cumulative_worst_combo"] = asdict(outcome.result.worst_combo_speedup)
    return measured


def _measure_vs_lance(run: Run, adir: Path) -> dict[str, Any]:
    """After a keep: the new best against Lance itself, on the same fresh queries, timed by Lance's
    own operator timer (reported, not gated). Upstream is the bar: > 1 means the keep beats Lance."""
    c = run.config
    request = trial.TrialRequest(run.target, run.ws.kernel_path, against_lance=True,
                                 budget_seconds=c.trial_budget_seconds, replicates=c.lance_replicates,
                                 sessions=c.trial_sessions, queries_per_combo=c.trial_queries,
                                 unsafe_no_sandbox=c.unsafe_no_sandbox)
    outcome = run_trial(run, request, adir / "vs_lance")
    result = outcome.result
    if result is None or not result.ok or result.speedup_geomean is None:
        return {"vs_lance_error": outcome.error or (result.failure if result else "") or "no measurement"}
    out: dict[str, Any] = {"vs_lance": result.speedup_geomean, "vs_lance_ci": list(result.speedup_ci_90pct or []),
                           "vs_lance_per_combo": dict(result.per_combo_speedup), "lance_anchor": result.anchor,
                           "lance_per_combo_ns": dict(result.incumbent_per_combo_geomean_ns)}
    if result.worst_combo_speedup:
        out["vs_lance_worst_combo"] = asdict(result.worst_combo_speedup)
    return out


def measure_profile(run: Run, kernel: Path, out_dir: Path, label: str) -> dict[str, Any]:
    """A kernel's op time split by stage (the runner's profile mode): shown to the model for the
    current best. A failed profile is recorded as such; it never changes a verdict."""
    c = run.config
    outcome = run_trial(run, trial.TrialRequest(run.target, kernel, mode="profile", budget_seconds=c.trial_budget_seconds,
                                           unsafe_no_sandbox=c.unsafe_no_sandbox), out_dir)
    result = outcome.result
    if result is None or not result.ok or not result.profile:
        return {"kernel": label, "error": _one_line(outcome.error or (result.failure if result else "") or "no profile")}
    return {"kernel": label, "shapes": {shape: asdict(p) for shape, p in result.profile.items()}}


def _baseline_profile(run: Run) -> None:
    """The baseline's stage split, once per run (a resumed run that lacks it measures it)."""
    if not run.config.profile or "baseline_profile" in run.ledger.run_info():
        return
    if run.status:
        run.status.phase("baseline profile")
    profile = measure_profile(run, run.baseline, run.ledger.dir / "baseline-profile", "the baseline")
    run.ledger.update_run_info(baseline_profile=profile)


def _append_lesson(run: Run, n: int, lesson: str, outcome: str) -> None:
    """lessons.md is append-only, per machine: each lesson with the verdict it came with."""
    line = (f"- {datetime.now().date()} run {run.run_id} attempt {n} ({outcome}): "
            f"{_one_line(lesson, 300)}\n")
    with open(run.files.lessons, "a") as fh:
        fh.write(line)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------- the loop

EXIT_PROVIDER_FAILING = 4       # the run stopped because the LLM API kept failing: a supervisor may retry later


@dataclass(frozen=True)
class Stop:
    """Why the loop stops before the next attempt, and the daemon's exit code for it."""

    reason: str
    code: int = 0


def budget_stop(run: Run, history: RunHistory) -> Stop | None:
    """Why the loop must stop before the next attempt, or None. Budgets count the whole run,
    across resumes."""
    c, t = run.config, history.totals
    if (run.ledger.dir / "STOP").exists():
        return Stop("STOP file found")
    if c.max_attempts is not None and t.done >= c.max_attempts:
        return Stop(f"reached --max-attempts {c.max_attempts}")
    if c.max_hours is not None and t.hours >= c.max_hours:
        return Stop(f"reached --max-hours {c.max_hours:g}")
    if c.max_cost_usd is not None and t.cost_usd >= c.max_cost_usd:
        return Stop(f"reached --max-cost-usd {c.max_cost_usd:g} (spent ${t.cost_usd:.4f})")
    if c.stop_after_rejects is not None and history.discard_streak >= c.stop_after_rejects:
        return Stop(f"{history.discard_streak} discards in a row (--stop-after-rejects {c.stop_after_rejects})")
    provider_errors = history.streak_of(Reason.PROVIDER_ERROR)
    if provider_errors >= c.stop_after_provider_errors:
        return Stop(f"{provider_errors} provider errors in a row; see the last attempts' evidence",
                    EXIT_PROVIDER_FAILING)
    if run.provider.exhausted:
        return Stop(f"{run.provider.name} replies exhausted")
    return None


def _raise_interrupted(signum: int, frame: Any) -> None:
    # Once: a second Ctrl-C while the attempt is being recorded must not cut the record short.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def run_loop(run: Run) -> int:
    """Attempts until a budget, the playbook, a STOP file or a signal ends the run. Returns the
    exit code: 0 for every orderly stop, signals included; 1 if the daemon had to stop; 4 if the
    LLM API kept failing (``EXIT_PROVIDER_FAILING``)."""
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        _baseline_profile(run)
        while True:
            state = run.ledger.read()
            history = state.history
            stop = budget_stop(run, history)
            if stop:
                run.stop_reason, code = stop.reason, stop.code
                break
            if run.status:
                run.status.begin_attempt(state.next_attempt, history, budget_left(run, history))
            finished = run_attempt(run, state.next_attempt, history)
            if run.status:
                run.status.end_attempt(RunHistory((*history.records, finished)))
    except Interrupted as exc:
        run.stop_reason = f"interrupted by {exc}"
    except RunEnded as exc:
        run.stop_reason = str(exc)
    except DaemonStop as exc:
        run.stop_reason = str(exc)
        code = 1
    finally:
        if not run.stop_reason.startswith("interrupted"):
            # After a signal they stay ignored: further Ctrl-Cs must not cut the wrap-up short.
            for s, handler in previous.items():
                signal.signal(s, handler)
        if run.status:
            run.status.close(run.stop_reason)
        run.ledger.release_lock()
    run.log(report.summary(run.ledger, run.ws, run.stop_reason))
    return code


def budget_left(run: Run, history: RunHistory) -> str:
    """The budgets that are set, as what is left of each (for the live status)."""
    c, t, parts = run.config, history.totals, []
    if c.max_attempts is not None:
        parts.append(f"{max(0, c.max_attempts - t.done)} attempts")
    if c.max_hours is not None:
        parts.append(f"{max(0.0, c.max_hours - t.hours):.2f} h")
    if c.max_cost_usd is not None:
        parts.append(f"${max(0.0, c.max_cost_usd - t.cost_usd):.4f}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------- start / resume

def machine_info() -> dict[str, Any]:
    import importlib.metadata as md
    import os

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), **{d: version(d) for d in ("numpy", "numba", "anthropic", "openai")}}


def new_run_id(runs_dir: Path) -> str:
    base = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id, i = base, 1
    while (runs_dir / run_id).exists():
        i += 1
        run_id = f"{base}-{i}"
    return run_id


def start(config: RunConfig, target: TargetInfo, provider: Provider, log: Callable[[str], None] = print) -> Run:
    repo = workspace.find_repo(project.ROOT)
    runs_dir = project.runs_dir(target.name)
    run_id = new_run_id(runs_dir)
    branch = f"autoresearch/{target.name}/{run_id}"
    ledger = Ledger(runs_dir / run_id)
    dirty = repo.is_dirty(untracked_files=False)
    ledger.dir.mkdir(parents=True)
    warning = ledger.acquire_lock()
    # Branch, worktree and baseline first, the ledger last: once run.json exists the run is whole.
    ws = workspace.create(repo, ledger.dir / "worktree", branch, workspace.relative_kernel(repo, target.kernel_path))
    write_atomic(ledger.dir / "baseline.py", ws.committed_kernel())
    ledger.create({"run_id": run_id, "target": target.name, "config": to_dict(config), "branch": branch,
                   "base_commit": ws.head(), "worktree": str(ledger.dir / "worktree"),
                   "provider": provider.name, "model": provider.model, "started_at": ledger_mod.now(),
                   "user_checkout_dirty": dirty, "machine": machine_info()})
    run = Run(config, target, *kernel_contract(target), provider, ledger, ws, prompt_files(target), run_id, log)
    if dirty:
        run.warnings.append(f"your checkout has uncommitted changes; the run starts from HEAD "
                            f"{repo.head.commit.hexsha[:10]} and never touches them")
    if warning:
        run.warnings.append(warning)
    return run


def resume(run_dir: Path, config: RunConfig, target: TargetInfo, provider: Provider,
           log: Callable[[str], None] = print) -> Run:
    """Continue a run: same branch and worktree (checked against the ledger), attempts numbered
    on from the ledger, an in-flight attempt recorded as interrupted, budgets kept. A run that
    cannot be resumed as it is raises LedgerError or WorkspaceError, with the lock released."""
    ledger = Ledger(run_dir)
    info = ledger.run_info()
    warning = ledger.acquire_lock()
    try:
        state = ledger.read()
        repo = workspace.find_repo(project.ROOT)
        keeps = [r.commit for r in state.history.keeps if r.commit]
        candidates = [ledger.attempt_dir(n) / "candidate.py" for n in sorted(state.in_flight)]
        own = candidates[-1].read_text() if candidates and candidates[-1].is_file() else None
        ws, warnings = workspace.attach(repo, Path(info["worktree"]), info["branch"],
                                        workspace.relative_kernel(repo, target.kernel_path),
                                        keeps[-1] if keeps else info["base_commit"], own)
    except BaseException:
        ledger.release_lock()
        raise
    run = Run(config, target, *kernel_contract(target), provider, ledger, ws, prompt_files(target), info["run_id"],
              log, warnings=warnings)
    for n, started in state.in_flight.items():
        ledger.finish(AttemptRecord(n, started_at=started.get("started_at"), provider=started.get("provider"),
                                    model=started.get("model"), verdict=ledger_mod.INTERRUPTED,
                                    reason=Reason.INTERRUPTED, finished_at=ledger_mod.now(),
                                    reason_detail="the daemon stopped mid-attempt; recorded on resume"))
        run.warnings.append(f"attempt {n} was in flight when the daemon stopped; recorded as interrupted")
    (run_dir / "STOP").unlink(missing_ok=True)
    # A replay goes on after the replies that completed attempts consumed; an interrupted
    # attempt's reply is replayed.
    provider.resume_after(ledger.read().history.replies_consumed)
    if warning:
        run.warnings.append(warning)
    ledger.update_run_info(resumed_at=ledger_mod.now())
    return run


def check_prompt(target: TargetInfo) -> None:
    """Build a first attempt's prompt from the files as they are now: a template naming an unknown
    field or a missing file raises here (PromptError, OSError), before any run exists."""
    prompt_mod.build(prompt_files(target), prompt_mod.Context(target.name, "", 1, target.kernel_path.read_text(),
                                                              RunHistory(), 1, "", ""))


def kernel_contract(target: TargetInfo) -> tuple[dict[str, dict[str, list[str]]], tuple[str, ...]]:
    """The target's declared API and import allowlist (from its immutable target.py)."""
    import importlib

    module = importlib.import_module(f"{target.module}.target")
    return module.KERNEL_API, tuple(module.ALLOWED_IMPORTS)


def prompt_files(target: TargetInfo) -> prompt_mod.PromptFiles:
    """Read from the user's checkout, not the worktree: edits between attempts take effect."""
    return prompt_mod.PromptFiles(harness=project.HARNESS, program=target.folder / "program.md",
                                  lessons=target.folder / "lessons.md", prompts_dir=project.PROMPTS)
