"""Reading runs back for people: the stop summary, `status`, `candidates` and the HTML report.

Everything here reads the ledger and never writes to it, so it works on a run that is still
going, one that crashed (a stale lock, an attempt in flight) and one with no attempts yet.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.ledger import INTERRUPTED, AttemptRecord, Ledger, LedgerError, RunHistory, Totals
from orchestrator import project
from orchestrator.progress import Status, read_status
from orchestrator.workspace import Workspace

# Verdict reasons grouped the way the plot marks them.
FAILURE_KINDS = {"incorrect": "incorrect", "crash": "crash", "timeout": "timeout", "policy": "policy",
                 "tampered": "policy", "rejected_change": "policy", "edit_failed": "bad edit",
                 "parse_error": "crash", "over_budget": "timeout"}


class ReportError(Exception):
    """A run that cannot be read (named, with what to do), shown without a traceback."""


@dataclass
class RunView:
    """One run as its files say: config and machine, finished records, attempts in flight."""

    dir: Path
    info: dict[str, Any]
    history: RunHistory
    in_flight: list[int] = field(default_factory=list)
    status: Status | None = None
    lock_pid: int | None = None
    lock_file: bool = False

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id", self.dir.name))

    @property
    def target(self) -> str:
        return str(self.info.get("target", self.dir.parent.name))

    @property
    def state(self) -> str:
        if self.lock_pid is not None:
            return "running"
        return "crashed (stale lock)" if self.lock_file else "stopped"

    @property
    def records(self) -> tuple[AttemptRecord, ...]:
        return self.history.records

    @property
    def keeps(self) -> list[AttemptRecord]:
        return self.history.keeps

    @property
    def best(self) -> AttemptRecord | None:
        return self.history.best


def tokens_text(t: Totals) -> str:
    """in/out/cache read, e.g. ``12,000/800/40,000`` (input excludes cache reads and writes)."""
    return f"{t.input_tokens:,}/{t.output_tokens:,}/{t.cache_read_tokens:,}"


def hit_text(t: Totals) -> str:
    share = t.cache_hit_share
    return "-" if share is None else f"{share:.0%}"


def load_run(run_dir: Path) -> RunView:
    ledger = Ledger(run_dir)
    try:
        info = ledger.run_info()
        state = ledger.read()
    except LedgerError as exc:
        raise ReportError(f"cannot read run {run_dir}: {exc}") from None
    return RunView(run_dir, info, state.history, sorted(state.in_flight), read_status(run_dir),
                   ledger.lock_holder(), (run_dir / "lock").exists())


def runs_root() -> Path:
    return project.RUNS


def all_runs(target: str | None = None) -> list[RunView]:
    """Every run under runs/ (of one target, if given), oldest first; unreadable ones skipped."""
    pattern = f"{target}/*/run.json" if target else "*/*/run.json"
    views = []
    for path in sorted(runs_root().glob(pattern), key=lambda p: p.parent.name):
        try:
            views.append(load_run(path.parent))
        except ReportError:
            continue
    return views


def find_run(run_id: str, target: str | None = None) -> Path:
    """A run directory by id (across targets unless ``target`` is given)."""
    pattern = f"{target}/{run_id}/run.json" if target else f"*/{run_id}/run.json"
    found = sorted(runs_root().glob(pattern))
    if not found:
        where = f" of {target}" if target else ""
        raise ReportError(f"no run {run_id!r}{where} under {runs_root()} (see `orchestrator status`)")
    if len(found) > 1:
        raise ReportError(f"run id {run_id!r} exists for several targets; add --target")
    return found[0].parent


def latest_run(target: str) -> Path:
    views = sorted(runs_root().glob(f"{target}/*/run.json"))
    if not views:
        raise ReportError(f"no runs of {target} under {runs_root()}; start one with `orchestrator loop --target {target}`")
    return views[-1].parent


# ---------------------------------------------------------------------------------- summary

def summary(ledger: Ledger, ws: Workspace, stop_reason: str) -> str:
    """Printed when the daemon stops."""
    history = ledger.read().history
    t, best = history.totals, history.best
    lines = [f"run stopped: {stop_reason}",
             f"  run:      {ledger.dir}",
             f"  branch:   {ws.branch} (worktree {ws.worktree})",
             f"  attempts: {t.attempts} ({t.keeps} kept"
             + (f"; not kept: {', '.join(f'{k} {v}' for k, v in sorted(t.not_kept.items()))}" if t.not_kept else "")
             + ")"]
    if best is None:
        lines.append("  best:     the baseline (no kernel kept)")
    else:
        lines.append(f"  best:     attempt {best.attempt}, {_cumulative(best)}; {vs_lance_text(best)}; "
                     f"commit {str(best.commit)[:10]}")
    lines.append(f"  cost:     ${t.cost_usd:.4f}")
    return "\n".join(lines)


def _cumulative(rec: AttemptRecord) -> str:
    cum, ci = rec.cumulative_speedup, rec.cumulative_ci
    return (f"{cum:.2f}x vs the baseline [{ci[0]:.2f}, {ci[1]:.2f}]" if cum and len(ci) == 2
            else "cumulative speedup not measured")


def vs_lance_text(rec: AttemptRecord) -> str:
    """A keep against Lance itself, in words: the number a person deciding on upstream needs."""
    vs, ci = rec.vs_lance, rec.vs_lance_ci
    if not vs or len(ci) != 2:
        return "not measured against Lance" + (f" ({rec.vs_lance_error[:120]})" if rec.vs_lance_error else "")
    verdict = "beats Lance" if ci[0] > 1.0 else "slower than Lance" if ci[1] < 1.0 else "level with Lance"
    return f"{vs:.2f}x vs Lance [{ci[0]:.2f}, {ci[1]:.2f}] ({verdict})"


def upstream_candidate(rec: AttemptRecord) -> bool:
    """A keep that beats Lance on the target's workloads: its vs_lance CI lies above 1."""
    return bool(rec.vs_lance) and len(rec.vs_lance_ci) == 2 and rec.vs_lance_ci[0] > 1.0


