"""The keep gate: the only place a verdict is decided. Rules in code, thresholds in config.

Fails closed: a missing result, a non-paired result, or any missing or malformed field is a
discard with reason ``parse_error``. Every rule that fails is reported, not just the first.

Two rules exist. ``paired`` (the default) judges the paired, interleaved speedup of the trial.
``unpaired`` is the original harness's rule (SPEC §5): the candidate's absolute CI against the
best's, measured at another time. It is kept to show, with `orchestrator calibrate`, how much
worse it is (docs/robustness.md), and for comparison runs with ``gate: unpaired``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.ledger import RunHistory
from targets.harness.result import (EXIT_INCORRECT, EXIT_OK, EXIT_TIMEOUT, Measured, ResultParseError, TrialResult,
                                    parse_json)

RULES = ("paired", "unpaired")


class Reason(StrEnum):
    """Why an attempt ended as it did: the ledger's ``reason``. The gate decides the trial's;
    the loop names the ones that end an attempt before any trial (a bad edit, an API error)."""

    KEEP = "keep"
    # the gate's, on a trial
    NOT_FASTER = "not_faster"
    WORST_COMBO = "worst_combo"
    TRADEOFF = "tradeoff"
    OVER_BUDGET = "over_budget"
    PARSE_ERROR = "parse_error"
    INCORRECT = "incorrect"
    CRASH = "crash"
    TIMEOUT = "timeout"
    TAMPERED = "tampered"
    # before a trial
    NO_CHANGE = "no_change"
    DUPLICATE = "duplicate"             # the same code as the current best or an earlier attempt
    REJECTED_CHANGE = "rejected_change"
    EDIT_FAILED = "edit_failed"
    POLICY = "policy"
    PROVIDER_ERROR = "provider_error"
    TRUNCATED = "truncated"
    EMPTY_REPLY = "empty_reply"
    REFUSAL = "refusal"
    OVERSIZED_REPLY = "oversized_reply"
    COST_BUDGET = "cost_budget"
    # the daemon's
    INTERRUPTED = "interrupted"
    DAEMON_ERROR = "daemon_error"
    # with --ray
    STALE = "stale"                     # won against an incumbent that was replaced, twice
    INFRA_ERROR = "infra_error"         # the trial's node was lost twice


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
    def primary(self) -> Reason:
        return Reason.KEEP if self.keep else Reason(self.codes[0])

    @property
    def remeasurable(self) -> bool:
        """Not kept, and worth measuring again on a quieter machine: anything but tampering."""
        return not self.keep and Reason.TAMPERED not in self.codes


@dataclass(frozen=True)
class Integrity:
    """What the loop saw around the trial, judged here with its result: files other than the
    candidate that changed while it ran (already restored), and the kernel file's hash after it."""

    changed_files: Sequence[str] = ()
    kernel_sha256: str | None = None


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


def stored_best_timing(history: RunHistory) -> Timing | None:
    """For the unpaired rule: the best kernel's absolute timing as measured when it became the
    best (the last keep's candidate arm), else the baseline's from the run's first full trial.
    None before any trial (or for records an older version wrote): ``judge`` then uses the
    current trial's incumbent arm."""
    try:
        best = history.best
        if best is not None and best.trial:
            return candidate_timing(parse_json(json.dumps(best.trial)))
        for rec in history.records:
            if rec.trial and rec.trial.get("exit_code") == 0 and rec.trial.get("mode") == "paired":
                return incumbent_timing(parse_json(json.dumps(rec.trial)))
    except ResultParseError:
        return None
    return None


def judge(result: TrialResult | None, config: GateConfig, budget_seconds: float,
          error: str = "no result", exit_code: int = 1, best: Timing | None = None,
          integrity: Integrity | None = None) -> Verdict:
    """The verdict on one trial. ``best`` is the stored timing of the best kernel, used only by
    the unpaired rule (without it, the unpaired rule uses the trial's own incumbent arm).
    ``integrity`` fails a trial during which other files changed, or whose measured kernel is not
    the file that would be committed."""
    if integrity is not None and integrity.changed_files:
        return Verdict(False, [f"tampered: files changed during the trial (restored): "
                               f"{list(integrity.changed_files)[:10]}"])
    verdict = _judge_trial(result, config, budget_seconds, error, exit_code, best)
    if (verdict.keep and integrity is not None and integrity.kernel_sha256 is not None
            and (result is None or result.kernel_sha256 != integrity.kernel_sha256)):
        return Verdict(False, ["tampered: kernels.py changed between the trial and the commit"])
    return verdict


def _judge_trial(result: TrialResult | None, config: GateConfig, budget_seconds: float, error: str, exit_code: int,
                 best: Timing | None) -> Verdict:
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
