"""The daemon: one attempt after another, as a state machine written in code.

prompt -> propose (provider) -> edit (+ repair turns) -> workspace -> trial -> gate ->
keep (commit, cumulative trial) or discard (reset) -> ledger. The LLM only proposes: git, the
trial, the verdict and the log are this module's. Every attempt is written ahead ("started")
and finished exactly once, whatever happens in between.
"""

from __future__ import annotations

import hashlib
import json
import platform
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import edit, gate, ledger as ledger_mod, policy, prompt as prompt_mod, report, trial, workspace
from orchestrator.config import RunConfig, to_dict
from orchestrator.ledger import Ledger
from orchestrator.progress import LiveStatus
from orchestrator.provider import OfflineProvider, Provider, ProviderError, Usage
from targets import PROJECT_ROOT, TargetInfo
from targets.harness import contention
from targets.harness.files import write_atomic
from targets.harness.result import ResultParseError, TrialResult, parse_json

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
    history_rows: int = 0                 # shrinks when a prompt was too long for the model
    stop_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    status: LiveStatus | None = None      # live progress and status.json, when the CLI runs the loop

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


def _last_failure(records: list[dict[str, Any]]) -> str | None:
    if not records or records[-1].get("verdict") == "keep":
        return None
    r = records[-1]
    return f"attempt {r['attempt']} ({r.get('reason')}): {r.get('evidence') or r.get('reason_detail', '')}"


# ---------------------------------------------------------------------------------- one attempt

