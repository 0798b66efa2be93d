"""orchestrator.gate: every keep rule at both sides of its threshold, and fail-closed parsing."""

from __future__ import annotations

import dataclasses
import math

import pytest

from orchestrator.gate import GateConfig, Timing, Verdict, candidate_timing, incumbent_timing, judge, judge_failure
from targets.harness.result import Measured, TrialResult

BUDGET = 100.0
DEFAULT = GateConfig()


def paired(per_combo: dict[str, float] | None = None, ci: tuple[float, float] = (1.10, 1.30),
           total_seconds: float | None = 50.0, **changes) -> TrialResult:
    """A well-formed paired result: candidate per-combo times, incumbent = candidate x speedup."""
    per_combo = per_combo if per_combo is not None else {"128x16/uniform": 1.25, "256x16/uniform": 1.20,
                                                         "768x96/sparse": 1.15}
    cand = {c: 1000.0 * (i + 1) for i, c in enumerate(per_combo)}
    inc = {c: cand[c] * s for c, s in per_combo.items()}
    geomean = math.exp(sum(math.log(s) for s in per_combo.values()) / len(per_combo))
    worst = min(per_combo, key=per_combo.__getitem__)
    result = TrialResult(
        target="pq-l2", mode="paired", exit_code=0, correctness="pass", correctness_cases=36,
        passes=3, replicates=4, sessions=3, queries_per_combo=10, threads={"OMP_NUM_THREADS": "1"},
        shapes_tested=["128x16", "256x16", "768x96"], distributions_tested=["uniform", "sparse"],
        geomean_ns_per_query=2000.0, geomean_ns_ci_90pct=(1900.0, 2100.0), median_ns_per_query=2000.0,
        worst_ns_per_query=Measured(max(cand.values()), max(cand, key=cand.__getitem__)),
        best_ns_per_query=Measured(min(cand.values()), min(cand, key=cand.__getitem__)),
        per_combo_geomean_ns=cand, incumbent_per_combo_geomean_ns=inc,
        incumbent_geomean_ns_per_query=2000.0 * geomean, incumbent_geomean_ns_ci_90pct=(1900.0 * geomean, 2100.0 * geomean),
        incumbent_worst_ns_per_query=Measured(max(inc.values()), max(inc, key=inc.__getitem__)),
        speedup_geomean=geomean, speedup_ci_90pct=ci, worst_combo_speedup=Measured(per_combo[worst], worst),
        per_combo_speedup=dict(per_combo), jit_seconds=0.5, peak_mem_mb=120.0, total_seconds=total_seconds)
    return dataclasses.replace(result, **changes)


def failed(exit_code: int, kind: str, failure: str = "evidence here") -> TrialResult:
    return TrialResult(target="pq-l2", mode="paired", exit_code=exit_code, correctness="fail" if exit_code == 2
                       else "not_run", failure_kind=kind, failure=failure)


def test_helper_builds_a_keep() -> None:
    v = judge(paired(), DEFAULT, BUDGET)
    assert v == Verdict(True, [])
    assert v.codes == [] and v.primary == "keep"


# -- CI lower bound ------------------------------------------------------------------------------

def test_ci_lower_bound_exactly_at_threshold_does_not_keep() -> None:
    lo = 1.0 + DEFAULT.min_effect
    v = judge(paired(ci=(lo, 1.3)), DEFAULT, BUDGET)
    assert not v.keep and v.codes == ["not_faster"] and v.primary == "not_faster"


def test_ci_lower_bound_just_above_threshold_keeps() -> None:
    assert judge(paired(ci=(1.0101, 1.3)), DEFAULT, BUDGET).keep


def test_ci_lower_bound_below_one_is_not_faster() -> None:
    v = judge(paired(ci=(0.98, 1.3)), DEFAULT, BUDGET)
    assert v.codes == ["not_faster"]
    assert "0.9800" in v.reasons[0] and "1.0100" in v.reasons[0]


def test_min_effect_from_config_is_honoured() -> None:
    strict = GateConfig(min_effect=0.05)
    assert judge(paired(ci=(1.03, 1.3)), DEFAULT, BUDGET).keep
    assert judge(paired(ci=(1.03, 1.3)), strict, BUDGET).codes == ["not_faster"]
    assert judge(paired(ci=(1.06, 1.3)), strict, BUDGET).keep
    lenient = GateConfig(min_effect=0.0)
    assert judge(paired(ci=(1.001, 1.3)), lenient, BUDGET).keep
    assert not judge(paired(ci=(1.0, 1.3)), lenient, BUDGET).keep


