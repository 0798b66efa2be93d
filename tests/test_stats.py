"""Tests for targets/harness/stats.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from targets.harness import stats

TRIM = 0.2          # what the runner uses


# --- geomean / median -------------------------------------------------------------------------------

def test_geomean_basic_values():
    assert stats.geomean([1.0, 4.0]) == pytest.approx(2.0, rel=1e-12)
    assert stats.geomean([2.0, 8.0, 4.0]) == pytest.approx(4.0, rel=1e-12)
    assert stats.geomean([5.0]) == pytest.approx(5.0, rel=1e-12)
    assert stats.geomean(np.array([1e-3, 1e3])) == pytest.approx(1.0, rel=1e-12)
    assert isinstance(stats.geomean([3.0]), float)


@pytest.mark.parametrize("bad", [[], [1.0, 0.0], [1.0, -2.0], [float("nan"), 1.0], [float("inf")], np.array([])])
def test_geomean_rejects(bad):
    with pytest.raises(ValueError):
        stats.geomean(bad)


def test_median_basic_values():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert stats.median([-1.0]) == -1.0
    assert isinstance(stats.median([1, 2]), float)


def test_median_rejects_empty():
    with pytest.raises(ValueError):
        stats.median([])


# --- trimmed_mean -----------------------------------------------------------------------------------

@pytest.mark.parametrize("proportion", [0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.45])
@pytest.mark.parametrize("n", [1, 7, 10, 33, 100])
def test_trimmed_mean_matches_scipy_1d(proportion, n):
    rng = np.random.default_rng(n * 1000 + int(proportion * 100))
    x = rng.standard_cauchy(n)
    if n - 2 * int(proportion * n) <= 0:
        with pytest.raises(ValueError):
            stats.trimmed_mean(x, proportion)
        return
    assert stats.trimmed_mean(x, proportion) == pytest.approx(sps.trim_mean(x, proportion), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("proportion", [0.0, 0.1, 0.2, 0.3])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_trimmed_mean_matches_scipy_axis(proportion, axis):
    rng = np.random.default_rng(7)
    x = rng.lognormal(size=(12, 23))
    got = stats.trimmed_mean(x, proportion, axis=axis)
    want = sps.trim_mean(x, proportion, axis=axis)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_trimmed_mean_default_axis_is_last():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(stats.trimmed_mean(x), [1.5, 5.5, 9.5])


def test_trimmed_mean_hand_value():
    # Sorted: 1 2 3 4 100; cut int(0.2*5)=1 from each end -> mean(2,3,4) = 3.
    assert stats.trimmed_mean(np.array([100.0, 3.0, 1.0, 4.0, 2.0]), 0.2) == pytest.approx(3.0)


@pytest.mark.parametrize("x,p", [(np.array([]), 0.0), (np.array([1.0, 2.0]), 0.5), (np.array([1.0, 2.0, 3.0, 4.0]), 0.5)])
def test_trimmed_mean_too_few(x, p):
    with pytest.raises(ValueError):
        stats.trimmed_mean(x, p)


# --- bootstrap_geomean_ci ---------------------------------------------------------------------------

def _lognormal_groups(seed, n, medians=(100.0, 250.0, 40.0), sigma=0.2):
    rng = np.random.default_rng(seed)
    return [m * np.exp(rng.normal(0.0, sigma, n)) for m in medians]


def _point(groups):
    # Geomean over groups of the per-group geomean, written directly.
    return math.exp(np.mean([np.mean(np.log(g)) for g in groups]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bootstrap_geomean_ci_contains_point(seed):
    groups = _lognormal_groups(seed, 60)
    lo, hi = stats.bootstrap_geomean_ci(groups)
    assert lo < _point(groups) < hi
    assert lo < hi


def test_bootstrap_geomean_ci_deterministic_and_seeded():
    groups = _lognormal_groups(5, 40)
    a = stats.bootstrap_geomean_ci(groups, seed=11)
    b = stats.bootstrap_geomean_ci([g.copy() for g in groups], seed=11)
    c = stats.bootstrap_geomean_ci(groups, seed=12)
    assert a == b
    assert a != c
    # ...but both are intervals around the same point.
    p = _point(groups)
    assert c[0] < p < c[1]


def test_bootstrap_geomean_ci_narrower_with_more_data():
    small = stats.bootstrap_geomean_ci(_lognormal_groups(9, 20))
    large = stats.bootstrap_geomean_ci(_lognormal_groups(9, 2000))
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])


def test_bootstrap_geomean_ci_constant_groups_collapse():
    lo, hi = stats.bootstrap_geomean_ci([np.full(10, 4.0), np.full(5, 9.0)])
    assert lo == pytest.approx(6.0, rel=1e-12) and hi == pytest.approx(6.0, rel=1e-12)


def test_bootstrap_geomean_ci_width_matches_normal_theory():
    # Stratified bootstrap of a mean of logs: the 90% half-width is about 1.645*sigma/sqrt(n*G)
    # on the log scale (G groups, n samples each). Loose check that the spread is sane.
    sigma, n, g = 0.2, 200, 3
    groups = _lognormal_groups(21, n, sigma=sigma)
    lo, hi = stats.bootstrap_geomean_ci(groups)
    half = (math.log(hi) - math.log(lo)) / 2
    expect = 1.645 * sigma / math.sqrt(n) / g * math.sqrt(g)
    assert 0.7 * expect < half < 1.3 * expect


@pytest.mark.parametrize("groups", [[], [np.array([1.0]), np.array([])]])
def test_bootstrap_geomean_ci_rejects_empty(groups):
    with pytest.raises(ValueError):
        stats.bootstrap_geomean_ci(groups)


# --- block_log_speedups / block_bootstrap_ci --------------------------------------------------------

def _blocks(rng, n_blocks=16, n_combo=3, pairs=20, mean=0.0, sd=0.05, block_sd=0.0):
    out = []
    for _ in range(n_blocks):
        shift = rng.normal(0.0, block_sd) if block_sd else 0.0
        out.append([rng.normal(mean + shift, sd, pairs) for _ in range(n_combo)])
    return out


@pytest.mark.parametrize("x", [0.0, 0.1, -0.3, 0.693])
def test_constant_log_ratio_collapses(x):
    blocks = [[np.full(12, x) for _ in range(3)] for _ in range(16)]
    logs = stats.block_log_speedups(blocks, TRIM)
    assert logs.shape == (3,)
    np.testing.assert_allclose(np.exp(logs), math.exp(x), rtol=1e-12)
    lo, hi = stats.block_bootstrap_ci(blocks, TRIM)
    assert lo == pytest.approx(math.exp(x), rel=1e-12)
    assert hi == pytest.approx(math.exp(x), rel=1e-12)


def test_per_combo_log_speedups_are_separate():
    # Combo c has constant log ratio 0.1*c: the result keeps combos apart and in order.
    blocks = [[np.full(5, 0.1 * c) for c in range(4)] for _ in range(8)]
    np.testing.assert_allclose(stats.block_log_speedups(blocks, TRIM), [0.0, 0.1, 0.2, 0.3], atol=1e-15)
    lo, hi = stats.block_bootstrap_ci(blocks, TRIM)
    assert lo == pytest.approx(math.exp(0.15)) and hi == pytest.approx(math.exp(0.15))


def test_block_log_speedups_hand_value():
    # One combo, three blocks, trim 0 -> plain mean of block means.
    blocks = [[np.array([0.0, 0.3])], [np.array([0.6])], [np.array([0.1, 0.2, 0.3])]]
    np.testing.assert_allclose(stats.block_log_speedups(blocks, 0.0), [(0.15 + 0.6 + 0.2) / 3])


@pytest.mark.parametrize("seed", range(5))
def test_clear_effect_ci_excludes_one(seed):
    rng = np.random.default_rng(seed)
    blocks = _blocks(rng, mean=0.1, sd=0.05, block_sd=0.01)
    lo, hi = stats.block_bootstrap_ci(blocks, TRIM)
    assert 1.0 < lo < math.exp(0.1) < hi
    assert np.all(stats.block_log_speedups(blocks, TRIM) > 0.05)


def test_aa_noise_ci_contains_one_in_most_seeds():
    hits = 0
    seeds = range(40)
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        blocks = _blocks(rng, mean=0.0, sd=0.05, block_sd=0.01)
        lo, hi = stats.block_bootstrap_ci(blocks, TRIM, seed=seed)
        hits += lo <= 1.0 <= hi
    # Nominal 90%; allow undercoverage from a 16-block bootstrap but not a broken interval.
    assert hits >= 30


def test_aa_ci_is_not_degenerate():
    rng = np.random.default_rng(3)
    lo, hi = stats.block_bootstrap_ci(_blocks(rng, sd=0.05, block_sd=0.01), TRIM)
    assert lo < 1.0 < hi
    assert hi - lo > 1e-3


def test_single_wild_block_barely_moves_the_estimate():
    rng = np.random.default_rng(42)
    clean = _blocks(rng, n_blocks=16, n_combo=2, mean=0.05, sd=0.05)
    wild = [[arr.copy() for arr in block] for block in clean]
    wild[5] = [arr + 0.5 for arr in wild[5]]
    est_clean = stats.block_log_speedups(clean, TRIM)
    est_wild = stats.block_log_speedups(wild, TRIM)
    plain_clean = np.array([np.mean([b[c].mean() for b in clean]) for c in range(2)])
    plain_wild = np.array([np.mean([b[c].mean() for b in wild]) for c in range(2)])
    plain_shift = np.abs(plain_wild - plain_clean)
    robust_shift = np.abs(est_wild - est_clean)
    np.testing.assert_allclose(plain_shift, 0.5 / 16, rtol=1e-9)
    assert np.all(robust_shift < 0.005)
    assert np.all(robust_shift < plain_shift / 5)
    lo_c, hi_c = stats.block_bootstrap_ci(clean, TRIM)
    lo_w, hi_w = stats.block_bootstrap_ci(wild, TRIM)
    assert abs(math.log(lo_w) - math.log(lo_c)) < 0.01
    assert abs(math.log(hi_w) - math.log(hi_c)) < 0.01


def test_block_bootstrap_ci_deterministic_and_seeded():
    rng = np.random.default_rng(8)
    blocks = _blocks(rng)
    assert stats.block_bootstrap_ci(blocks, TRIM, seed=1) == stats.block_bootstrap_ci(blocks, TRIM, seed=1)
    assert stats.block_bootstrap_ci(blocks, TRIM, seed=1) != stats.block_bootstrap_ci(blocks, TRIM, seed=2)


@pytest.mark.parametrize("fn", [stats.block_log_speedups, stats.block_bootstrap_ci])
@pytest.mark.parametrize("blocks", [
    [],                                                       # no blocks
    [[]],                                                     # no combos
    [[np.ones(3), np.ones(3)], [np.ones(3)]],                 # combos differ between blocks
    [[np.ones(3)], [np.ones(3), np.ones(3)]],                 # ... either way round
    [[np.ones(3), np.array([])], [np.ones(3), np.ones(3)]],   # a combo without pairs
])
def test_block_functions_reject_bad_input(fn, blocks):
    with pytest.raises(ValueError):
        fn(blocks, TRIM)
