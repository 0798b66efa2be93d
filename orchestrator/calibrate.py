"""`orchestrator calibrate`: prove the keep gate on this machine, with numbers.

Runs paired trials of one kernel against itself (A/A) and against itself with a known injected
slowdown of the incumbent arm (the worker spins for that fraction of each timed call), in rounds
that interleave the effect sizes so slow drift of the machine hits every effect alike. Each trial
is judged by the daemon's own gate, by the original unpaired gate (this trial's candidate arm
against another trial's incumbent arm: "the best, measured at another time"), and by simpler
statistics on the same raw timings (no blocks, no trimming, one worker pair), so each measurement
feature's contribution shows side by side. Features that shape how timings are collected (pinning,
warm-up, random order) cannot be taken away afterwards: ``ablations`` runs extra trials with one
of them switched off, interleaved with the full ones. Results go to ``runs/<target>/calibration/<stamp>/``
after every trial (a crash keeps what was measured).

Trials run in this process (the runner is trusted and never imports a kernel; the kernels still
run in sandboxed workers): that is the only way to set the injected slowdown.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import gate
from targets import TargetInfo
from targets.harness import stats
from targets.harness.files import write_atomic
from targets.harness.measure import SpeedSamples
from targets.harness.plan import ABLATIONS, TrialOptions
from targets.harness.result import TrialResult, parse_json
from targets.harness.runner import run_trial
from targets.harness.summary import log_ratio_blocks

DEFAULT_EFFECTS = (0.0, 0.02, 0.05, 0.10)
THRESHOLDS = (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05)
MAX_FALSE_KEEP, MIN_POWER = 0.01, 0.95
# Statistics computed on each trial's raw timings besides the gate's own (see _ablations).
METHODS = ("paired", "unpaired", "paired-untrimmed", "paired-iid-pairs", "one-worker-pair")
FULL = "full"                      # the variant with every measurement feature on: the daemon's trial


@dataclass(frozen=True)
class CalibrationOptions:
    target: TargetInfo
    kernel: Path
    trials: int = 100
    effects: tuple[float, ...] = DEFAULT_EFFECTS
    replicates: int | None = None
    sessions: int | None = None
    queries_per_combo: int | None = None
    budget_seconds: float = 120.0
    gate: gate.GateConfig = field(default_factory=gate.GateConfig)
    sandbox: bool = True
    ablations: tuple[str, ...] = ()            # each also runs every effect with that feature off

    @property
    def variants(self) -> tuple[str, ...]:
        return (FULL, *self.ablations)


@dataclass
class Estimate:
    speedup: float
    lo: float
    hi: float


@dataclass
class TrialRecord:
    effect: float
    round: int
    seconds: float
    exit_code: int
    failure: str | None = None
    estimates: dict[str, Estimate] = field(default_factory=dict)   # per method but unpaired
    cycles_ratio: float | None = None                              # incumbent / candidate, if counted
    instructions_ratio: float | None = None
    result: dict[str, Any] | None = None                           # the full trial result
    variant: str = FULL                                            # or the one feature switched off


def problem(options: CalibrationOptions) -> str | None:
    """What is wrong with the options, as a message naming the flag and the fix, or None."""
    if options.trials < 2:
        return "--trials must be at least 2 (the unpaired gate compares a trial with another one)"
    if 0.0 not in options.effects:
        return "--effects must include 0 (the A/A trials that measure the false-keep rate)"
    if any(not (0.0 <= e < 1.0) for e in options.effects) or len(set(options.effects)) != len(options.effects):
        return "--effects must be distinct fractions in [0, 1), e.g. 0,0.02,0.05,0.10"
    unknown = [a for a in options.ablations if a not in ABLATIONS]
    if unknown or len(set(options.ablations)) != len(options.ablations):
        return f"--ablate must be distinct names from {', '.join(ABLATIONS)}, e.g. pinning,warmup"
    if not options.kernel.is_file():
        return f"--kernel {options.kernel}: no such file"
    return None


def _ablations(samples: SpeedSamples, sessions: int, trim: float) -> dict[str, Estimate]:
    """Speedup estimates from the same raw timings with parts of the method taken away."""
    combos = list(samples.ns[-1])
    blocks = log_ratio_blocks(samples, combos)

    def block_estimate(use: Sequence[Sequence[np.ndarray]], t: float) -> Estimate:
        lo, hi = stats.block_bootstrap_ci(use, t)
        return Estimate(math.exp(float(np.mean(stats.block_log_speedups(use, t)))), lo, hi)

    def iid_estimate(use: Sequence[Sequence[np.ndarray]]) -> Estimate:
        ratios = [np.exp(np.concatenate([b[c] for b in use])) for c in range(len(combos))]
        lo, hi = stats.bootstrap_geomean_ci(ratios)
        return Estimate(stats.geomean([stats.geomean(r) for r in ratios]), lo, hi)

    return {"paired-untrimmed": block_estimate(blocks, 0.0),
            # every pair an independent sample: what a per-query bootstrap claims
            "paired-iid-pairs": iid_estimate(blocks),
            # one worker pair's per-query CI: the SPEC's original measurement
            "one-worker-pair": iid_estimate(blocks[:sessions])}


def _counter_ratio(result: TrialResult, name: str) -> float | None:
    inc = getattr(result, f"incumbent_geomean_{name}_per_query")
    cand = getattr(result, f"geomean_{name}_per_query")
    return inc / cand if inc and cand else None


def run_one(options: CalibrationOptions, effect: float, round_: int, variant: str = FULL) -> TrialRecord:
    """One paired trial of the kernel against itself with ``effect`` injected into the incumbent
    and, unless ``variant`` is FULL, that measurement feature switched off."""
    captured: list[SpeedSamples] = []
    trial_options = TrialOptions(kernel=options.kernel, against=options.kernel, budget_seconds=options.budget_seconds,
                                 replicates=options.replicates, sessions=options.sessions,
                                 queries_per_combo=options.queries_per_combo, sandbox=options.sandbox,
                                 injected_slowdown=effect, ablated=() if variant == FULL else (variant,))
    plan = options.target.plan()
    result = run_trial(plan, trial_options, captured.append)
    record = TrialRecord(effect, round_, result.total_seconds or 0.0, result.exit_code, result.failure,
                         result=json.loads(result.to_json()), variant=variant)
    if not result.ok or not captured:
        return record
    assert result.speedup_ci_90pct is not None and result.speedup_geomean is not None
    record.estimates["paired"] = Estimate(result.speedup_geomean, *result.speedup_ci_90pct)
    record.estimates.update(_ablations(captured[0], result.sessions, plan.trim))
    record.cycles_ratio = _counter_ratio(result, "cycles")
    record.instructions_ratio = _counter_ratio(result, "instructions")
    return record


def as_judged(rec: TrialRecord) -> TrialResult | None:
    """The record's result as the daemon's gate would see the same timings: the calibration flags
    cleared (the gate refuses any trial that carries one). None for a failed trial."""
    if rec.exit_code != 0 or rec.result is None or "paired" not in rec.estimates:
        return None
    return dataclasses.replace(parse_json(json.dumps(rec.result)), injected_slowdown=0.0, ablated=[])


def keep_decisions(records: Sequence[TrialRecord], judged: Sequence[TrialResult | None], config: gate.GateConfig,
                   budget: float) -> dict[int, dict[str, bool]]:
    """Per record index and method: would the gate keep? ``paired`` and ``unpaired`` use the
    daemon's gate (all rules); the others the same CI rule (lower bound > 1 + min_effect)."""
    ok = [i for i, res in enumerate(judged) if res is not None]
    out: dict[int, dict[str, bool]] = {}
    for effect in sorted({records[i].effect for i in ok}):
        same = [i for i in ok if records[i].effect == effect]
        for k, i in enumerate(same):
            res = judged[i]
            assert res is not None
            decisions = {"paired": gate.judge(res, config, budget).keep}
            # The best's stored timing: another trial of this effect, i.e. measured at another time.
            other = judged[same[(k + 1) % len(same)]] if len(same) > 1 else None
            best = gate.incumbent_timing(other) if other is not None else None
            decisions["unpaired"] = (best is not None and gate.judge(
                res, dataclasses.replace(config, rule="unpaired"), budget, best=best).keep)
            for method in METHODS[2:]:
                est = records[i].estimates.get(method)
                decisions[method] = est is not None and est.lo > 1.0 + config.min_effect
            out[i] = decisions
    return out


