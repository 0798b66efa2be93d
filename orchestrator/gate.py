"""The keep gate: the only place a verdict is decided. Rules in code, thresholds in config.

Fails closed: a missing result, a non-paired result, or any missing or malformed field is a
discard with reason ``parse_error``. Every rule that fails is reported, not just the first.

Two rules exist. ``paired`` (the default) judges the paired, interleaved speedup of the trial.
``unpaired`` is the original harness's rule (SPEC §5): the candidate's absolute CI against the
best's, measured at another time. It is kept to show, with `orchestrator calibrate`, how much
worse it is (docs/robustness.md), and for comparison runs with ``gate: unpaired``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from targets.harness.result import EXIT_INCORRECT, EXIT_OK, EXIT_TIMEOUT, Measured, TrialResult

RULES = ("paired", "unpaired")


@dataclass(frozen=True)
class GateConfig:
    rule: str = "paired"                # paired | unpaired (the original's absolute-CI rule)
    min_effect: float = 0.01            # keep only if the speedup CI lower bound > 1 + min_effect
    worst_combo_min: float = 0.95       # no combo may slow down by more than 5 %
    tradeoff_ratio: float = 10.0        # summed per-combo gains >= ratio x summed per-combo losses


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reasons: list[str] = field(default_factory=list)   # "<code>: <detail>"; empty when kept

    @property
    def codes(self) -> list[str]:
        return [r.split(":", 1)[0] for r in self.reasons]

    @property
    def primary(self) -> str:
        return "keep" if self.keep else self.codes[0]


def judge_failure(exit_code: int, error: str) -> Verdict:
    """A trial without a valid result: the exit code names the reason."""
    if exit_code == EXIT_TIMEOUT:
        return Verdict(False, [f"timeout: {error}"])
    return Verdict(False, [f"parse_error: {error}"])


@dataclass(frozen=True)
class Timing:
    """One kernel's absolute timing from one trial, as the unpaired rule compares it."""

    geomean_ns: float
    ci: tuple[float, float]
    worst: Measured
    per_combo: dict[str, float]


def candidate_timing(result: TrialResult) -> Timing | None:
    if result.geomean_ns_per_query is None or result.geomean_ns_ci_90pct is None or result.worst_ns_per_query is None:
        return None
    return Timing(result.geomean_ns_per_query, result.geomean_ns_ci_90pct, result.worst_ns_per_query,
                  dict(result.per_combo_geomean_ns))


def incumbent_timing(result: TrialResult) -> Timing | None:
    if (result.incumbent_geomean_ns_per_query is None or result.incumbent_geomean_ns_ci_90pct is None
            or result.incumbent_worst_ns_per_query is None):
        return None
    return Timing(result.incumbent_geomean_ns_per_query, result.incumbent_geomean_ns_ci_90pct,
                  result.incumbent_worst_ns_per_query, dict(result.incumbent_per_combo_geomean_ns))


def judge(result: TrialResult | None, config: GateConfig, budget_seconds: float,
          error: str = "no result", exit_code: int = 1, best: Timing | None = None) -> Verdict:
    """The verdict on one trial. ``best`` is the stored timing of the best kernel, used only by
    the unpaired rule (without it, the unpaired rule uses the trial's own incumbent arm)."""
    if result is None:
        return judge_failure(exit_code, error)
    if result.exit_code != EXIT_OK:
        code = {EXIT_INCORRECT: "incorrect", EXIT_TIMEOUT: "timeout"}.get(result.exit_code, "crash")
        if result.failure_kind == "internal":
            code = "crash"
        return Verdict(False, [f"{code}: {result.failure or result.failure_kind}"])
    problem = _malformed(result)
    if problem:
        return Verdict(False, [f"parse_error: {problem}"])
    if config.rule == "unpaired":
        cand, best = candidate_timing(result), best or incumbent_timing(result)
        if cand is None or best is None or set(cand.per_combo) != set(best.per_combo):
            return Verdict(False, ["parse_error: no absolute timing of the best covering the same combos"])
        reasons = _unpaired_rules(cand, best, config)
    else:
        reasons = _paired_rules(result, config)
    if result.total_seconds is None or result.total_seconds > budget_seconds:
        reasons.append(f"over_budget: trial took {result.total_seconds} s, budget {budget_seconds:g} s")
    return Verdict(not reasons, reasons)


