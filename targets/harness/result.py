"""The trial result: one dataclass, written as the human-readable result block and as JSON,
and parsed back from either by the same strict code (the runner writes, the daemon reads).

Parsing fails closed: an unknown, duplicated, missing or malformed field raises
``ResultParseError``; nothing is guessed or defaulted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

EXIT_OK, EXIT_INTERNAL, EXIT_INCORRECT, EXIT_TIMEOUT = 0, 1, 2, 3
FAILURE_KINDS = ("crash", "incorrect", "timeout", "internal")
MODES = ("single", "baseline", "paired", "profile")
STAGE_KINDS = ("fixed", "slope", "overhead")
BLOCK_FENCE = "---"


class ResultParseError(ValueError):
    """A result block or JSON document that does not follow the schema exactly."""


@dataclass(frozen=True)
class Measured:
    """A value attributed to one combo, e.g. the worst combo's ns/query."""

    value: float
    combo: str


@dataclass(frozen=True)
class Stage:
    """One stage of the op in a profile (``--mode profile``), as the slope method sees it."""

    kind: str          # fixed (the kernel's own intercept) | slope (scales with a factor) | overhead (the harness's)
    label: str         # what a human calls it, e.g. "per vector (distance pass)"
    factor: str        # the size a slope scales with, e.g. "num_vectors"; "" for the other kinds
    ns: float          # ns per unit of the factor; ns per call for the other kinds
    at: int            # the factor's value at the speed workload's size; 1 for the other kinds
    share: float       # of the op's modelled time at that size (negative parts, i.e. noise, count 0)


@dataclass(frozen=True)
class ShapeProfile:
    """One shape's op time split by stage: a least-squares fit of the op's median time at several
    sizes, ``t = intercept + sum(slope_f * f)``; the intercept is split into the harness's round
    trip of an empty request and the rest, the kernel's own fixed cost."""

    distribution: str              # the speed distribution it was timed on
    op_ns: float                   # the fit at the speed workload's size (what the shares divide)
    stages: list[Stage]            # one fixed, one slope per factor, one overhead, in that order
    points_ns: dict[str, float]    # the median ns at each timed size ("num_vectors=5000,k=10")
    r2: float                      # of the fit over those medians
    max_rel_residual: float        # the worst |fit - median| / median: a bad fit shows here