def _wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """95% upper bound of a rate from k of n: 0 of 100 still allows up to ~3.7%."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z * z / n))


def summarise(records: Sequence[TrialRecord], options: CalibrationOptions) -> dict[str, Any]:
    """Per effect and method: keep rate, spread, CI widths; the min_effect sweep; the goals. All
    from the full trials; with ablations, ``variants`` holds the per-effect table and the sweep
    of every variant (the full one included)."""
    by_variant: dict[str, dict[str, Any]] = {}
    for variant in options.variants:
        mine = [r for r in records if r.variant == variant]
        judged = [as_judged(r) for r in mine]
        by_variant[variant] = {"per_effect": _per_effect(mine, judged, options),
                               "sweep": _sweep(mine, judged, options, options.budget_seconds)}
    full = by_variant[FULL]
    out = {**full, "recommendation": _recommend(full["sweep"], options.effects),
           "goals": _goals(full["per_effect"], [r for r in records if r.variant == FULL])}
    if options.ablations:
        out["variants"] = by_variant
    return out


def _per_effect(records: Sequence[TrialRecord], judged: Sequence[TrialResult | None],
                options: CalibrationOptions) -> dict[str, Any]:
    decisions = keep_decisions(records, judged, options.gate, options.budget_seconds)
    per_effect: dict[str, Any] = {}
    for effect in options.effects:
        idx = [i for i, r in enumerate(records) if r.effect == effect]
        done = [i for i in idx if i in decisions]
        seconds = [records[i].seconds for i in idx]
        row: dict[str, Any] = {"trials": len(idx), "failed": len(idx) - len(done),
                               "trial_seconds_median": _q(seconds, 0.5), "trial_seconds_max": max(seconds, default=None),
                               "methods": {}}
        for method in METHODS:
            keeps = sum(decisions[i][method] for i in done)
            m: dict[str, Any] = {"keeps": keeps, "keep_rate": keeps / len(done) if done else None,
                                 "keep_rate_upper95": _wilson_upper(keeps, len(done))}
            est = [records[i].estimates[method] for i in done if method in records[i].estimates]
            if est:
                s = np.array([e.speedup for e in est])
                half = np.array([(e.hi - e.lo) / 2 for e in est])
                m.update(speedup_median=float(np.median(s)), log_sd_pct=float(np.std(np.log(s)) * 100),
                         max_abs_deviation_pct=float(np.max(np.abs(s - np.median(s))) * 100),
                         ci_half_width_median_pct=float(np.median(half) * 100),
                         ci_half_width_max_pct=float(np.max(half) * 100))
                if effect == 0.0:
                    m["ci_covers_1"] = float(np.mean([e.lo <= 1.0 <= e.hi for e in est]))
            row["methods"][method] = m
        for name in ("cycles_ratio", "instructions_ratio"):
            vals = [getattr(records[i], name) for i in done if getattr(records[i], name)]
            row[name] = ({"median": float(np.median(vals)), "log_sd_pct": float(np.std(np.log(vals)) * 100)}
                         if vals else None)
        per_effect[f"{effect:g}"] = row
    return per_effect


def _q(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def _sweep(records: Sequence[TrialRecord], judged: Sequence[TrialResult | None], options: CalibrationOptions,
           budget: float) -> dict[str, Any]:
    """Keep rates of the paired and unpaired gates over a grid of min_effect values."""
    out: dict[str, Any] = {}
    for m in THRESHOLDS:
        config = dataclasses.replace(options.gate, min_effect=m)
        decisions = keep_decisions(records, judged, config, budget)
        out[f"{m:g}"] = {method: {f"{e:g}": _rate([decisions[i][method] for i in decisions if records[i].effect == e])
                                  for e in options.effects} for method in ("paired", "unpaired")}
    return out


def _rate(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _recommend(sweep: dict[str, Any], effects: Sequence[float]) -> dict[str, Any]:
    """The smallest min_effect whose false-keep rate is <= 1%, and the smallest tested effect it
    then detects >= 95% of the time."""
    for m, by_method in sweep.items():
        rates = by_method["paired"]
        if rates["0"] is not None and rates["0"] <= MAX_FALSE_KEEP:
            detected = [e for e in sorted(effects) if e > 0 and (rates[f"{e:g}"] or 0.0) >= MIN_POWER]
            return {"min_effect": float(m), "false_keep_rate": rates["0"],
                    "smallest_effect_detected_95pct": detected[0] if detected else None}
    return {"min_effect": None, "false_keep_rate": None, "smallest_effect_detected_95pct": None}


def _goals(per_effect: dict[str, Any], records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """The issue's goals for the paired gate at the configured min_effect, each pass/fail."""
    def rate(effect: str) -> float | None:
        row = per_effect.get(effect)
        return row["methods"]["paired"]["keep_rate"] if row else None

    goals = []
    for name, effect, op, bound in (("false-keep rate (A/A)", "0", "<=", 0.01),
                                    ("detection power at 5%", "0.05", ">=", 0.95),
                                    ("detection power at 10%", "0.1", ">=", 0.99)):
        value = rate(effect)
        met = value is not None and (value <= bound if op == "<=" else value >= bound)
        goals.append({"goal": f"{name} {op} {bound:.0%}", "value": value, "met": met})
    slowest = max((r.seconds for r in records), default=None)
    goals.append({"goal": "every trial <= 10 s", "value": slowest, "met": slowest is not None and slowest <= 10.0})
    return goals


