"""Attempts per hour against measurement nodes: a simulation of ``--ray --parallel P`` from a real
run's timings.

Each attempt is a proposal (the model's latency) followed by its trial on a free node (one trial
per node); up to P attempts are in flight. Trial times are drawn from a finished run's ledger
(``--run runs/<target>/<id>``: every attempt that reached a trial, plus the re-measure each keep
costs), the model's latency from ``--llm-seconds`` (median; lognormal with ``--llm-spread``) since
no live model is reachable here. A keep also runs its cumulative trial on the node that kept it.
Printed: attempts per hour for 1, 2, 4 and 8 nodes, each with P = nodes and P = 2 x nodes.

Run:  python benchmarks/scaling_model.py --run runs/pq-l2/<id> [--llm-seconds 40] [--hours 24]
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

import numpy as np


def trial_seconds(run_dir: Path) -> tuple[list[float], float]:
    """Each finished attempt's trial time (0 for attempts that never reached one), and the share of
    attempts that were keeps."""
    times, keeps, total = [], 0, 0
    for line in (run_dir / "attempts.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") != "finished":
            continue
        total += 1
        keeps += event.get("verdict") == "keep"
        phases = event.get("phase_seconds") or {}
        times.append(float(phases.get("trial", 0.0)) + float(phases.get("cumulative", 0.0)))
    if not times:
        raise SystemExit(f"{run_dir}: no finished attempts")
    return times, keeps / total


def simulate(nodes: int, parallel: int, trials: list[float], llm_median: float, llm_spread: float,
             hours: float, rng: np.random.Generator) -> float:
    """Attempts finished per hour with ``nodes`` one-slot nodes and ``parallel`` attempts in flight:
    each in-flight slot proposes, waits for a free node, is measured, and proposes again."""
    horizon, done = hours * 3600.0, 0

    def latency() -> float:
        return llm_median * float(rng.lognormal(0.0, llm_spread))

    ready = [latency() for _ in range(parallel)]        # when each slot's proposal is ready for a node
    heapq.heapify(ready)
    free_at = [0.0] * nodes
    heapq.heapify(free_at)
    while ready[0] < horizon:
        proposed = heapq.heappop(ready)
        start = max(proposed, heapq.heappop(free_at))
        end = start + float(rng.choice(trials))
        heapq.heappush(free_at, end)
        done += end <= horizon
        heapq.heappush(ready, end + latency())
    return done / hours


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True, help="a finished run's directory (its ledger's trial times)")
    ap.add_argument("--llm-seconds", type=float, default=40.0, help="the model's median latency per proposal")
    ap.add_argument("--llm-spread", type=float, default=0.5, help="lognormal sigma of that latency")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    trials, keep_share = trial_seconds(args.run)
    rng = np.random.default_rng(args.seed)
    print(f"{len(trials)} attempts of {args.run}: trial time median {np.median(trials):.1f} s, mean "
          f"{np.mean(trials):.1f} s; keeps {keep_share:.0%}; model latency median {args.llm_seconds:g} s")
    one = 3600.0 / (args.llm_seconds + float(np.mean(trials)))
    print(f"one machine, one attempt at a time (today): ~{one:.0f} attempts/hour on paper")
    print(f"{'nodes':>5} {'in flight':>9} {'attempts/hour':>13} {'on paper':>9}")
    for nodes in (1, 2, 4, 8):
        for parallel in (nodes, 2 * nodes):
            rate = simulate(nodes, parallel, trials, args.llm_seconds, args.llm_spread, args.hours, rng)
            paper = min(parallel * 3600.0 / (args.llm_seconds + float(np.mean(trials))),
                        nodes * 3600.0 / float(np.mean(trials)))
            print(f"{nodes:>5} {parallel:>9} {rate:>13.0f} {paper:>9.0f}")


if __name__ == "__main__":
    main()
