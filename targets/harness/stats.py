"""Summary statistics and seeded bootstrap intervals used by every trial."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from targets.harness.prng import BOOTSTRAP_SEED, Stream

RESAMPLES = 1000
CI_LEVEL = 0.90


def geomean(values: Sequence[float] | np.ndarray) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or np.any(arr <= 0) or not np.all(np.isfinite(arr)):
        raise ValueError("geomean needs a non-empty array of positive finite values")
    return float(np.exp(np.mean(np.log(arr))))


def median(values: Sequence[float] | np.ndarray) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("median of an empty array")
    return float(np.median(arr))


def _resample_indices(stream: Stream, n: int, resamples: int) -> np.ndarray:
    return stream.integers(n, resamples * n).reshape(resamples, n)


def _interval(estimates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(estimates, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_geomean_ci(groups: Sequence[np.ndarray], seed: int = BOOTSTRAP_SEED,
                         resamples: int = RESAMPLES, level: float = CI_LEVEL) -> tuple[float, float]:
    """CI of the geomean over groups of the per-group geomean (e.g. per-combo ns/query).

    Samples are resampled within each group (stratified), so every resample keeps every group.
    """
    logs = [np.log(np.asarray(g, dtype=np.float64)) for g in groups]
    return tuple(math.exp(x) for x in _stratified_mean_ci(logs, seed, resamples, level))  # type: ignore[return-value]


def _stratified_mean_ci(groups: Sequence[np.ndarray], seed: int, resamples: int,
                        level: float) -> tuple[float, float]:
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("bootstrap needs at least one group and no empty group")
    stream = Stream(seed)
    total = np.zeros(resamples)
    for g in groups:
        total += g[_resample_indices(stream, g.size, resamples)].mean(axis=1)
    return _interval(total / len(groups), level)


def trimmed_mean(values: np.ndarray, proportion: float = 0.0, axis: int = -1) -> np.ndarray | float:
    """Mean after cutting ``proportion`` of the samples from each end (0 gives the plain mean)."""
    arr = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = arr.shape[axis]
    cut = int(proportion * n)
    if n == 0 or n - 2 * cut <= 0:
        raise ValueError("trimmed mean of too few samples")
    kept = np.take(arr, np.arange(cut, n - cut), axis=axis)
    return kept.mean(axis=axis)


def block_log_speedups(blocks: Sequence[Sequence[np.ndarray]], trim: float) -> np.ndarray:
    """Per-combo log speedup from timing blocks: ``blocks[b][c]`` holds block b's per-pair
    ``log(t_incumbent / t_candidate)`` for combo c. Each block is summarised by its trimmed mean
    (pairs have heavy tails), then blocks by their trimmed mean (whole blocks shift together:
    a memory-layout or scheduling state lasts longer than one pair)."""
    return np.array([trimmed_mean(_block_means(blocks, c, trim), trim) for c in range(_check_replicates(blocks))])


def _block_means(blocks: Sequence[Sequence[np.ndarray]], combo: int, trim: float) -> np.ndarray:
    return np.array([trimmed_mean(np.asarray(b[combo], dtype=np.float64), trim) for b in blocks])


def block_bootstrap_ci(blocks: Sequence[Sequence[np.ndarray]], trim: float, seed: int = BOOTSTRAP_SEED,
                       resamples: int = RESAMPLES, level: float = CI_LEVEL) -> tuple[float, float]:
    """CI of the geomean speedup over combos, resampling whole blocks (the independent unit:
    pairs inside a block are correlated, so resampling pairs would understate the spread).
    Returned as speedups."""
    n_combo = _check_replicates(blocks)
    picks = _resample_indices(Stream(seed), len(blocks), resamples)            # (B, n_blocks)
    total = np.zeros(resamples)
    for c in range(n_combo):
        total += trimmed_mean(_block_means(blocks, c, trim)[picks], trim, axis=1)
    return tuple(math.exp(x) for x in _interval(total / n_combo, level))  # type: ignore[return-value]


def _check_replicates(replicates: Sequence[Sequence[np.ndarray]]) -> int:
    """Number of combos; every block must cover every combo with at least one pair."""
    if not replicates or not replicates[0]:
        raise ValueError("no replicates")
    n_combo = len(replicates[0])
    for rep in replicates:
        if len(rep) != n_combo:
            raise ValueError("replicates disagree on the number of combos")
    if any(np.asarray(rep[c]).size == 0 for rep in replicates for c in range(n_combo)):
        raise ValueError("a block has no pairs for some combo")
    return n_combo