@dataclass
class TrialResult:
    # Identity and outcome.
    target: str
    mode: str                                 # single | baseline | paired
    exit_code: int
    correctness: str                          # pass | fail | not_run
    failure_kind: str | None = None           # crash | incorrect | timeout | internal
    failure: str | None = None                # evidence: case, index, values, or traceback
    correctness_cases: int = 0
    verified_calls: int = 0                   # timed calls whose outputs were re-checked
    # Machine and environment.
    arch: str = ""
    cpu: str = ""
    python: str = ""
    numpy: str = ""
    numba: str = ""
    threads: dict[str, str] = field(default_factory=dict)
    # What was measured.
    passes: int = 0
    replicates: int = 0                       # fresh worker pairs (paired mode)
    sessions: int = 0                         # timing blocks per pair
    queries_per_combo: int = 0
    query_seed: str = ""
    shapes_tested: list[str] = field(default_factory=list)
    distributions_tested: list[str] = field(default_factory=list)
    # Absolute timings of the kernel under test (the candidate in paired mode).
    geomean_ns_per_query: float | None = None
    geomean_ns_ci_90pct: tuple[float, float] | None = None
    median_ns_per_query: float | None = None
    geomean_cycles_per_query: float | None = None   # n/a without hardware counters
    geomean_instructions_per_query: float | None = None
    worst_ns_per_query: Measured | None = None
    best_ns_per_query: Measured | None = None
    per_combo_geomean_ns: dict[str, float] = field(default_factory=dict)
    # Paired mode: incumbent time / candidate time, > 1 means the candidate is faster.
    speedup_geomean: float | None = None
    speedup_ci_90pct: tuple[float, float] | None = None
    worst_combo_speedup: Measured | None = None
    per_combo_speedup: dict[str, float] = field(default_factory=dict)
    incumbent_per_combo_geomean_ns: dict[str, float] = field(default_factory=dict)
    # Paired mode: the incumbent arm's absolute timings (for the unpaired gate and for reports).
    incumbent_geomean_ns_per_query: float | None = None
    incumbent_geomean_ns_ci_90pct: tuple[float, float] | None = None
    incumbent_worst_ns_per_query: Measured | None = None
    incumbent_geomean_cycles_per_query: float | None = None
    incumbent_geomean_instructions_per_query: float | None = None
    counters: str = ""                        # what the counter fields hold, or once why they are n/a
    injected_slowdown: float = 0.0            # calibration only; the gate refuses any other value
    ablated: list[str] = field(default_factory=list)   # calibration only: measurement features off
    # Costs.
    jit_seconds: float | None = None
    fixture_seconds: float | None = None
    peak_mem_mb: float | None = None
    total_seconds: float | None = None
    kernel_sha256: str = ""
    against_sha256: str = ""
    # Set when the incumbent arm was Lance itself (--against-lance): pylance version, timer, CPU,
    # SIMD flags. Such a result is a vs_lance measurement, never a verdict: the gate refuses it.
    anchor: str = ""
    # Lance mode: per combo, the median round trip of an empty request, subtracted from the kernel's
    # times before they were compared with Lance's own timer.
    call_overhead_ns: dict[str, float] = field(default_factory=dict)
    sandbox: str = ""                         # the isolation workers ran under (or that it was off)
    # Other work on the trial's cores while it timed (targets.harness.contention): recorded, not gated.
    contention: dict[str, float] = field(default_factory=dict)
    # Profile mode: per shape, the op's time split by stage (the slope method; ``ShapeProfile``).
    profile: dict[str, ShapeProfile] = field(default_factory=dict)
    # HMAC-SHA256 of every other field, keyed by the per-trial token the caller passed: proves the
    # trial's own runner wrote this result and that nothing changed it since ("" without a token).
    result_mac: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def to_block(self) -> str:
        lines = [BLOCK_FENCE]
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _KINDS[f.name]
            if kind == "map":
                lines += [f"{f.name}[{k}]: {_fmt_scalar(v)}" for k, v in value.items()]
            elif kind == "profile":        # one shape a line, its profile as one line of JSON
                lines += [f"{f.name}[{k}]: {json.dumps(asdict(v))}" for k, v in value.items()]
            elif value is None:
                if f.name == "geomean_cycles_per_query" or f.name not in _OPTIONAL_ABSENT:
                    lines.append(f"{f.name}: n/a")
            else:
                lines.append(f"{f.name}: {_fmt(kind, value)}")
        lines.append(BLOCK_FENCE)
        return "\n".join(lines) + "\n"


