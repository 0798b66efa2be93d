"""`orchestrator export <run-id>[:<attempt>] --out DIR`: one kept kernel, packaged for the person
who ports it to Lance: the patch against the baseline, the kernel, the trial logs, the progress
plot, and an upstream checklist. The kernel is re-measured against the baseline first, and the
checklist says plainly if the speedup no longer reproduces.
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import targets
from orchestrator import plot, project, trial
from orchestrator.ledger import AttemptRecord
from orchestrator.report import (ReportError, RunView, find_run, load_run, progress_points, upstream_candidate,
                                 vs_lance_text)


@dataclass(frozen=True)
class Reverification:
    ran: bool
    reproduces: bool
    summary: str
    result: dict[str, Any] | None = None


def parse_ref(ref: str) -> tuple[str, int | None]:
    run_id, _, attempt = ref.partition(":")
    if not run_id:
        raise ReportError(f"{ref!r}: give a run id, optionally with :<attempt> (e.g. 20261122-010203:4)")
    if attempt and not attempt.isdigit():
        raise ReportError(f"{ref!r}: the attempt after ':' must be a number")
    return run_id, int(attempt) if attempt else None


def pick_attempt(view: RunView, attempt: int | None) -> AttemptRecord:
    """The attempt to export: the one asked for (it must be a keep), else the run's best."""
    if attempt is None:
        if view.best is None:
            raise ReportError(f"run {view.run_id} has kept no kernel yet; nothing to export")
        return view.best
    for r in view.records:
        if r.attempt == attempt:
            if not r.kept:
                raise ReportError(f"attempt {attempt} of run {view.run_id} was not kept ({r.reason}); "
                                  f"only kept kernels are exported")
            return r
    raise ReportError(f"run {view.run_id} has no finished attempt {attempt}")


def reverify(view: RunView, kernel: Path, baseline: Path, out_dir: Path, budget_seconds: float) -> Reverification:
    """A fresh paired trial of the kernel against the run's baseline, on this machine, now."""
    try:
        info = targets.get(view.target)
    except targets.UnknownTarget as exc:
        return Reverification(False, False, f"not re-verified: {exc}")
    outcome = trial.run(trial.TrialRequest(info, kernel, against=baseline, budget_seconds=budget_seconds),
                        out_dir)
    result = outcome.result
    if result is None or not result.ok or result.speedup_ci_90pct is None:
        why = outcome.error or (result.failure if result else "") or "no result"
        return Reverification(True, False, f"DOES NOT REPRODUCE: the fresh trial failed ({why[:500]})",
                              json.loads(result.to_json()) if result else None)
    lo, hi = result.speedup_ci_90pct
    ok = lo > 1.0
    verdict = "reproduces" if ok else "DOES NOT REPRODUCE (the CI includes no speedup)"
    return Reverification(True, ok, f"{verdict}: {result.speedup_geomean:.3f}x [{lo:.3f}, {hi:.3f}] vs the baseline",
                          json.loads(result.to_json()))