# ---------------------------------------------------------------------------------- status

def status_table(views: list[RunView]) -> str:
    """`orchestrator status`: one row per run."""
    if not views:
        return f"no runs under {runs_root()}; start one with `orchestrator loop --target <name> --model offline`"
    header = ("target", "run", "state", "attempt/phase", "attempts", "keeps", "best", "vs Lance",
              "tokens in/out/cache read", "cache hit", "cost", "last activity")
    rows = [header]
    for v in views:
        now_doing = "-"
        if v.state == "running" and v.status is not None:
            now_doing = f"{v.status.attempt or '-'} {v.status.phase}"
        elif v.state == "running" and v.in_flight:            # --ray: several attempts at once
            now_doing = f"{', '.join(map(str, v.in_flight))} in flight"
        elif v.in_flight:
            now_doing = f"{v.in_flight[-1]} (in flight when it stopped)"
        best = v.best
        rows.append((v.target, v.run_id, v.state, now_doing, str(len(v.records)), str(len(v.keeps)),
                     f"{best.cumulative_speedup:.2f}x" if best and best.cumulative_speedup else "-",
                     f"{best.vs_lance:.2f}x" if best and best.vs_lance else "-",
                     tokens_text(v.history.totals), hit_text(v.history.totals), f"${v.history.totals.cost_usd:.4f}", _last_activity(v)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    return "\n\n".join([table, *cluster_pictures(views)])


def cluster_pictures(views: list[RunView]) -> list[str]:
    """For running ``--ray`` runs and fleets: each daemon's nodes, what runs on each, what waits
    (``cluster.json``, written by the daemon whenever it changes). Several runs of one fleet share
    one picture."""
    seen: dict[int, str] = {}
    for v in views:
        if v.state != "running":
            continue
        try:
            picture = json.loads((v.dir / "cluster.json").read_text())
            pid = int(picture["daemon_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid != v.lock_pid or pid in seen:
            continue                                   # another daemon's leftover, or shown already
        seen[pid] = _picture_text(picture)
    return list(seen.values())


def _picture_text(picture: dict[str, Any]) -> str:
    def who(t: dict[str, str]) -> str:
        return f"{t.get('target')} {t.get('run')} {t.get('trial')}"
    nodes = picture.get("nodes", [])
    busy = sum(len(n.get("busy", [])) for n in nodes)
    age = time.time() - float(picture.get("updated_at", time.time()))
    lines = [f"cluster {picture.get('address')} (daemon pid {picture['daemon_pid']}, as of {age:.0f} s ago): "
             f"{len(nodes)} node(s), {busy} of {sum(int(n.get('slots', 0)) for n in nodes)} trial slot(s) busy, "
             f"{len(picture.get('waiting', []))} trial(s) waiting"]
    for n in nodes:
        lines.append(f"  {n.get('node')}: " + ("; ".join(map(who, n["busy"])) if n.get("busy") else "free"))
    lines += [f"  waiting: {who(t)}" for t in picture.get("waiting", [])]
    return "\n".join(lines)


def _last_activity(v: RunView) -> str:
    stamps = [v.status.updated_at] if v.status else []
    for name in ("attempts.jsonl", "run.json"):
        try:
            stamps.append((v.dir / name).stat().st_mtime)
        except OSError:
            pass
    return datetime.fromtimestamp(max(stamps)).strftime("%Y-%m-%d %H:%M:%S") if stamps else "-"


# ---------------------------------------------------------------------------------- candidates

@dataclass(frozen=True)
class Candidate:
    target: str
    run_id: str
    attempt: int
    speedup: float                       # vs the run's original baseline
    ci: tuple[float, float]
    worst_combo: str
    worst_speedup: float
    vs_lance: float | None               # vs Lance itself (> 1: faster than Lance)
    vs_lance_ci: tuple[float, float] | None
    hypothesis: str
    commit: str


def candidates(views: list[RunView], min_speedup: float | None = None) -> list[Candidate]:
    """Upstream candidates: kept kernels that beat Lance itself (vs_lance CI above 1) and whose
    worst combo vs the baseline is within the run's worst-combo guard. With ``min_speedup``:
    instead every keep that clears that speedup over its baseline, Lance or not."""
    found = []
    for v in views:
        guard = float(((v.info.get("config") or {}).get("gate") or {}).get("worst_combo_min", 0.95))
        for r in v.keeps:
            cum, ci, worst = r.cumulative_speedup, r.cumulative_ci, r.cumulative_worst_combo
            if not cum or len(ci) != 2 or not worst or worst["value"] < guard:
                continue
            if (cum < min_speedup) if min_speedup is not None else not upstream_candidate(r):
                continue
            lance_ci = r.vs_lance_ci
            found.append(Candidate(v.target, v.run_id, r.attempt, float(cum), (ci[0], ci[1]),
                                   worst["combo"], float(worst["value"]), r.vs_lance,
                                   (lance_ci[0], lance_ci[1]) if len(lance_ci) == 2 else None,
                                   r.hypothesis or "", str(r.commit or "")[:10]))
    return sorted(found, key=lambda c: (c.vs_lance or 0.0, c.speedup), reverse=True)


def candidates_table(found: list[Candidate], min_speedup: float | None = None) -> str:
    criterion = (f"keeps at {min_speedup:g}x or more over their baseline (Lance or not)" if min_speedup is not None
                 else "upstream candidates: keeps that beat Lance itself (vs-Lance 90% CI above 1), worst-combo "
                      "guard intact")
    if not found:
        hint = ("" if min_speedup is not None else
                "; `--min-speedup 1.1` lists keeps by their speedup over the baseline instead")
        return f"no {criterion}{hint} (see `orchestrator status` for what the runs have kept)"
    lines = [f"{criterion}:",
             f"{'vs Lance':>9}  {'90% CI':<15} {'vs baseline':>11}  {'worst combo':<28} {'target':<10} "
             "run:attempt          hypothesis"]
    for c in found:
        lance = f"{c.vs_lance:>8.3f}x" if c.vs_lance else f"{'-':>9}"
        lance_ci = f"[{c.vs_lance_ci[0]:.3f}, {c.vs_lance_ci[1]:.3f}]" if c.vs_lance_ci else "-"
        lines.append(f"{lance}  {lance_ci:<15} {c.speedup:>10.3f}x  {f'{c.worst_combo} {c.worst_speedup:.3f}x':<28} "
                     f"{c.target:<10} {c.run_id}:{c.attempt:<4} {c.hypothesis[:70]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- the progress plot's data

@dataclass(frozen=True)
class Point:
    attempt: int
    kind: str                 # keep | discard | a FAILURE_KINDS value | interrupted
    speedup: float | None     # vs the run's original baseline; None when nothing was measured
    best: float               # best speedup vs the baseline after this attempt
    label: str


def progress_points(history: RunHistory) -> list[Point]:
    """Each attempt on the baseline's scale: a keep at its measured speedup vs the baseline, a
    measured discard at its paired speedup times the best it was measured against."""
    best, points = 1.0, []
    for r in history.records:
        label = (r.hypothesis or r.reason_detail or "")[:60]
        if r.kept:
            best = float(r.cumulative_speedup or best * float(r.speedup or 1.0))
            points.append(Point(r.attempt, "keep", best, best, label))
        elif r.verdict == INTERRUPTED:
            points.append(Point(r.attempt, "interrupted", None, best, label))
        elif r.speedup and r.reason in ("not_faster", "worst_combo", "tradeoff", "over_budget"):
            points.append(Point(r.attempt, "discard", best * float(r.speedup), best, label))
        else:
            points.append(Point(r.attempt, FAILURE_KINDS.get(r.reason, "other"), None, best, label))
    return points


# ---------------------------------------------------------------------------------- HTML

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}
th{background:#f3f3f3;text-align:left}tr.keep td{background:#eefbea}tr.current td{background:#eef3fb}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}img{max-width:100%;border:1px solid #ddd}
.muted{color:#777}"""


def _e(value: Any) -> str:
    """Everything in the page is escaped: hypotheses and diffs are LLM-written text."""
    return html.escape("" if value is None else str(value))


def _speedup_cell(r: AttemptRecord) -> str:
    s, ci = r.speedup, r.speedup_ci
    if not s:
        return "-"
    return f"{s:.3f}x [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else f"{s:.3f}x"


def _vs_lance_cell(r: AttemptRecord) -> str:
    vs, ci = r.vs_lance, r.vs_lance_ci
    if not vs:
        return "-"
    return f"{vs:.3f}x [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else f"{vs:.3f}x"


def totals(v: RunView) -> dict[str, Any]:
    t = v.history.totals
    share = t.cache_hit_share
    return {"attempts": t.attempts, "keeps": t.keeps, "in_flight": len(v.in_flight), "repair_turns": t.repair_turns,
            "duplicates (not trialled)": t.duplicates,
            "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cache_read_tokens": t.cache_read_tokens,
            "cache_write_tokens": t.cache_write_tokens,
            "cache_hit_share": f"{share:.1%}" if share is not None else None, "cost_usd": round(t.cost_usd, 4),
            "attempt_seconds": round(t.hours * 3600.0, 1),
            "attempts_per_hour": round(t.attempts / t.hours, 1) if t.hours > 0 else None}


def html_report(v: RunView, png: bytes | None, comparison: str = "") -> str:
    """A self-contained page (the plot inlined): opens offline, mails as one file. ``comparison``
    is the section comparing the target's runs (``compare.comparison_html``), already escaped."""
    info, t = v.info, totals(v)
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(v.target)} run {_e(v.run_id)}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{_e(v.target)} · run {_e(v.run_id)}</h1>",
           f"<p>State: <b>{_e(v.state)}</b>; model {_e(info.get('model'))} ({_e(info.get('provider'))}); branch "
           f"<code>{_e(info.get('branch'))}</code> from <code>{_e(str(info.get('base_commit', ''))[:10])}</code>; "
           f"started {_e(info.get('started_at'))}.</p>"]
    if info.get("provider") == "offline":
        out.append("<p class='muted'>Offline provider: a curated playbook was replayed; no LLM was involved.</p>")
    best = v.best
    out.append("<h2>Result</h2>")
    out.append(f"<p>{'Best: attempt ' + _e(best.attempt) + ', ' + _e(_cumulative(best)) + '; ' + _e(vs_lance_text(best)) if best else 'No kernel kept: the baseline is still the best.'}</p>")
    if best and best.lance_anchor:
        out.append(f"<p class='muted'>Lance measured as: {_e(best.lance_anchor)}; the kernel's times exclude the "
                   "harness's call overhead, Lance's its per-query planning (its own operator timer).</p>")
    if png:
        out.append(f"<img alt='progress plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    out.append("<h2>Totals</h2><table>")
    for key, value in t.items():
        out.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td class='num'>{_e(value if value is not None else '-')}</td></tr>")
    out.append("</table>")
    if best and best.cumulative_per_combo:
        lance = best.vs_lance_per_combo
        out.append("<h2>Best kernel per combo</h2><table><tr><th>combo</th><th>speedup vs the baseline</th>"
                   "<th>speedup vs Lance</th></tr>")
        for combo, s in best.cumulative_per_combo.items():
            out.append(f"<tr><td>{_e(combo)}</td><td class='num'>{s:.3f}x</td><td class='num'>"
                       f"{f'{lance[combo]:.3f}x' if combo in lance else '-'}</td></tr>")
        out.append("</table>")
    out.append("<h2>Attempts</h2><table><tr><th>#</th><th>hypothesis</th><th>verdict</th><th>reason</th>"
               "<th>speedup vs incumbent [90% CI]</th><th>vs Lance</th><th>tokens in/out/cache read</th><th>cost</th>"
               "<th>duration</th></tr>")
    for r in v.records:
        out.append(f"<tr class='{'keep' if r.kept else ''}'><td class='num'>{_e(r.attempt)}</td>"
                   f"<td>{_e(r.hypothesis or '-')}</td><td>{_e(r.verdict)}</td>"
                   f"<td>{_e(r.reason)}: <span class='muted'>{_e(r.reason_detail[:300])}</span></td>"
                   f"<td class='num'>{_e(_speedup_cell(r))}</td>"
                   f"<td class='num'>{_e(_vs_lance_cell(r))}</td>"
                   f"<td class='num'>{_e(tokens_text(RunHistory((r,)).totals))}</td>"
                   f"<td class='num'>${r.cost_usd:.4f}</td>"
                   f"<td class='num'>{r.duration_seconds:.1f} s</td></tr>")
    for n in v.in_flight:
        out.append(f"<tr><td class='num'>{n}</td><td colspan='8' class='muted'>in flight (running now, or the daemon "
                   f"stopped during it)</td></tr>")
    out.append("</table>")
    if v.keeps:
        out.append("<h2>Diffs of the keeps</h2>")
        for r in v.keeps:
            out.append(f"<details><summary>attempt {_e(r.attempt)}: {_e(r.hypothesis)}</summary>"
                       f"<pre>{_e(r.diff)}</pre></details>")
    out.append(comparison)
    out.append("<h2>Machine and configuration</h2>")
    first_trial = v.history.first_trial()
    context = {**(info.get("machine") or {}), "cpu": first_trial.get("cpu", "-"), "sandbox": info.get("sandbox", "-"),
               "counters": first_trial.get("counters", "-")}
    out.append(f"<pre>{_e(json.dumps(context, indent=1))}</pre><pre>{_e(json.dumps(info.get('config'), indent=1))}</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)