def run_attempt(run: Run, n: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Run attempt ``n`` to its end and return its finished record (already in the ledger)."""
    phases, usage = Phases(run.status.phase if run.status else None), Usage()
    started = ledger_mod.now()
    spec = getattr(run.provider, "spec", None)
    rec: dict[str, Any] = {"started_at": started, "provider": run.provider.name, "model": run.provider.model,
                           "price": asdict(spec.price) if spec is not None and spec.price else None,
                           "hypothesis": None, "lesson": None, "edit_format": None, "repair_turns": 0,
                           "diff": "", "trial_exit_code": None, "trial": None, "commit": None,
                           "cumulative_speedup": None, "cumulative_ci": None, "sources": []}
    run.ledger.start(n, {"started_at": started, "provider": run.provider.name, "model": run.provider.model})
    adir = run.ledger.attempt_dir(n)
    t0 = time.monotonic()

    def finish(verdict: str, reason: str, detail: str = "", evidence: str | None = None) -> dict[str, Any]:
        rec.update(verdict=verdict, reason=reason, reason_detail=_one_line(detail, 500),
                   evidence=(evidence or detail)[-EVIDENCE_CHARS:], finished_at=ledger_mod.now(),
                   duration_seconds=round(time.monotonic() - t0, 3), phase_seconds=phases.seconds,
                   tokens={k: v for k, v in asdict(usage).items() if k != "cost_usd"}, cost_usd=usage.cost_usd)
        with phases("ledger"):
            run.ledger.finish(n, rec)
            if rec.get("lesson") and verdict != "interrupted":
                _append_lesson(run, n, rec["lesson"], verdict if verdict == "keep" else f"{verdict}: {reason}")
        tag = f"[{run.provider.name}]" if run.provider.name == "offline" else f"[{run.provider.model}]"
        speed = f" speedup {rec['speedup']:.3f}x" if rec.get("speedup") else ""
        run.log(f"{tag} attempt {n}: {verdict} ({reason}){speed} — {_one_line(rec['hypothesis'] or detail, 100)}")
        return rec

    try:
        incumbent = run.ws.committed_kernel()
        with phases("prompt"):
            prompt = prompt_mod.build(run.files, run.target.name, n, incumbent, records, _last_failure(records),
                                      run.history_rows or run.config.history_rows)
            rec["prompt_hashes"] = prompt.file_hashes
            (adir / "prompt.md").write_text(prompt.render())
        change = None
        for turn in range(run.config.repair_turns + 1):
            purpose = "propose" if turn == 0 else "repair"
            refusal = _over_cost_budget(run, records, usage, prompt.messages)
            if refusal:
                finish("not_run", "cost_budget", refusal)
                raise RunEnded(refusal)
            try:
                with phases("propose"):
                    reply = run.provider.complete(prompt.messages, purpose)
            except ProviderError as exc:
                usage = _add(usage, exc.usage)
                rec.setdefault("retries", []).extend(exc.retries)
                if exc.kind == "auth":
                    finish("discard", "provider_error", str(exc))
                    raise DaemonStop(f"the provider refused the request: {exc}") from exc
                if exc.kind == "exhausted":
                    finish("discard", "provider_error", str(exc))
                    raise RunEnded(str(exc)) from exc
                if exc.kind == "context":
                    run.history_rows = max(1, (run.history_rows or run.config.history_rows) // 2)
                    run.log(f"the prompt was too long for the model; next attempts show {run.history_rows} "
                            "earlier attempts")
                reason = {"truncated": "truncated", "empty": "empty_reply", "refusal": "refusal",
                          "no_repair": "edit_failed", "oversized": "oversized_reply"}.get(exc.kind, "provider_error")
                return finish("discard", reason, f"{exc.kind}: {exc}", rec.get("edit_error"))
            usage = _add(usage, reply.usage)
            rec.setdefault("retries", []).extend(reply.retries)
            rec["sources"].append(reply.source or reply.model)
            (adir / f"reply-{turn}.md").write_text(reply.text)
            with phases("edit"):
                try:
                    change = edit.parse_and_apply(reply.text, incumbent)
                    edit.validate(change.new_text, run.api)
                    policy.check(change.new_text, run.allowed_imports)
                    break
                except edit.EditError as exc:
                    rec["edit_error"] = str(exc)
                    if rec["hypothesis"] is None:
                        rec["hypothesis"] = _hypothesis_of(reply.text)
                    if turn == run.config.repair_turns:
                        return finish("discard", "policy" if isinstance(exc, policy.PolicyError) else "edit_failed",
                                      str(exc))
                    rec["repair_turns"] = turn + 1
                    prompt = prompt_mod.repair(prompt, run.files, reply.text, str(exc))
        assert change is not None
        rec.update(hypothesis=_one_line(change.hypothesis, 300), lesson=change.lesson, edit_format=change.format)
        with phases("workspace"):
            run.ws.write_candidate(change.new_text)
            (adir / "candidate.py").write_text(change.new_text)
            rec["diff"] = run.ws.diff()
            (adir / "diff.patch").write_text(rec["diff"])
            changed = run.ws.changed_paths()
            write_atomic(run.incumbent, incumbent)
        if not changed:
            run.ws.reset()
            return finish("discard", "no_change", "the edit leaves kernels.py unchanged")
        if changed != [run.ws.kernel_rel]:
            run.ws.reset()
            return finish("discard", "rejected_change", f"files other than {run.ws.kernel_rel} changed: {changed}")
        with phases("workspace"):
            guard = workspace.snapshot(workspace.guarded_files(run.ws.repo, run.ws))
        for measurement in range(run.config.contention_retries + 1):
            with phases("trial"):
                outcome = trial.run(_request(run, run.incumbent), adir / ("trial" if measurement == 0 else
                                                                         f"trial-{measurement + 1}"))
            rec["trial_exit_code"] = outcome.exit_code
            rec["trial"] = asdict(outcome.result) if outcome.result else None
            _copy_metrics(rec, outcome.result)
            # Part of judging the trial, so watchers see "trial → gate", not a return to editing.
            with phases("gate"):
                tampered = guard.restore_changed()
            if tampered:
                run.ws.reset()
                return finish("discard", "tampered", f"files changed during the trial (restored): {tampered[:10]}")
            with phases("gate"):
                verdict = gate.judge(outcome.result, run.config.gate, run.config.trial_budget_seconds,
                                     outcome.error or "", outcome.exit_code,
                                     _stored_best_timing(records) if run.config.gate.rule == "unpaired" else None)
                rec["reasons"] = verdict.reasons
            busy = _contention(outcome.result)
            if verdict.keep or busy is None or busy <= run.config.contention_threshold \
                    or measurement == run.config.contention_retries:
                break
            # Not kept, but measured while other work took the worker core: a real win may have
            # drowned in that noise. Wait for a quiet machine and measure again.
            with phases("waiting for a quiet machine"):
                share, waited = contention.wait_for_quiet(int(outcome.result.threads["worker_cpu"]),
                                                          run.config.contention_threshold, run.config.quiet_wait_seconds)
            rec.setdefault("remeasured", []).append({"foreign_cpu_share": busy, "reasons": verdict.reasons,
                                                     "waited_seconds": round(waited, 1), "share_before_retry": share})
            run.log(f"attempt {n}: other work took {busy:.0%} of the worker core during the trial; measured again "
                    f"after {waited:.0f} s" + ("" if share is None or share < run.config.contention_threshold
                                               else f" (still {share:.0%} busy)"))
        if verdict.keep and _sha256(run.ws.kernel_path) != (outcome.result.kernel_sha256 if outcome.result else ""):
            verdict = gate.Verdict(False, ["tampered: kernels.py changed between the trial and the commit"])
            rec["reasons"] = verdict.reasons
        if not verdict.keep:
            run.ws.reset()
            evidence = (outcome.result.failure if outcome.result and outcome.result.failure else outcome.error)
            return finish("discard", verdict.primary, verdict.reasons[0], evidence)
        result = outcome.result
        assert result is not None and result.worst_combo_speedup is not None and result.speedup_ci_90pct
        lo, hi = result.speedup_ci_90pct
        message = (f"{_one_line(change.hypothesis, 150)}; speedup {result.speedup_geomean:.2f}x [{lo:.2f}, {hi:.2f}] "
                   f"(worst combo {result.worst_combo_speedup.value:.2f}x)")
        with phases("git"):
            rec["commit"] = run.ws.commit(message)
        # On record before anything slow: the branch and the ledger agree from here on.
        finish("keep", "keep", message)
        with phases("cumulative"):
            measured = _measure_cumulative(run, adir)
        if run.config.vs_lance and run.target.lance_runs:
            with phases("vs_lance"):
                measured.update(_measure_vs_lance(run, adir))
        run.ledger.annotate(n, measured)
        rec.update(measured)
        return rec
    except Interrupted:
        if "verdict" not in rec:              # a keep interrupted while measured stays a keep
            run.ws.reset()
            finish("interrupted", "interrupted", "stopped by a signal")
        raise
    except (DaemonStop, RunEnded):
        raise
    except Exception as exc:  # noqa: BLE001 - a daemon bug still leaves a complete record
        if "verdict" not in rec:
            run.ws.reset()
            finish("discard", "daemon_error", f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
        raise DaemonStop(f"internal error in attempt {n}: {exc} (recorded in the ledger)") from exc


def _over_cost_budget(run: Run, records: list[dict[str, Any]], usage: Usage, messages: list) -> str | None:
    """Why the next call may not be made under --max-cost-usd, judged by its worst case, or None."""
    limit = run.config.max_cost_usd
    if limit is None:
        return None
    worst = getattr(run.provider, "worst_case_cost", lambda _: 0.0)(messages)
    spent = ledger_mod.tally(records).cost_usd + usage.cost_usd
    if worst is None:
        return f"cost budget: {run.provider.model} has no known price, so no call can be made under --max-cost-usd"
    if spent + worst > limit:
        return (f"cost budget: the next call could cost up to ${worst:.4f} and ${limit - spent:.4f} "
                f"of --max-cost-usd {limit:g} is left")
    return None


def _hypothesis_of(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("HYPOTHESIS:"):
            return _one_line(line.split(":", 1)[1], 300) or None
    return None


def _stored_best_timing(records: list[dict[str, Any]]) -> gate.Timing | None:
    """For the unpaired rule: the best kernel's absolute timing as measured when it became the
    best (the last keep's candidate arm), else the baseline's from the run's first full trial.
    None before any trial (or for records an older version wrote): the gate then uses the current
    trial's incumbent arm."""
    try:
        for rec in reversed(records):
            if rec.get("verdict") == "keep" and rec.get("trial"):
                return gate.candidate_timing(parse_json(json.dumps(rec["trial"])))
        for rec in records:
            trial_rec = rec.get("trial")
            if trial_rec and trial_rec.get("exit_code") == 0 and trial_rec.get("mode") == "paired":
                return gate.incumbent_timing(parse_json(json.dumps(trial_rec)))
    except ResultParseError:
        return None
    return None


def _contention(result: TrialResult | None) -> float | None:
    """The largest share of the worker core other work took during a trial's timing blocks."""
    if result is None or not result.ok or result.threads.get("worker_cpu") in (None, "None"):
        return None
    return result.contention.get("foreign_cpu_share")


def _copy_metrics(rec: dict[str, Any], result: TrialResult | None) -> None:
    if result is None or result.speedup_geomean is None:
        return
    rec["speedup"] = result.speedup_geomean
    rec["speedup_ci"] = list(result.speedup_ci_90pct or [])
    if result.worst_combo_speedup:
        rec["worst_combo"] = asdict(result.worst_combo_speedup)


def _request(run: Run, against: Path) -> trial.TrialRequest:
    c = run.config
    return trial.TrialRequest(run.target, run.ws.kernel_path, against=against, budget_seconds=c.trial_budget_seconds,
                              replicates=c.trial_replicates, sessions=c.trial_sessions, queries_per_combo=c.trial_queries,
                              unsafe_no_sandbox=c.unsafe_no_sandbox)


def _measure_cumulative(run: Run, adir: Path) -> dict[str, Any]:
    """After a keep: the new best against the run's original baseline (reported, not gated)."""
    outcome = trial.run(_request(run, run.baseline), adir / "cumulative")
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
    outcome = trial.run(request, adir / "vs_lance")
    result = outcome.result
    if result is None or not result.ok or result.speedup_geomean is None:
        return {"vs_lance_error": outcome.error or (result.failure if result else "") or "no measurement"}
    out: dict[str, Any] = {"vs_lance": result.speedup_geomean, "vs_lance_ci": list(result.speedup_ci_90pct or []),
                           "vs_lance_per_combo": dict(result.per_combo_speedup), "lance_anchor": result.anchor,
                           "lance_per_combo_ns": dict(result.incumbent_per_combo_geomean_ns)}
    if result.worst_combo_speedup:
        out["vs_lance_worst_combo"] = asdict(result.worst_combo_speedup)
    return out


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


def budget_stop(run: Run, records: list[dict[str, Any]]) -> Stop | None:
    """Why the loop must stop before the next attempt, or None. Budgets count the whole run,
    across resumes."""
    c, t = run.config, ledger_mod.tally(records)
    done = [r for r in records if r.get("verdict") in ("keep", "discard")]
    if (run.ledger.dir / "STOP").exists():
        return Stop("STOP file found")
    if c.max_attempts is not None and t.done >= c.max_attempts:
        return Stop(f"reached --max-attempts {c.max_attempts}")
    if c.max_hours is not None and t.hours >= c.max_hours:
        return Stop(f"reached --max-hours {c.max_hours:g}")
    if c.max_cost_usd is not None and t.cost_usd >= c.max_cost_usd:
        return Stop(f"reached --max-cost-usd {c.max_cost_usd:g} (spent ${t.cost_usd:.4f})")
    if c.stop_after_rejects is not None:
        streak = 0
        for r in reversed(done):
            if r["verdict"] == "keep":
                break
            streak += 1
        if streak >= c.stop_after_rejects:
            return Stop(f"{streak} discards in a row (--stop-after-rejects {c.stop_after_rejects})")
    provider_errors = 0
    for r in reversed(done):
        if r.get("reason") != "provider_error":
            break
        provider_errors += 1
    if provider_errors >= c.stop_after_provider_errors:
        return Stop(f"{provider_errors} provider errors in a row; see the last attempts' evidence",
                    EXIT_PROVIDER_FAILING)
    if getattr(run.provider, "exhausted", False):
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
        while True:
            state = run.ledger.read()
            stop = budget_stop(run, state.records)
            if stop:
                run.stop_reason, code = stop.reason, stop.code
                break
            if run.status:
                run.status.begin_attempt(state.next_attempt, state.records, budget_left(run, state.records))
            finished = run_attempt(run, state.next_attempt, state.records)
            if run.status:
                run.status.end_attempt([*state.records, finished])
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


def budget_left(run: Run, records: list[dict[str, Any]]) -> str:
    """The budgets that are set, as what is left of each (for the live status)."""
    c, t, parts = run.config, ledger_mod.tally(records), []
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
    repo = workspace.find_repo(PROJECT_ROOT)
    runs_dir = PROJECT_ROOT / "runs" / target.name
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
        repo = workspace.find_repo(PROJECT_ROOT)
        keeps = [r["commit"] for r in state.records if r.get("verdict") == "keep" and r.get("commit")]
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
        ledger.finish(n, {"started_at": started.get("started_at"), "finished_at": ledger_mod.now(),
                          "verdict": "interrupted", "reason": "interrupted",
                          "reason_detail": "the daemon stopped mid-attempt; recorded on resume",
                          "provider": started.get("provider"), "model": started.get("model"),
                          "duration_seconds": 0.0, "cost_usd": 0.0, "hypothesis": None, "sources": []})
        run.warnings.append(f"attempt {n} was in flight when the daemon stopped; recorded as interrupted")
    (run_dir / "STOP").unlink(missing_ok=True)
    if isinstance(provider, OfflineProvider):
        # The playbook goes on after the entries that completed attempts consumed; an
        # interrupted attempt's entry is replayed.
        provider.position = sum(1 for r in ledger.read().records if r.get("verdict") in ("keep", "discard")
                                for src in r.get("sources", []) if not src.endswith(".repair.md"))
    if warning:
        run.warnings.append(warning)
    ledger.update_run_info(resumed_at=ledger_mod.now())
    return run


def kernel_contract(target: TargetInfo) -> tuple[dict[str, dict[str, list[str]]], tuple[str, ...]]:
    """The target's declared API and import allowlist (from its immutable target.py)."""
    import importlib

    module = importlib.import_module(f"{target.module}.target")
    return module.KERNEL_API, tuple(module.ALLOWED_IMPORTS)


def prompt_files(target: TargetInfo) -> prompt_mod.PromptFiles:
    """Read from the user's checkout, not the worktree: edits between attempts take effect."""
    return prompt_mod.PromptFiles(harness=PROJECT_ROOT / "HARNESS.md", program=target.folder / "program.md",
                                  lessons=target.folder / "lessons.md", prompts_dir=PROJECT_ROOT / "prompts")