def export(ref: str, out: Path, verify: bool = True, budget_seconds: float = 120.0) -> tuple[Path, Reverification]:
    run_id, attempt = parse_ref(ref)
    view = load_run(find_run(run_id))
    rec = pick_attempt(view, attempt)
    n = rec.attempt
    adir = view.dir / "attempts" / f"{n:04d}"
    kernel, baseline = adir / "candidate.py", view.dir / "baseline.py"
    for path in (kernel, baseline):
        if not path.is_file():
            raise ReportError(f"{path} is missing; the run directory is incomplete")
    if out.exists() and any(out.iterdir()):
        raise ReportError(f"--out {out} exists and is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, out / "kernels.py")
    patch = "".join(difflib.unified_diff(baseline.read_text().splitlines(True), kernel.read_text().splitlines(True),
                                         "a/kernels.py", "b/kernels.py"))
    (out / "kernels.patch").write_text(patch)
    for sub in ("trial", "cumulative", "vs_lance"):
        if (adir / sub).is_dir():
            shutil.copytree(adir / sub, out / "logs" / sub)
    (out / "progress.png").write_bytes(plot.render(progress_points(view.history), f"{view.target} run {view.run_id}",
                                                   view.history.lance_level))
    check = (reverify(view, kernel, baseline, out / "logs" / "reverify", budget_seconds) if verify
             else Reverification(False, False, "not re-verified (--no-verify)"))
    (out / "UPSTREAM.md").write_text(checklist(view, rec, check))
    return out, check


def _capsule_call_site(target: str) -> str:
    capsule = project.CAPSULES / f"{target}.md"
    try:
        text = capsule.read_text()
    except OSError:
        return f"(no capsule at {capsule})"
    lines, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = "call site" in line.lower()
            continue
        if keep:
            lines.append(line)
    return "\n".join(lines).strip() or f"(the capsule {capsule.name} has no 'call site' section)"


def checklist(view: RunView, rec: AttemptRecord, check: Reverification) -> str:
    trial_data = rec.trial or {}
    machine = view.info.get("machine") or {}
    cum, ci = rec.cumulative_speedup, rec.cumulative_ci
    worst = rec.cumulative_worst_combo or {}
    per_combo, lance_combo, lance_ns = rec.cumulative_per_combo, rec.vs_lance_per_combo, rec.lance_per_combo_ns
    mark = "x" if check.reproduces else " "
    title = "Upstream candidate" if upstream_candidate(rec) else "Kept kernel (NOT an upstream candidate: it does not beat Lance)"
    lines = [
        f"# {title}: {view.target}, run {view.run_id} attempt {rec.attempt}", "",
        f"Hypothesis: {rec.hypothesis or '-'}", "",
        "## Against Lance itself", "",
        f"- {vs_lance_text(rec)}",
        f"- Measured as: {rec.lance_anchor or 'not measured'}",
        "- Same fresh queries, interleaved, one thread, pinned; Lance timed by its own operator timer "
        "(no per-query planning), the kernel by the harness less its measured call overhead", "",
        "## Checklist", "",
        f"- [{'x' if upstream_candidate(rec) else ' '}] Beats Lance on the target's workloads (vs-Lance 90% CI above 1)",
        f"- [{mark}] Re-verified on this machine just now: {check.summary}",
        f"- [{'x' if cum and len(ci) == 2 and ci[0] > 1.0 else ' '}] Recorded speedup vs the original baseline: "
        + (f"{cum:.3f}x, 90% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if cum and len(ci) == 2 else "not measured"),
        f"- [{'x' if worst else ' '}] Worst combo vs the baseline: "
        + (f"{worst['combo']} at {worst['value']:.3f}x" if worst else "unknown"),
        f"- [x] Correctness battery passed: {trial_data.get('correctness_cases', '?')} cases over shapes "
        f"{', '.join(trial_data.get('shapes_tested') or [])} and distributions "
        f"{', '.join(trial_data.get('distributions_tested') or [])}; {trial_data.get('verified_calls', '?')} timed "
        "calls re-checked against the oracle",
        "- [ ] Ported to Lance (Rust) at the call site below",
        "- [ ] Lance's own benchmark run before and after (a microbenchmark win is not a Lance win)", "",
        "## Per-combo speedup (vs the baseline; vs Lance, and Lance's own time per query)", ""]
    lines += [f"- {c}: {s:.3f}x vs the baseline"
              + (f"; {lance_combo[c]:.3f}x vs Lance ({lance_ns[c] / 1e3:.1f} us per query)" if c in lance_combo and c in lance_ns
                 else "") for c, s in per_combo.items()] or ["- not measured"]
    lines += ["", "## Machine", "",
              f"- CPU: {trial_data.get('cpu', '?')} ({machine.get('cpus', '?')} cpus), {machine.get('platform', '?')}",
              f"- Python {machine.get('python', '?')}, numpy {machine.get('numpy', '?')}, numba {machine.get('numba', '?')}",
              f"- Sandbox: {view.info.get('sandbox', '?')}; counters: {trial_data.get('counters', 'n/a')}", "",
              "## Reproduce on a fresh clone", "", "```",
              "pip install -e .",
              f"orchestrator trial --target {view.target} --kernel kernels.py "
              f"--against targets/{view.target.replace('-', '_')}/kernels.py", "```", "",
              "(from the root of a clone of this project at the run's base commit "
              f"{str(view.info.get('base_commit', ''))[:10]}, with this folder's kernels.py copied in)", "",
              "## Lance call site (from the target's capsule)", "", _capsule_call_site(view.target), "",
              "## Files", "",
              "- `kernels.patch`: the change against the baseline `kernels.py`",
              "- `kernels.py`: the kernel as kept",
              "- `logs/trial`, `logs/cumulative`, `logs/vs_lance`: the keeping trial, the measurement vs the "
              "baseline and the one vs Lance itself",
              "- `logs/reverify`: the fresh trial behind the first checklist line",
              "- `progress.png`: the run's progress plot", ""]
    return "\n".join(lines)
