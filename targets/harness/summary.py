"""Raw timings into the result's timing fields: absolute geomeans, the paired speedup, the profile.

The paired estimate is a trimmed mean of per-pair log ratios within each block and again across
blocks, with a block bootstrap for its 90 % CI (``stats``); blocks are the unit because pairs
inside one block move together. A profile is a least-squares fit of median times over sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from targets.harness import stats
from targets.harness.measure import SpeedSamples
from targets.harness.plan import ProfileShape, size_label
from targets.harness.result import Measured, ShapeProfile, Stage, TrialResult

OVERHEAD_LABEL = "harness round trip (not the kernel's)"


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


@dataclass(frozen=True)
class LinearFit:
    """``y = intercept + x @ slopes`` by least squares, and how well it fits."""

    intercept: float
    slopes: list[float]
    r2: float
    max_rel_residual: float          # the worst |fit - y| / y


def fit_linear(x: np.ndarray, y: np.ndarray) -> LinearFit:
    """Least squares over points ``x`` [points, factors] and positive times ``y`` [points], in
    relative terms: timing noise grows with the time, and the smallest sizes, which pin down the
    intercept, must count as much as the largest. Raises ValueError where the points cannot tell
    the terms apart (a factor at one value, or two factors moving together)."""
    design = np.column_stack([np.ones(len(y)), np.asarray(x, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(f"{len(y)} points cannot separate {design.shape[1]} terms: vary every factor independently")
    if np.any(y <= 0):
        raise ValueError("times must be positive")
    coef = np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)[0]
    residual = y - design @ coef
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else 1.0
    return LinearFit(float(coef[0]), [float(c) for c in coef[1:]], r2, float(np.max(np.abs(residual) / y)))


def shape_profile(ps: ProfileShape, factors: dict[str, str], fixed_label: str, sizes: Sequence[dict[str, int]],
                  medians: Sequence[float], overhead_ns: float) -> ShapeProfile:
    """One shape's stages from its median times at ``sizes``: the fit's intercept less the
    harness's round trip is the kernel's fixed cost, each slope a stage; shares are of the fit at
    the speed workload's own size (``ps.at``), a negative part (noise around nothing) counting 0."""
    names = list(factors)
    fit = fit_linear(np.array([[size[f] for f in names] for size in sizes]), np.array(medians))
    parts = [fit.intercept - overhead_ns, *(s * ps.at[f] for s, f in zip(fit.slopes, names)), overhead_ns]
    kept = [max(0.0, p) for p in parts]
    total = sum(kept) or 1.0
    shares = [rounded(p / total, 4) for p in kept]
    stages = [Stage("fixed", fixed_label, "", rounded(parts[0], 1), 1, shares[0])]
    stages += [Stage("slope", factors[f], f, rounded(s, 3), ps.at[f], share)
               for f, s, share in zip(names, fit.slopes, shares[1:-1])]
    stages.append(Stage("overhead", OVERHEAD_LABEL, "", rounded(overhead_ns, 1), 1, shares[-1]))
    return ShapeProfile(distribution=ps.distribution, op_ns=rounded(sum(parts), 1), stages=stages,
                        points_ns={size_label(size): rounded(m, 1) for size, m in zip(sizes, medians)},
                        r2=rounded(fit.r2, 4), max_rel_residual=rounded(fit.max_rel_residual, 4))