# -- worst combo ---------------------------------------------------------------------------------

def test_worst_combo_equal_to_minimum_keeps() -> None:
    # gains 0.6 + 0.5 = 1.1 >= 10 x 0.05 losses: only the worst-combo rule is in play.
    assert judge(paired({"a": 0.95, "b": 1.6, "c": 1.5}), DEFAULT, BUDGET).keep


def test_worst_combo_below_minimum_discards() -> None:
    v = judge(paired({"a": 0.9499, "b": 1.6, "c": 1.5}), DEFAULT, BUDGET)
    assert v.codes == ["worst_combo"]
    assert "a at 0.9499x" in v.reasons[0]


def test_worst_combo_min_from_config_is_honoured() -> None:
    per_combo = {"a": 0.97, "b": 1.6, "c": 1.5}
    assert judge(paired(per_combo), DEFAULT, BUDGET).keep
    assert judge(paired(per_combo), GateConfig(worst_combo_min=0.98), BUDGET).codes == ["worst_combo"]
    assert judge(paired({"a": 1.0, "b": 1.6}), GateConfig(worst_combo_min=1.0), BUDGET).keep


# -- trade-off -----------------------------------------------------------------------------------

def test_tradeoff_exactly_at_ratio_keeps() -> None:
    # Binary-exact values: losses 0.03125, gains 0.25 + 0.0625 = 0.3125 = 10 x 0.03125.
    assert judge(paired({"a": 0.96875, "b": 1.25, "c": 1.0625}), DEFAULT, BUDGET).keep


def test_tradeoff_below_ratio_discards() -> None:
    v = judge(paired({"a": 0.96875, "b": 1.25, "c": 1.0546875}), DEFAULT, BUDGET)   # gains 0.3046875
    assert v.codes == ["tradeoff"]


def test_tradeoff_with_no_losses_keeps() -> None:
    assert judge(paired({"a": 1.0, "b": 1.0, "c": 1.001}, ci=(1.02, 1.03)), DEFAULT, BUDGET).keep


def test_tradeoff_ratio_from_config_is_honoured() -> None:
    per_combo = {"a": 0.96875, "b": 1.25, "c": 1.0625}     # gains/losses = 10
    assert judge(paired(per_combo), GateConfig(tradeoff_ratio=10.5), BUDGET).codes == ["tradeoff"]
    assert judge(paired({"a": 0.96875, "b": 1.125}), GateConfig(tradeoff_ratio=4.0), BUDGET).keep  # 0.125 = 4 x


# -- budget --------------------------------------------------------------------------------------

def test_at_budget_keeps_over_budget_discards() -> None:
    assert judge(paired(total_seconds=BUDGET), DEFAULT, BUDGET).keep
    v = judge(paired(total_seconds=BUDGET + 0.5), DEFAULT, BUDGET)
    assert v.codes == ["over_budget"]
    assert "100.5" in v.reasons[0]


def test_missing_total_seconds_is_over_budget() -> None:
    assert judge(paired(total_seconds=None), DEFAULT, BUDGET).codes == ["over_budget"]


# -- several rules -------------------------------------------------------------------------------

def test_every_failing_rule_is_reported_in_order() -> None:
    v = judge(paired({"a": 0.5, "b": 1.1}, ci=(0.7, 1.0), total_seconds=500.0), DEFAULT, BUDGET)
    assert not v.keep
    assert v.codes == ["not_faster", "worst_combo", "tradeoff", "over_budget"]
    assert v.primary == "not_faster"
    assert all(": " in r for r in v.reasons)


def test_codes_and_primary_properties() -> None:
    v = Verdict(False, ["tradeoff: x: y", "over_budget: 3 s"])
    assert v.codes == ["tradeoff", "over_budget"] and v.primary == "tradeoff"
    assert Verdict(True).primary == "keep" and Verdict(True).codes == []


# -- no result, failed trials --------------------------------------------------------------------

def test_no_result_exit_3_is_timeout() -> None:
    v = judge(None, DEFAULT, BUDGET, error="trial killed after 130 s", exit_code=3)
    assert v == Verdict(False, ["timeout: trial killed after 130 s"])


