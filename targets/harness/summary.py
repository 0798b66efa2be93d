"""Raw timings into the result's timing fields: absolute geomeans and the paired speedup.

The paired estimate is a trimmed mean of per-pair log ratios within each block and again across
blocks, with a block bootstrap for its 90 % CI (``stats``); blocks are the unit because pairs
inside one block move together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from targets.harness import stats
from targets.harness.measure import SpeedSamples
from targets.harness.result import Measured, TrialResult


def rounded(x: float, digits: int) -> float:
    return float(round(x, digits))


def _absolute(ns: dict[str, list[np.ndarray]], combos: Sequence[str]) -> tuple[dict[str, float], float,
                                                                               tuple[float, float], Measured]:
    """One arm's absolute timing: per-combo geomean ns, their geomean, its CI, and the worst combo."""
    per_combo = {c: stats.geomean(np.concatenate(ns[c])) for c in combos}
    lo, hi = stats.bootstrap_geomean_ci([np.concatenate(ns[c]) for c in combos])
    worst = max(per_combo, key=per_combo.__getitem__)
    return ({c: rounded(v, 1) for c, v in per_combo.items()}, rounded(stats.geomean(list(per_combo.values())), 1),
            (rounded(lo, 1), rounded(hi, 1)), Measured(rounded(per_combo[worst], 1), worst))


def _counted(counts: dict[str, list[np.ndarray]], combos: Sequence[str], which: int) -> float | None:
    """Geomean over combos of the per-call geomean of a counter (0 cycles, 1 instructions), or None
    if any timed call went uncounted."""
    per_combo = [np.concatenate([block[:, which] for block in counts.get(c, [])]) for c in combos]
    if any(v.size == 0 or np.any(v <= 0) for v in per_combo):
        return None
    return rounded(stats.geomean([stats.geomean(v) for v in per_combo]), 1)


def log_ratio_blocks(samples: SpeedSamples, combos: Sequence[str]) -> list[list[np.ndarray]]:
    """``blocks[b][c]``: per-pair log(t_incumbent / t_candidate) for combo c in timing block b.
    Blocks, not single pairs, are the bootstrap's unit: pairs within a block are correlated."""
    inc, cand = samples.ns[0], samples.ns[-1]
    return [[np.log(inc[c][b] / cand[c][b]) for c in combos] for b in range(len(cand[combos[0]]))]


def summarise(result: TrialResult, samples: SpeedSamples, combos: Sequence[str], paired: bool,
              trim: float) -> None:
    """Fill the timing fields of ``result`` from raw samples."""
    cand = samples.ns[-1]
    (result.per_combo_geomean_ns, result.geomean_ns_per_query, result.geomean_ns_ci_90pct,
     result.worst_ns_per_query) = _absolute(cand, combos)
    result.median_ns_per_query = rounded(stats.median(np.concatenate([np.concatenate(cand[c]) for c in combos])), 1)
    best = min(result.per_combo_geomean_ns, key=result.per_combo_geomean_ns.__getitem__)
    result.best_ns_per_query = Measured(result.per_combo_geomean_ns[best], best)
    result.jit_seconds = rounded(samples.jit_seconds[-1], 3)
    if samples.counts:
        result.geomean_cycles_per_query = _counted(samples.counts[-1], combos, 0)
        result.geomean_instructions_per_query = _counted(samples.counts[-1], combos, 1)
    if not paired:
        return
    inc = samples.ns[0]
    (result.incumbent_per_combo_geomean_ns, result.incumbent_geomean_ns_per_query,
     result.incumbent_geomean_ns_ci_90pct, result.incumbent_worst_ns_per_query) = _absolute(inc, combos)
    if samples.counts:
        result.incumbent_geomean_cycles_per_query = _counted(samples.counts[0], combos, 0)
        result.incumbent_geomean_instructions_per_query = _counted(samples.counts[0], combos, 1)
    replicates = log_ratio_blocks(samples, combos)
    logs = stats.block_log_speedups(replicates, trim)
    per_combo_speedup = {c: math.exp(x) for c, x in zip(combos, logs)}
    result.per_combo_speedup = {c: rounded(v, 4) for c, v in per_combo_speedup.items()}
    result.speedup_geomean = rounded(math.exp(float(np.mean(logs))), 4)
    lo, hi = stats.block_bootstrap_ci(replicates, trim)
    result.speedup_ci_90pct = (rounded(lo, 4), rounded(hi, 4))
    worst_c = min(per_combo_speedup, key=per_combo_speedup.__getitem__)
    result.worst_combo_speedup = Measured(rounded(per_combo_speedup[worst_c], 4), worst_c)