def markdown(data: dict[str, Any]) -> str:
    """The short human summary written next to the JSON."""
    s, opts = data["summary"], data["options"]
    lines = [f"# Calibration of {opts['target']} ({data['started_at']})", "",
             f"Kernel `{opts['kernel']}` against itself; {opts['trials']} rounds of effects "
             f"{', '.join(f'{e:g}' for e in opts['effects'])}"
             + (f" (also with {', '.join(opts['ablations'])} off, one at a time)" if opts.get("ablations") else "")
             + f"; gate min_effect {opts['gate']['min_effect']:g}; "
             f"machine: {data['machine']}.", f"Status: {'complete' if data['complete'] else 'INCOMPLETE'}; "
             f"counters: {data.get('counters') or 'n/a'}.", "",
             "## Goals (paired gate, configured min_effect)", "", "| goal | value | met |", "|---|---|---|"]
    for g in s["goals"]:
        value = g["value"]
        shown = "n/a" if value is None else (f"{value:.1%}" if "rate" in g["goal"] or "power" in g["goal"]
                                             else f"{value:.2f} s")
        lines.append(f"| {g['goal']} | {shown} | {'yes' if g['met'] else 'NO'} |")
    lines += ["", "## Keep rate by method and injected effect", "",
              "| method | " + " | ".join(f"effect {e}" for e in s["per_effect"]) + " |",
              "|---|" + "---|" * len(s["per_effect"])]
    for method in METHODS:
        cells = []
        for row in s["per_effect"].values():
            m = row["methods"][method]
            cells.append("n/a" if m["keep_rate"] is None else f"{m['keep_rate']:.1%} ({m['keeps']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Noise (A/A) and precision", "",
              "| method | median speedup | sd of log (%) | max deviation from median (%) | CI half-width median / max (%) "
              "| CI covers 1.0 |", "|---|---|---|---|---|---|"]
    aa = s["per_effect"].get("0", {}).get("methods", {})
    for method in METHODS:
        m = aa.get(method, {})
        if "speedup_median" not in m:
            continue
        lines.append(f"| {method} | {m['speedup_median']:.4f} | {m['log_sd_pct']:.2f} | {m['max_abs_deviation_pct']:.2f} "
                     f"| {m['ci_half_width_median_pct']:.2f} / {m['ci_half_width_max_pct']:.2f} "
                     f"| {m.get('ci_covers_1', float('nan')):.0%} |")
    lines += ["", "Measured effect of each injection (median paired speedup; the spin is a fraction of the "
              "arm's previous call as the runner timed it, so it should match the nominal effect):", ""]
    for e, row in s["per_effect"].items():
        med = row["methods"]["paired"].get("speedup_median")
        lines.append(f"- effect {e}: paired {med:.4f}" if med else f"- effect {e}: no passing trial")
        for name in ("cycles", "instructions"):
            ratio = row.get(f"{name}_ratio")
            if ratio:
                lines[-1] += f"; {name} ratio {ratio['median']:.4f} (sd of log {ratio['log_sd_pct']:.2f}%)"
        lines[-1] += (f"; trial seconds median {row['trial_seconds_median']:.2f}, max {row['trial_seconds_max']:.2f}"
                      if row["trial_seconds_max"] is not None else "")
    lines += _variants_markdown(s.get("variants") or {})
    rec = s["recommendation"]
    lines += ["", "## Recommendation", ""]
    if rec["min_effect"] is None:
        lines.append("No min_effect on the grid keeps the A/A false-keep rate at or below 1%: fix the machine's "
                     "noise (see docs/robustness.md) before trusting keeps.")
    else:
        detected = rec["smallest_effect_detected_95pct"]
        lines.append(f"`min_effect: {rec['min_effect']:g}` (smallest on the grid with A/A false keeps "
                     f"{rec['false_keep_rate']:.1%} <= 1%); with it the smallest tested effect detected >= 95% "
                     f"of the time is {'none' if detected is None else f'{detected:g}'}.")
    lines += ["", "## min_effect sweep (keep rate, paired / unpaired)", "",
              "| min_effect | " + " | ".join(f"effect {e}" for e in s["per_effect"]) + " |",
              "|---|" + "---|" * len(s["per_effect"])]
    for m, by in s["sweep"].items():
        cells = [f"{_pct(by['paired'][e])} / {_pct(by['unpaired'][e])}" for e in s["per_effect"]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _variants_markdown(variants: dict[str, Any]) -> list[str]:
    """The ablation table: the daemon's paired gate on trials with one measurement feature off."""
    if not variants:
        return []
    effects = list(next(iter(variants.values()))["per_effect"])
    lines = ["", "## Measurement features switched off (paired gate)", "",
             "Each row is its own set of trials, interleaved with the full ones; `full` is the daemon's trial. "
             "Keeps are judged at the configured min_effect; a bias shows in the A/A median and in the A/A keeps "
             "once that margin is gone (min_effect 0).", "",
             "| variant | A/A median | A/A sd of log (%) | max deviation from median (%) | CI half-width median (%) | "
             "A/A keeps at min_effect 0 | " + " | ".join(f"keeps at effect {e}" for e in effects) + " | trial s median |",
             "|---|---|---|---|---|---|" + "---|" * len(effects) + "---|"]
    for variant, both in variants.items():
        rows = both["per_effect"]
        aa = rows.get("0", {}).get("methods", {}).get("paired", {})
        cells = [f"{aa['speedup_median']:.4f}", f"{aa['log_sd_pct']:.2f}", f"{aa['max_abs_deviation_pct']:.2f}",
                 f"{aa['ci_half_width_median_pct']:.2f}"] if "speedup_median" in aa else ["n/a"] * 4
        cells.append(_pct(both["sweep"]["0"]["paired"]["0"]))
        for e in effects:
            m = rows[e]["methods"]["paired"]
            cells.append("n/a" if m["keep_rate"] is None else f"{m['keep_rate']:.0%} ({m['keeps']}/{rows[e]['trials']})")
        median = rows[effects[0]]["trial_seconds_median"]
        cells.append("n/a" if median is None else f"{median:.1f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def schedule(options: CalibrationOptions, seed: int) -> list[tuple[int, float, str]]:
    """(round, effect, variant) in run order: every round runs each effect under each variant
    once, in a random order, so the machine's drift hits every cell alike."""
    rng = np.random.default_rng(seed)
    cells = [(e, v) for v in options.variants for e in options.effects]
    return [(r, *cells[i]) for r in range(options.trials) for i in rng.permutation(len(cells))]


def calibrate(options: CalibrationOptions, out_dir: Path, machine: str,
              progress: Callable[[int, int, TrialRecord], None] = lambda *_: None) -> dict[str, Any]:
    """Run the whole calibration. Each trial is appended to ``trials.jsonl`` as it ends; the
    summary (``calibration.json``, ``summary.md``) is written at the end, and also when
    interrupted (marked incomplete; the KeyboardInterrupt then propagates)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = schedule(options, secrets.randbits(32))
    records: list[TrialRecord] = []
    data: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
        "complete": False, "options": {**{k: v for k, v in asdict(options).items() if k != "target"},
                                       "target": options.target.name, "kernel": str(options.kernel)},
        "counters": None, "summary": None}
    started = time.monotonic()
    try:
        with open(out_dir / "trials.jsonl", "a") as log:
            for k, (round_, effect, variant) in enumerate(plan):
                rec = run_one(options, effect, round_, variant)
                records.append(rec)
                log.write(json.dumps(asdict(rec), default=str) + "\n")
                log.flush()
                if rec.result and rec.result.get("counters"):
                    data["counters"] = rec.result["counters"]
                progress(k + 1, len(plan), rec)
        data["complete"] = True
    finally:
        data["trials_run"] = len(records)
        data["wall_seconds"] = round(time.monotonic() - started, 1)
        data["summary"] = summarise(records, options)
        write_atomic(out_dir / "calibration.json", json.dumps(data, indent=1, default=str) + "\n")
        write_atomic(out_dir / "summary.md", markdown(data))
    return data
