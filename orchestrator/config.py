"""Run configuration: every option of `orchestrator loop`, from YAML and the command line.

A YAML file (``--config run.yaml``) may set any field below; flags override it. Unknown keys,
wrong types and impossible values are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.gate import RULES, GateConfig


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the fix."""


@dataclass(frozen=True)
class RunConfig:
    target: str = "pq-l2"
    model: str = "offline"
    max_attempts: int | None = None
    max_hours: float | None = None
    max_cost_usd: float | None = None
    stop_after_rejects: int | None = None      # stop after this many discards in a row
    stop_after_provider_errors: int = 5        # the API keeps failing after its own retries
    repair_turns: int = 2                      # extra turns to fix an edit that does not apply
    trial_budget_seconds: float = 120.0
    trial_replicates: int | None = None        # trial precision knobs; None = the target's defaults
    trial_sessions: int | None = None
    trial_queries: int | None = None
    history_rows: int = 40                     # earlier attempts shown in the prompt
    base_url: str | None = None                # e.g. a local vLLM/Ollama server for openai-compatible:<id>
    provider_timeout_seconds: float = 300.0    # per call: a stalled connection can't freeze the daemon
    provider_retries: int = 5                  # retries after the first call (429, 5xx, timeouts)
    provider_retry_wait_seconds: float = 600.0 # total sleep across one call's retries
    models: dict[str, Any] | None = None       # overrides of orchestrator/models.yaml (aliases, prices, ...)
    unsafe_no_sandbox: bool = False            # run kernels without the sandbox: the user's explicit choice
    # A trial that is not a keep and during which other work took more than this share of the
    # worker core is measured again once the machine is quiet (see docs/robustness.md).
    contention_threshold: float = 0.15
    contention_retries: int = 1
    quiet_wait_seconds: float = 300.0
    # After each keep, the new best against the run's original baseline in a trial of its own
    # (reported, not gated): the keeping trial was picked for being fast, so this is the unbiased
    # figure. Off, a keep's speedup vs the baseline is chained from paired speedups (marked ~).
    cumulative: bool = True
    # After each keep, where Lance can run the target's op: the new best against Lance itself
    # (vs_lance, with a CI; reported, not gated), over this many fresh worker pairs.
    vs_lance: bool = True
    lance_replicates: int = 2
    # The current best kernel's time split by stage (a profile trial at the run's start and after
    # each keep, a few seconds each), shown to the model.
    profile: bool = True
    gate: GateConfig = field(default_factory=GateConfig)


_POSITIVE = {"max_attempts", "max_hours", "max_cost_usd", "stop_after_rejects", "trial_budget_seconds",
             "stop_after_provider_errors", "trial_replicates", "trial_sessions", "trial_queries",
             "provider_timeout_seconds", "provider_retry_wait_seconds",
             "history_rows", "worst_combo_min", "tradeoff_ratio", "contention_threshold", "lance_replicates"}
_NON_NEGATIVE = {"repair_turns", "min_effect", "provider_retries", "contention_retries", "quiet_wait_seconds"}


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    hint = typing.get_type_hints(RunConfig).get(key) if annotation is None else annotation
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if typing.get_origin(kind) is dict and isinstance(value, dict):
            return value
        if kind is bool and isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind in (int, str) and isinstance(value, kind) and not isinstance(value, bool):
            return value
    names = " or ".join("null" if k is type(None) else "mapping" if typing.get_origin(k) is dict else k.__name__
                        for k in allowed)
    raise ConfigError(f"{key}: expected {names}, got {value!r}")


def _check_value(key: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{key}: must be a number, got nan")   # nan compares false: it would disable a rule
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key}: must be zero or more, got {value!r}")
    if key == "rule" and value not in RULES:
        raise ConfigError(f"gate.rule: must be one of {', '.join(RULES)}, got {value!r}")


def _apply(base: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(type(base))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown key (known: {', '.join(sorted(known))})")
        if key == "gate" and isinstance(value, str):
            value = {"rule": value}                  # `gate: unpaired` is short for {rule: unpaired}
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping")
            changes[key] = _apply(getattr(base, key), value, f"{where}{key}.")
            continue
        value = _check_type(f"{where}{key}", value, hints[key])
        _check_value(key, value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


def load(path: Path | None, overrides: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """``base`` (defaults, or a resumed run's stored config), then the config file (if any), then
    command-line ``overrides`` (None values ignored)."""
    config = base or RunConfig()
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(f"config {path} is not valid YAML{where} ({problem}); fix that line "
                              "(indentation, a missing ':' or an unclosed quote)") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: expected a mapping of keys to values at the top level")
        config = _apply(config, data, "")
    flags = {k: v for k, v in overrides.items() if v is not None}
    gate_flags = {k: flags.pop(k) for k in [k for k in flags if k in {f.name for f in dataclasses.fields(GateConfig)}]}
    if gate_flags:
        flags["gate"] = gate_flags
    return _apply(config, flags, "")


def overlay(base: RunConfig, values: dict[str, Any], where: str = "") -> RunConfig:
    """``base`` with the keys of a config mapping set (validated as in a file; errors start with ``where``)."""
    return _apply(base, values, where)


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A config stored by ``to_dict`` (run.json), validated like a file."""
    return _apply(RunConfig(), data, "")