def test_no_result_exit_1_is_parse_error() -> None:
    v = judge(None, DEFAULT, BUDGET, error="no result block", exit_code=1)
    assert v.codes == ["parse_error"] and "no result block" in v.reasons[0]
    assert judge(None, DEFAULT, BUDGET).codes == ["parse_error"]          # defaults fail closed
    assert judge_failure(0, "exit 0 without a result").codes == ["parse_error"]


@pytest.mark.parametrize("exit_code,kind,code", [
    (2, "incorrect", "incorrect"),
    (1, "crash", "crash"),
    (1, "internal", "crash"),
    (3, "timeout", "timeout"),
    (2, "internal", "crash"),      # an internal failure is never blamed on the kernel's output
])
def test_failed_trial_codes(exit_code: int, kind: str, code: str) -> None:
    v = judge(failed(exit_code, kind, "case 7 index 3: 1.5 != 2.5"), DEFAULT, BUDGET)
    assert not v.keep
    assert v.reasons == [f"{code}: case 7 index 3: 1.5 != 2.5"]


def test_failed_trial_without_evidence_names_the_kind() -> None:
    v = judge(failed(1, "crash", failure=None), DEFAULT, BUDGET)
    assert v.reasons == ["crash: crash"]


# -- fail closed ---------------------------------------------------------------------------------

def _parse_error(result: TrialResult) -> str:
    v = judge(result, DEFAULT, BUDGET)
    assert not v.keep and v.codes == ["parse_error"], v
    return v.reasons[0]


def test_single_mode_is_parse_error() -> None:
    assert "mode is 'single'" in _parse_error(paired(mode="single"))


def test_correctness_not_pass_is_parse_error() -> None:
    assert "correctness" in _parse_error(paired(correctness="not_run"))


@pytest.mark.parametrize("field", ["speedup_ci_90pct", "speedup_geomean", "worst_combo_speedup"])
def test_missing_speedup_fields_are_parse_error(field: str) -> None:
    assert "missing speedup fields" in _parse_error(paired(**{field: None}))


def test_empty_per_combo_speedup_is_parse_error() -> None:
    assert "per-combo" in _parse_error(paired(per_combo_speedup={}))


def test_per_combo_speedup_combos_must_match_measured_combos() -> None:
    base = paired({"a": 1.2, "b": 1.3})
    assert "per-combo" in _parse_error(dataclasses.replace(base, per_combo_speedup={"a": 1.2}))
    assert "per-combo" in _parse_error(dataclasses.replace(base, per_combo_speedup={"a": 1.2, "b": 1.3, "c": 1.4}))
    assert "per-combo" in _parse_error(dataclasses.replace(base, per_combo_speedup={"a": 1.2, "x": 1.3}))
    assert "per-combo" in _parse_error(dataclasses.replace(base, per_combo_geomean_ns={"a": 1.0}))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.2])
def test_non_finite_or_non_positive_per_combo_speedup(bad: float) -> None:
    base = paired({"a": 1.2, "b": 1.3})
    result = dataclasses.replace(base, per_combo_speedup={"a": 1.2, "b": bad})
    assert "non-finite or non-positive" in _parse_error(result)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
@pytest.mark.parametrize("where", ["ci_lo", "ci_hi", "geomean", "worst"])
def test_non_finite_or_non_positive_headline_speedups(bad: float, where: str) -> None:
    base = paired({"a": 1.2, "b": 1.3})
    changes = {"ci_lo": {"speedup_ci_90pct": (bad, 1.3)}, "ci_hi": {"speedup_ci_90pct": (1.1, bad)},
               "geomean": {"speedup_geomean": bad}, "worst": {"worst_combo_speedup": Measured(bad, "a")}}[where]
    assert "non-finite or non-positive" in _parse_error(dataclasses.replace(base, **changes))


def test_worst_combo_speedup_must_be_the_minimum() -> None:
    base = paired({"a": 1.2, "b": 1.3})
    # A worst value above the true minimum would let a slow combo slip past worst_combo_min.
    result = dataclasses.replace(base, per_combo_speedup={"a": 0.5, "b": 1.3})
    assert "not the minimum" in _parse_error(result)
    assert "not the minimum" in _parse_error(dataclasses.replace(base, worst_combo_speedup=Measured(1.25, "a")))


