"""Summaries of a run for people: printed when the daemon stops (reports and plots later)."""

from __future__ import annotations

from collections import Counter

from orchestrator.ledger import Ledger
from orchestrator.workspace import Workspace


def summary(ledger: Ledger, ws: Workspace, stop_reason: str) -> str:
    records = ledger.read().records
    keeps = [r for r in records if r.get("verdict") == "keep"]
    reasons = Counter(r.get("reason", "?") for r in records if r.get("verdict") != "keep")
    best = keeps[-1] if keeps else None
    lines = [f"run stopped: {stop_reason}",
             f"  run:      {ledger.dir}",
             f"  branch:   {ws.branch} (worktree {ws.worktree})",
             f"  attempts: {len(records)} ({len(keeps)} kept"
             + (f"; not kept: {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}" if reasons else "") + ")"]
    cost = sum(r.get("cost_usd", 0.0) for r in records)
    if best is None:
        lines.append("  best:     the baseline (no kernel kept)")
    else:
        cum, ci = best.get("cumulative_speedup"), best.get("cumulative_ci") or []
        vs = (f"{cum:.2f}x vs the baseline [{ci[0]:.2f}, {ci[1]:.2f}]" if cum and len(ci) == 2
              else "cumulative speedup not measured")
        lines.append(f"  best:     attempt {best['attempt']}, {vs}; commit {str(best.get('commit'))[:10]}")
    lines.append(f"  cost:     ${cost:.4f}")
    return "\n".join(lines)