# Field kinds drive both formatting and strict parsing.
_KINDS: dict[str, str] = {
    "target": "str", "mode": "str", "exit_code": "int", "correctness": "str",
    "failure_kind": "str?", "failure": "str?", "correctness_cases": "int", "verified_calls": "int",
    "arch": "str", "cpu": "str", "python": "str", "numpy": "str", "numba": "str",
    "threads": "map",
    "passes": "int", "replicates": "int", "sessions": "int", "queries_per_combo": "int", "query_seed": "str",
    "shapes_tested": "list", "distributions_tested": "list",
    "geomean_ns_per_query": "float?", "geomean_ns_ci_90pct": "interval?",
    "median_ns_per_query": "float?", "geomean_cycles_per_query": "float?",
    "geomean_instructions_per_query": "float?",
    "worst_ns_per_query": "measured?", "best_ns_per_query": "measured?",
    "per_combo_geomean_ns": "map",
    "speedup_geomean": "float?", "speedup_ci_90pct": "interval?", "worst_combo_speedup": "measured?",
    "per_combo_speedup": "map", "incumbent_per_combo_geomean_ns": "map",
    "incumbent_geomean_ns_per_query": "float?", "incumbent_geomean_ns_ci_90pct": "interval?",
    "incumbent_worst_ns_per_query": "measured?", "incumbent_geomean_cycles_per_query": "float?",
    "incumbent_geomean_instructions_per_query": "float?", "counters": "str", "injected_slowdown": "float",
    "ablated": "list",
    "jit_seconds": "float?", "fixture_seconds": "float?", "peak_mem_mb": "float?",
    "total_seconds": "float?", "kernel_sha256": "str", "against_sha256": "str", "anchor": "str", "call_overhead_ns": "map", "sandbox": "str",
    "contention": "map", "profile": "profile", "result_mac": "str",
}
# Fields of older results, ignored when read (ledgers keep loading across versions).
_RETIRED = {"trial_token"}
# Optional fields the block simply omits when absent (their absence is the information).
_OPTIONAL_ABSENT = {"failure_kind", "failure"}
# Map values: numbers everywhere but threads.
_MAP_STR = {"threads"}


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fmt(kind: str, value: Any) -> str:
    base = kind.rstrip("?")
    if base == "interval":
        return f"[{value[0]!r}, {value[1]!r}]"
    if base == "measured":
        return f"{value.value!r} ({value.combo})"
    if base == "list":
        return ",".join(value)
    if base == "str" and ("\n" in value or value.startswith('"') or value == "n/a"):
        return json.dumps(value)       # quoted whenever plain text would read back differently
    return _fmt_scalar(value)


_LINE = re.compile(r"^([a-z0-9_]+)(?:\[([^\]\n]+)\])?: (.*)$")
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"
_INTERVAL = re.compile(rf"^\[({_NUM}), ({_NUM})\]$")
_MEASURED = re.compile(rf"^({_NUM}) \(([^()\n]+)\)$")


