"""orchestrator.config: defaults, YAML file, command-line overrides, strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, RunConfig, from_dict, load, to_dict
from orchestrator.gate import GateConfig


def yaml_file(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    c = load(None, {})
    assert c == RunConfig()
    assert c.target == "pq-l2" and c.model == "offline"
    assert c.max_attempts is None and c.max_hours is None and c.max_cost_usd is None
    assert c.stop_after_rejects is None and c.stop_after_provider_errors == 5
    assert c.repair_turns == 2 and c.trial_budget_seconds == 120.0 and c.history_rows == 40
    assert c.gate == GateConfig(min_effect=0.01, worst_combo_min=0.95, tradeoff_ratio=10.0)
    assert c.cumulative and c.vs_lance and c.profile          # every keep is re-measured by default
    assert not load(yaml_file(tmp_path, "cumulative: false\n"), {}).cumulative


def test_yaml_values(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "model: claude-x\nmax_attempts: 12\nmax_hours: 1.5\n"
                               "trial_budget_seconds: 60\nrepair_turns: 0\n")
    c = load(path, {})
    assert c.model == "claude-x" and c.max_attempts == 12 and c.max_hours == 1.5 and c.repair_turns == 0
    # An integer for a float field is accepted and stored as a float.
    assert c.trial_budget_seconds == 60.0 and isinstance(c.trial_budget_seconds, float)
    assert c.target == "pq-l2" and c.history_rows == 40            # untouched keys keep defaults


def test_overrides_beat_the_file_and_none_is_ignored(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "model: from-file\nmax_attempts: 12\nhistory_rows: 7\n")
    c = load(path, {"max_attempts": 3, "model": None, "history_rows": None, "max_hours": None})
    assert c.max_attempts == 3
    assert c.model == "from-file" and c.history_rows == 7 and c.max_hours is None


def test_nested_gate_mapping(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "gate:\n  min_effect: 0.05\n  tradeoff_ratio: 4\n")
    c = load(path, {})
    assert c.gate == GateConfig(min_effect=0.05, worst_combo_min=0.95, tradeoff_ratio=4.0)


def test_gate_flags_as_top_level_overrides_land_in_gate(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "gate:\n  worst_combo_min: 0.9\n  tradeoff_ratio: 5\n")
    c = load(path, {"min_effect": 0.03, "tradeoff_ratio": 8, "worst_combo_min": None})
    assert c.gate == GateConfig(min_effect=0.03, worst_combo_min=0.9, tradeoff_ratio=8.0)
    assert not hasattr(c, "min_effect")
    assert load(None, {"min_effect": 0.2}).gate.min_effect == 0.2


@pytest.mark.parametrize("text,key", [
    ("bogus: 1\n", "bogus"),
    ("gate:\n  bogus: 1\n", "gate.bogus"),
    ("gate:\n  max_attempts: 1\n", "gate.max_attempts"),
])
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: unknown key"):
        load(yaml_file(tmp_path, text), {})


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match="^no_such_flag: unknown key"):
        load(None, {"no_such_flag": 1})


@pytest.mark.parametrize("text,key", [
    ("max_attempts: '5'\n", "max_attempts"),        # string for int
    ("max_attempts: 2.5\n", "max_attempts"),        # float for int
    ("max_attempts: 2.0\n", "max_attempts"),        # float for int, even when integral
    ("max_attempts: true\n", "max_attempts"),       # bool for int
    ("history_rows: [1, 2]\n", "history_rows"),     # list
    ("repair_turns: {a: 1}\n", "repair_turns"),     # mapping
    ("repair_turns: null\n", "repair_turns"),       # null where None is not allowed
    ("trial_budget_seconds: fast\n", "trial_budget_seconds"),
    ("trial_budget_seconds: true\n", "trial_budget_seconds"),
    ("model: 3\n", "model"),
    ("gate:\n  min_effect: high\n", "gate.min_effect"),
    ("gate:\n  tradeoff_ratio: [10]\n", "gate.tradeoff_ratio"),
])
def test_wrong_types_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        load(yaml_file(tmp_path, text), {})


def test_wrong_type_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match="^max_attempts: expected int or null, got '7'"):
        load(None, {"max_attempts": "7"})


def test_gate_must_be_a_mapping_or_a_rule_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^gate: expected a mapping"):
        load(yaml_file(tmp_path, "gate: 0.05\n"), {})
    with pytest.raises(ConfigError, match="gate.rule: must be one of paired, unpaired, got 'fast'"):
        load(yaml_file(tmp_path, "gate: fast\n"), {})
    with pytest.raises(ConfigError, match="gate.rule"):
        load(yaml_file(tmp_path, "gate: {rule: absolute}\n"), {})


def test_gate_unpaired_shorthand(tmp_path: Path) -> None:
    assert load(yaml_file(tmp_path, "gate: unpaired\n"), {}).gate == GateConfig(rule="unpaired")
    both = load(yaml_file(tmp_path, "gate: {rule: unpaired, min_effect: 0.02}\n", "b.yaml"), {})
    assert both.gate == GateConfig(rule="unpaired", min_effect=0.02)
    assert from_dict(to_dict(both)) == both


@pytest.mark.parametrize("text,key", [
    ("max_attempts: 0\n", "max_attempts"),
    ("max_attempts: -3\n", "max_attempts"),
    ("max_hours: 0\n", "max_hours"),
    ("max_cost_usd: -1.0\n", "max_cost_usd"),
    ("stop_after_rejects: 0\n", "stop_after_rejects"),
    ("stop_after_provider_errors: 0\n", "stop_after_provider_errors"),
    ("trial_budget_seconds: 0\n", "trial_budget_seconds"),
    ("trial_replicates: 0\n", "trial_replicates"),
    ("trial_sessions: -1\n", "trial_sessions"),
    ("trial_queries: 0\n", "trial_queries"),
    ("history_rows: 0\n", "history_rows"),
    ("gate:\n  worst_combo_min: 0\n", "worst_combo_min"),
    ("gate:\n  tradeoff_ratio: -2\n", "tradeoff_ratio"),
])
def test_non_positive_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: must be positive"):
        load(yaml_file(tmp_path, text), {})


def test_min_effect_zero_allowed_negative_rejected(tmp_path: Path) -> None:
    assert load(yaml_file(tmp_path, "gate:\n  min_effect: 0\n"), {}).gate.min_effect == 0.0
    with pytest.raises(ConfigError, match="min_effect: must be zero or more"):
        load(yaml_file(tmp_path, "gate:\n  min_effect: -0.01\n"), {})
    with pytest.raises(ConfigError, match="min_effect: must be zero or more"):
        load(None, {"min_effect": -0.5})


def test_repair_turns_zero_allowed_negative_rejected(tmp_path: Path) -> None:
    assert load(yaml_file(tmp_path, "repair_turns: 0\n"), {}).repair_turns == 0
    with pytest.raises(ConfigError, match="repair_turns: must be zero or more"):
        load(yaml_file(tmp_path, "repair_turns: -1\n"), {})


def test_positive_small_values_allowed(tmp_path: Path) -> None:
    c = load(yaml_file(tmp_path, "max_attempts: 1\nmax_hours: 0.01\ngate:\n  worst_combo_min: 0.001\n"), {})
    assert c.max_attempts == 1 and c.max_hours == 0.01 and c.gate.worst_combo_min == 0.001


@pytest.mark.parametrize("text", ["gate:\n  worst_combo_min: .nan\n", "gate:\n  tradeoff_ratio: .nan\n",
                                  "gate:\n  min_effect: .nan\n", "trial_budget_seconds: .nan\n"])
def test_nan_is_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(yaml_file(tmp_path, text), {})


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load(yaml_file(tmp_path, ""), {}) == RunConfig()
    assert load(yaml_file(tmp_path, "# only a comment\n"), {}) == RunConfig()


@pytest.mark.parametrize("text", ["- max_attempts\n- 3\n", "42\n", "just a string\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    path = yaml_file(tmp_path, text)
    with pytest.raises(ConfigError, match="expected a mapping of keys to values") as exc:
        load(path, {})
    assert str(path) in str(exc.value)


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = yaml_file(tmp_path, "max_attempts: [1, 2\nmodel: x\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as exc:
        load(path, {})
    assert str(path) in str(exc.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read config") as exc:
        load(path, {})
    assert str(path) in str(exc.value)


def test_directory_instead_of_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "adir"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read config") as exc:
        load(path, {})
    assert str(path) in str(exc.value)


def test_round_trip_through_dict(tmp_path: Path) -> None:
    c = load(yaml_file(tmp_path, "model: m\nmax_attempts: 4\nmax_cost_usd: 2.5\ntrial_queries: 9\n"
                                 "gate:\n  min_effect: 0.02\n"), {"stop_after_rejects": 6})
    d = to_dict(c)
    assert d["gate"] == {"rule": "paired", "min_effect": 0.02, "worst_combo_min": 0.95, "tradeoff_ratio": 10.0}
    assert d["max_attempts"] == 4 and d["stop_after_rejects"] == 6
    assert from_dict(d) == c
    assert from_dict(to_dict(RunConfig())) == RunConfig()


def test_from_dict_validates_like_a_file() -> None:
    d = to_dict(RunConfig())
    d["history_rows"] = -1
    with pytest.raises(ConfigError, match="history_rows: must be positive"):
        from_dict(d)
    with pytest.raises(ConfigError, match="extra: unknown key"):
        from_dict({**to_dict(RunConfig()), "extra": 1})


def test_base_values_kept_unless_overridden(tmp_path: Path) -> None:
    base = RunConfig(model="stored-model", max_attempts=50, history_rows=10,
                     gate=GateConfig(min_effect=0.04, worst_combo_min=0.9, tradeoff_ratio=3.0))
    assert load(None, {}, base=base) == base
    c = load(None, {"max_attempts": 60, "model": None, "min_effect": 0.02}, base=base)
    assert c.max_attempts == 60 and c.model == "stored-model" and c.history_rows == 10
    assert c.gate == GateConfig(min_effect=0.02, worst_combo_min=0.9, tradeoff_ratio=3.0)
    # A file applies on top of the base; the overrides on top of the file.
    path = yaml_file(tmp_path, "history_rows: 20\ngate:\n  tradeoff_ratio: 6\n")
    c = load(path, {"history_rows": 30}, base=base)
    assert c.history_rows == 30 and c.max_attempts == 50 and c.model == "stored-model"
    assert c.gate == GateConfig(min_effect=0.04, worst_combo_min=0.9, tradeoff_ratio=6.0)