def _paired_rules(result: TrialResult, config: GateConfig) -> list[str]:
    reasons = []
    lo, _ = result.speedup_ci_90pct  # type: ignore[misc]
    if not lo > 1.0 + config.min_effect:
        reasons.append(f"not_faster: speedup {result.speedup_geomean:.4f}, CI lower bound {lo:.4f} "
                       f"is not above {1.0 + config.min_effect:.4f}")
    worst = result.worst_combo_speedup
    assert worst is not None
    if worst.value < config.worst_combo_min:
        reasons.append(f"worst_combo: {worst.combo} at {worst.value:.4f}x is below {config.worst_combo_min:.4f}x")
    return reasons + _tradeoff(result.per_combo_speedup, config)


def _unpaired_rules(cand: Timing, best: Timing, config: GateConfig) -> list[str]:
    """SPEC §5: the candidate's CI upper bound below the best's CI lower bound (with min_effect as
    a margin), its worst combo no slower than the best's worst beyond the guard, and the trade-off
    rule on per-combo ratios of absolute times."""
    reasons = []
    bound = best.ci[0] / cand.ci[1]
    if not bound > 1.0 + config.min_effect:
        reasons.append(f"not_faster: best CI low {best.ci[0]:.1f} ns / candidate CI high {cand.ci[1]:.1f} ns "
                       f"= {bound:.4f} is not above {1.0 + config.min_effect:.4f}")
    if cand.worst.value * config.worst_combo_min > best.worst.value:
        reasons.append(f"worst_combo: {cand.worst.combo} at {cand.worst.value:.1f} ns vs the best's worst "
                       f"{best.worst.value:.1f} ns is beyond the {config.worst_combo_min:.4f}x guard")
    return reasons + _tradeoff({c: best.per_combo[c] / cand.per_combo[c] for c in cand.per_combo}, config)


def _tradeoff(per_combo_speedup: dict[str, float], config: GateConfig) -> list[str]:
    gains = sum(max(0.0, s - 1.0) for s in per_combo_speedup.values())
    losses = sum(max(0.0, 1.0 - s) for s in per_combo_speedup.values())
    if losses > 0 and gains < config.tradeoff_ratio * losses:
        return [f"tradeoff: per-combo gains {gains:.4f} < {config.tradeoff_ratio:g} x losses {losses:.4f}"]
    return []


def _malformed(result: TrialResult) -> str | None:
    """Fail-closed checks beyond the parser: the gate's own preconditions."""
    if result.mode != "paired":
        return f"mode is {result.mode!r}, the gate needs a paired trial"
    if result.correctness != "pass":
        return "correctness is not pass"
    if result.anchor:
        return f"the trial measured the kernel against Lance itself ({result.anchor}), not against the incumbent"
    if result.injected_slowdown != 0.0:
        return f"the trial carries an injected slowdown of {result.injected_slowdown:g} (calibration only)"
    if result.ablated:
        return f"the trial ran with {', '.join(result.ablated)} switched off (calibration only)"
    if result.speedup_ci_90pct is None or result.speedup_geomean is None or result.worst_combo_speedup is None:
        return "missing speedup fields"
    combos = set(result.per_combo_geomean_ns)
    if not result.per_combo_speedup or set(result.per_combo_speedup) != combos:
        return "per-combo speedups missing or not matching the measured combos"
    values = [*result.speedup_ci_90pct, result.speedup_geomean, result.worst_combo_speedup.value,
              *result.per_combo_speedup.values()]
    if not all(math.isfinite(v) and v > 0 for v in values):
        return "non-finite or non-positive speedup"
    if result.worst_combo_speedup.value != min(result.per_combo_speedup.values()):
        return "worst_combo_speedup is not the minimum per-combo speedup"
    return None