def _parse_float(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ResultParseError(f"{key}: not a number: {text!r}") from exc
    if not math.isfinite(value):
        raise ResultParseError(f"{key}: not finite: {text!r}")
    return value


def _parse_value(kind: str, text: str, key: str) -> Any:
    base, optional = kind.rstrip("?"), kind.endswith("?")
    if optional and text == "n/a":
        return None
    if base == "str":
        if text.startswith('"'):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ResultParseError(f"{key}: bad quoted string") from exc
            if not isinstance(value, str):
                raise ResultParseError(f"{key}: bad quoted string")
            return value
        return text
    if base == "int":
        if not re.fullmatch(r"-?\d+", text):
            raise ResultParseError(f"{key}: not an integer: {text!r}")
        return int(text)
    if base == "float":
        return _parse_float(text, key)
    if base == "interval":
        m = _INTERVAL.match(text)
        if not m:
            raise ResultParseError(f"{key}: not an interval [lo, hi]: {text!r}")
        lo, hi = _parse_float(m.group(1), key), _parse_float(m.group(2), key)
        if lo > hi:
            raise ResultParseError(f"{key}: interval with lo > hi")
        return (lo, hi)
    if base == "measured":
        m = _MEASURED.match(text)
        if not m:
            raise ResultParseError(f"{key}: not 'value (combo)': {text!r}")
        return Measured(_parse_float(m.group(1), key), m.group(2))
    if base == "list":
        return [] if text == "" else text.split(",")
    raise AssertionError(kind)


def parse_block(text: str) -> TrialResult:
    """Parse a result block; the text must be exactly one fenced block."""
    lines = text.strip("\n").split("\n")
    if len(lines) < 2 or lines[0] != BLOCK_FENCE or lines[-1] != BLOCK_FENCE:
        raise ResultParseError("result block must start and end with a '---' line")
    values: dict[str, Any] = {}
    for line in lines[1:-1]:
        m = _LINE.match(line)
        if not m:
            raise ResultParseError(f"malformed line {line!r}")
        key, sub, raw = m.groups()
        kind = _KINDS.get(key)
        if kind is None:
            raise ResultParseError(f"unknown field {key!r}")
        if kind in ("map", "profile"):
            if sub is None:
                raise ResultParseError(f"{key}: expected {key}[name]: value")
            bucket = values.setdefault(key, {})
            if sub in bucket:
                raise ResultParseError(f"duplicate field {key}[{sub}]")
            if kind == "profile":
                try:
                    entry = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
                except ValueError as exc:
                    if isinstance(exc, ResultParseError):
                        raise
                    raise ResultParseError(f"{key}[{sub}]: not JSON: {exc}") from exc
                bucket[sub] = _shape_profile(entry, f"{key}[{sub}]")
            else:
                bucket[sub] = raw if key in _MAP_STR else _parse_float(raw, f"{key}[{sub}]")
            continue
        if sub is not None:
            raise ResultParseError(f"{key} takes no [name]")
        if key in values:
            raise ResultParseError(f"duplicate field {key!r}")
        values[key] = _parse_value(kind, raw, key)
    return _build(values, "block")


def parse_json(text: str) -> TrialResult:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:          # ResultParseError is a ValueError too: keep its message
        if isinstance(exc, ResultParseError):
            raise
        raise ResultParseError(f"result JSON does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ResultParseError("result JSON must be an object")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        kind = _KINDS.get(key)
        if kind is None:
            if key in _RETIRED:
                continue
            raise ResultParseError(f"unknown field {key!r}")
        values[key] = _from_json_value(kind, raw, key)
    return _build(values, "JSON")


def _mac(data: dict[str, Any], key: str) -> str:
    # Over the parsed JSON, canonically re-encoded: both sides see the very same numbers and text.
    body = json.dumps({k: v for k, v in data.items() if k != "result_mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def sign(result: TrialResult, key: str) -> str:
    """The result as JSON with its ``result_mac`` set (the runner's side)."""
    data = json.loads(result.to_json())
    data["result_mac"] = _mac(data, key) if key else ""
    return json.dumps(data, indent=2) + "\n"


def signed_by(text: str, key: str) -> bool:
    """Whether result JSON carries a valid MAC under ``key`` (the daemon's side)."""
    try:
        data = json.loads(text)
        return isinstance(data, dict) and hmac.compare_digest(str(data.get("result_mac", "")), _mac(data, key))
    except (ValueError, TypeError):
        return False


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ResultParseError(f"duplicate field {key!r}")
        out[key] = value
    return out


def _from_json_value(kind: str, raw: Any, key: str) -> Any:
    base, optional = kind.rstrip("?"), kind.endswith("?")
    if raw is None:
        if optional:
            return None
        raise ResultParseError(f"{key}: null is not allowed")
    if base == "map":
        if not isinstance(raw, dict):
            raise ResultParseError(f"{key}: expected an object")
        if key in _MAP_STR:
            if not all(isinstance(v, str) for v in raw.values()):
                raise ResultParseError(f"{key}: values must be strings")
            return dict(raw)
        return {str(k): _json_number(v, f"{key}[{k}]") for k, v in raw.items()}
    if base == "profile":
        if not isinstance(raw, dict):
            raise ResultParseError(f"{key}: expected an object")
        return {str(k): _shape_profile(v, f"{key}[{k}]") for k, v in raw.items()}
    if base == "str":
        if not isinstance(raw, str):
            raise ResultParseError(f"{key}: expected a string")
        return raw
    if base == "int":
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ResultParseError(f"{key}: expected an integer")
        return raw
    if base == "float":
        return _json_number(raw, key)
    if base == "interval":
        if not isinstance(raw, list) or len(raw) != 2:
            raise ResultParseError(f"{key}: expected [lo, hi]")
        lo, hi = _json_number(raw[0], key), _json_number(raw[1], key)
        if lo > hi:
            raise ResultParseError(f"{key}: interval with lo > hi")
        return (lo, hi)
    if base == "measured":
        if not isinstance(raw, dict) or set(raw) != {"value", "combo"} or not isinstance(raw["combo"], str):
            raise ResultParseError(f"{key}: expected {{value, combo}}")
        return Measured(_json_number(raw["value"], key), raw["combo"])
    if base == "list":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ResultParseError(f"{key}: expected a list of strings")
        return list(raw)
    raise AssertionError(kind)


def _json_number(raw: Any, key: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ResultParseError(f"{key}: expected a finite number")
    return float(raw)


def _object(raw: Any, keys: tuple[str, ...], key: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) != set(keys):
        raise ResultParseError(f"{key}: expected an object with exactly {', '.join(keys)}")
    return raw


def _text(raw: Any, key: str) -> str:
    if not isinstance(raw, str):
        raise ResultParseError(f"{key}: expected a string")
    return raw


def _stage(raw: Any, key: str) -> Stage:
    obj = _object(raw, tuple(f.name for f in fields(Stage)), key)
    kind, factor = _text(obj["kind"], f"{key}.kind"), _text(obj["factor"], f"{key}.factor")
    if kind not in STAGE_KINDS:
        raise ResultParseError(f"{key}.kind: {kind!r} is not one of {', '.join(STAGE_KINDS)}")
    if (kind == "slope") != (factor != ""):
        raise ResultParseError(f"{key}: a slope names its factor, and only a slope does")
    at = obj["at"]
    if isinstance(at, bool) or not isinstance(at, int) or at < 1 or (kind != "slope" and at != 1):
        raise ResultParseError(f"{key}.at: expected a positive integer (1 unless a slope)")
    return Stage(kind=kind, label=_text(obj["label"], f"{key}.label"), factor=factor,
                 ns=_json_number(obj["ns"], f"{key}.ns"), at=at, share=_json_number(obj["share"], f"{key}.share"))


def _shape_profile(raw: Any, key: str) -> ShapeProfile:
    obj = _object(raw, tuple(f.name for f in fields(ShapeProfile)), key)
    if not isinstance(obj["stages"], list) or not isinstance(obj["points_ns"], dict):
        raise ResultParseError(f"{key}: stages must be a list and points_ns an object")
    stages = [_stage(s, f"{key}.stages[{i}]") for i, s in enumerate(obj["stages"])]
    kinds = [s.kind for s in stages]
    if len(kinds) < 3 or kinds[0] != "fixed" or kinds[-1] != "overhead" or set(kinds[1:-1]) != {"slope"}:
        raise ResultParseError(f"{key}.stages: expected fixed, then one slope per factor, then overhead")
    profile = ShapeProfile(distribution=_text(obj["distribution"], f"{key}.distribution"),
                           op_ns=_json_number(obj["op_ns"], f"{key}.op_ns"), stages=stages,
                           points_ns={str(k): _json_number(v, f"{key}.points_ns[{k}]")
                                      for k, v in obj["points_ns"].items()},
                           r2=_json_number(obj["r2"], f"{key}.r2"),
                           max_rel_residual=_json_number(obj["max_rel_residual"], f"{key}.max_rel_residual"))
    if len(profile.points_ns) <= len(stages) - 2 or profile.max_rel_residual < 0:
        raise ResultParseError(f"{key}: fewer timed sizes than fitted terms, or a negative residual")
    return profile


_REQUIRED_ALWAYS = ("target", "mode", "exit_code", "correctness")
_REQUIRED_OK = ("correctness_cases", "passes", "queries_per_combo", "shapes_tested",
                "distributions_tested", "geomean_ns_per_query", "geomean_ns_ci_90pct",
                "median_ns_per_query", "worst_ns_per_query", "best_ns_per_query", "total_seconds",
                "peak_mem_mb")
_REQUIRED_PROFILE = ("correctness_cases", "passes", "queries_per_combo", "shapes_tested", "distributions_tested",
                     "total_seconds", "peak_mem_mb", "profile")
_REQUIRED_PAIRED = ("speedup_geomean", "speedup_ci_90pct", "worst_combo_speedup", "jit_seconds",
                    "incumbent_geomean_ns_per_query", "incumbent_geomean_ns_ci_90pct",
                    "incumbent_worst_ns_per_query")


def _build(values: dict[str, Any], source: str) -> TrialResult:
    for key in _REQUIRED_ALWAYS:
        if key not in values:
            raise ResultParseError(f"{source}: missing field {key!r}")
    if source == "JSON":                      # JSON always carries every field
        missing = [k for k in _KINDS if k not in values]
        if missing:
            raise ResultParseError(f"JSON: missing field {missing[0]!r}")
    result = TrialResult(**values)
    if result.mode not in MODES:
        raise ResultParseError(f"mode: {result.mode!r} is not one of {', '.join(MODES)}")
    if result.exit_code not in (EXIT_OK, EXIT_INTERNAL, EXIT_INCORRECT, EXIT_TIMEOUT):
        raise ResultParseError(f"exit_code: {result.exit_code} is not 0, 1, 2 or 3")
    if result.correctness not in ("pass", "fail", "not_run"):
        raise ResultParseError(f"correctness: {result.correctness!r} is not pass, fail or not_run")
    if result.exit_code != EXIT_OK:
        if result.failure_kind not in FAILURE_KINDS:
            raise ResultParseError("a failed trial must name its failure_kind")
        if not result.failure:
            raise ResultParseError("a failed trial must carry its failure evidence")
        return result
    if result.correctness != "pass":
        raise ResultParseError("exit_code 0 with correctness other than pass")
    if result.failure_kind is not None or result.failure is not None:
        raise ResultParseError("exit_code 0 with a failure")
    # A passing result states every field (n/a where a value does not apply): none is defaulted.
    for key, kind in _KINDS.items():
        if kind not in ("map", "profile") and key not in _OPTIONAL_ABSENT and key not in values:
            raise ResultParseError(f"{source}: missing field {key!r}")
    if not result.threads:
        raise ResultParseError(f"{source}: missing field 'threads'")
    if result.mode == "profile":
        # No speed combos were timed, only the profile's sizes: the timing fields are n/a.
        for key in _REQUIRED_PROFILE:
            if values.get(key) in (None, [], {}):
                raise ResultParseError(f"{source}: missing field {key!r}")
        if set(result.profile) != set(result.shapes_tested):
            raise ResultParseError("profile: its shapes are not shapes_tested")
        return result
    if result.profile:
        raise ResultParseError(f"profile: only a profile-mode result carries one (mode {result.mode!r})")
    required = _REQUIRED_OK + (_REQUIRED_PAIRED if result.mode == "paired" else ())
    for key in required:
        if values.get(key) in (None, [], {}):
            raise ResultParseError(f"{source}: missing field {key!r}")
    combos = set(result.per_combo_geomean_ns)
    if not combos:
        raise ResultParseError("per_combo_geomean_ns has no combos")
    if result.mode == "paired":
        if set(result.per_combo_speedup) != combos or set(result.incumbent_per_combo_geomean_ns) != combos:
            raise ResultParseError("per-combo fields disagree on the combos measured")
        if result.worst_combo_speedup is not None and result.worst_combo_speedup.combo not in combos:
            raise ResultParseError("worst_combo_speedup names an unmeasured combo")
        if result.incumbent_worst_ns_per_query.combo not in combos:    # type: ignore[union-attr]
            raise ResultParseError("incumbent_worst_ns_per_query names an unmeasured combo")
    for key in ("worst_ns_per_query", "best_ns_per_query"):
        measured = getattr(result, key)
        if measured.combo not in combos:
            raise ResultParseError(f"{key} names an unmeasured combo")
    return result