def test_a_calibration_result_is_never_kept() -> None:
    # The injected slowdown makes a kernel look faster than it is: only calibrate may use it.
    verdict = judge(paired(injected_slowdown=0.05), DEFAULT, BUDGET)
    assert not verdict.keep and verdict.codes == ["parse_error"] and "injected slowdown" in verdict.reasons[0]
    # Nor is a trial measured with a measurement feature switched off.
    verdict = judge(paired(ablated=["random-order"]), DEFAULT, BUDGET)
    assert not verdict.keep and verdict.codes == ["parse_error"] and "random-order switched off" in verdict.reasons[0]


# ----------------------------------------------------------------------------- the unpaired rule (SPEC §5)

UNPAIRED = GateConfig(rule="unpaired")


def stored_best(ci: tuple[float, float], per_combo: dict[str, float], worst: float | None = None) -> Timing:
    top = max(per_combo, key=per_combo.__getitem__)
    return Timing(geomean_ns=sum(ci) / 2, ci=ci, worst=Measured(worst or per_combo[top], top), per_combo=per_combo)


def test_timings_come_from_the_right_arm() -> None:
    r = paired({"a": 1.2, "b": 1.3})
    assert candidate_timing(r).per_combo == r.per_combo_geomean_ns and candidate_timing(r).ci == r.geomean_ns_ci_90pct
    assert incumbent_timing(r).per_combo == r.incumbent_per_combo_geomean_ns
    assert incumbent_timing(r).ci == r.incumbent_geomean_ns_ci_90pct
    assert incumbent_timing(dataclasses.replace(r, incumbent_geomean_ns_ci_90pct=None)) is None


def test_unpaired_keeps_when_the_best_ci_is_entirely_slower() -> None:
    r = paired({"a": 1.2, "b": 1.3})       # candidate CI (1900, 2100), per combo a=1000, b=2000
    best = stored_best((2200.0, 2400.0), {"a": 1150.0, "b": 2300.0})
    assert judge(r, UNPAIRED, BUDGET, best=best).keep


def test_unpaired_ignores_the_paired_speedup() -> None:
    # A paired CI that says "much faster" does not matter: only the absolute CIs are compared.
    r = paired({"a": 1.2, "b": 1.3}, ci=(1.5, 1.6))
    overlap = stored_best((2050.0, 2300.0), {"a": 1050.0, "b": 2100.0})
    v = judge(r, UNPAIRED, BUDGET, best=overlap)
    assert not v.keep and v.codes == ["not_faster"]
    # And the min_effect margin applies to the ratio of the bounds: 2130 / 2100 = 1.014.
    assert judge(r, GateConfig(rule="unpaired", min_effect=0.0), BUDGET,
                 best=stored_best((2130.0, 2300.0), {"a": 1150.0, "b": 2300.0})).keep
    assert not judge(r, GateConfig(rule="unpaired", min_effect=0.02), BUDGET,
                     best=stored_best((2130.0, 2300.0), {"a": 1150.0, "b": 2300.0})).keep


def test_unpaired_worst_combo_and_tradeoff_rules() -> None:
    r = paired({"a": 1.2, "b": 1.3})       # candidate worst combo b at 2000 ns
    slow_worst = stored_best((2200.0, 2400.0), {"a": 1500.0, "b": 1800.0}, worst=1800.0)
    v = judge(r, UNPAIRED, BUDGET, best=slow_worst)
    assert "worst_combo" in v.codes
    # b regresses 10% while a gains 50%: gains 0.5 < 10 x losses 0.1.
    v = judge(r, UNPAIRED, BUDGET, best=stored_best((2200.0, 2400.0), {"a": 1500.0, "b": 1818.2}, worst=2000.0))
    assert "tradeoff" in v.codes


def test_unpaired_without_a_stored_best_uses_the_trials_incumbent_arm() -> None:
    r = paired({"a": 1.2, "b": 1.3})        # incumbent CI = candidate CI x 1.25: (2375, 2625) vs (1900, 2100)
    assert judge(r, UNPAIRED, BUDGET).keep
    missing = judge(dataclasses.replace(r, incumbent_geomean_ns_ci_90pct=None), UNPAIRED, BUDGET)
    assert missing.codes == ["parse_error"] and "no absolute timing" in missing.reasons[0]
    v = judge(r, UNPAIRED, BUDGET, best=stored_best((2200.0, 2400.0), {"x": 1.0, "b": 2300.0}))
    assert v.codes == ["parse_error"] and "same combos" in v.reasons[0]
