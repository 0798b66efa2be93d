"""Tests for targets/harness/result.py: round trips and strict, fail-closed parsing."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from targets.harness.result import Measured, ResultParseError, TrialResult, parse_block, parse_json

COMBOS = ["128x16/clustered", "128x16/uniform", "768x96/sparse"]


def paired_result() -> TrialResult:
    return TrialResult(
        target="pq-l2", mode="paired", exit_code=0, correctness="pass",
        correctness_cases=30, verified_calls=12,
        arch="x86_64", cpu="Some CPU @ 3.0GHz", python="3.11.9", numpy="2.1.0", numba="0.60.0",
        threads={"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
        passes=3, replicates=4, sessions=6, queries_per_combo=200, query_seed="0x1234abcd",
        shapes_tested=["128x16", "768x96"], distributions_tested=["clustered", "uniform", "sparse"],
        geomean_ns_per_query=12345.678, geomean_ns_ci_90pct=(12000.5, 12800.25),
        median_ns_per_query=12001.0, geomean_cycles_per_query=None,
        worst_ns_per_query=Measured(54321.5, "768x96/sparse"),
        best_ns_per_query=Measured(1e-05 + 3000.0, "128x16/uniform"),
        per_combo_geomean_ns={COMBOS[0]: 3100.5, COMBOS[1]: 3000.00001, COMBOS[2]: 54321.5},
        speedup_geomean=1.0512, speedup_ci_90pct=(0.98, 1.12),
        worst_combo_speedup=Measured(0.9123, COMBOS[2]),
        per_combo_speedup={COMBOS[0]: 1.1, COMBOS[1]: 1.05, COMBOS[2]: 0.9123},
        incumbent_per_combo_geomean_ns={COMBOS[0]: 3410.55, COMBOS[1]: 3150.0, COMBOS[2]: 49556.4},
        incumbent_geomean_ns_per_query=12990.0, incumbent_geomean_ns_ci_90pct=(12500.0, 13500.0),
        incumbent_worst_ns_per_query=Measured(49556.4, COMBOS[2]), incumbent_geomean_cycles_per_query=None,
        geomean_instructions_per_query=None, counters="n/a: perf_event_open: ENOENT (No such file or directory)",
        jit_seconds=2.5, fixture_seconds=0.125, peak_mem_mb=512.75, total_seconds=95.0625,
        kernel_sha256="a" * 64, against_sha256="b" * 64,
    )


def single_result() -> TrialResult:
    return TrialResult(
        target="pq-l2", mode="single", exit_code=0, correctness="pass",
        correctness_cases=30, verified_calls=3,
        arch="aarch64", cpu="cpu", python="3.12.1", numpy="2.0.0", numba="0.61.0",
        threads={"OMP_NUM_THREADS": "1"},
        passes=2, queries_per_combo=100, query_seed="42",
        shapes_tested=["256x16"], distributions_tested=["uniform"],
        geomean_ns_per_query=2.5e6, geomean_ns_ci_90pct=(2.4e6, 2.6e6), median_ns_per_query=2.45e6,
        geomean_cycles_per_query=7.5e6,
        worst_ns_per_query=Measured(2.5e6, "256x16/uniform"),
        best_ns_per_query=Measured(2.5e6, "256x16/uniform"),
        per_combo_geomean_ns={"256x16/uniform": 2.5e6},
        jit_seconds=None, fixture_seconds=None, peak_mem_mb=100.0, total_seconds=10.0,
        kernel_sha256="c" * 64,
    )


def failed_result() -> TrialResult:
    return TrialResult(
        target="pq-l2", mode="single", exit_code=2, correctness="fail", failure_kind="incorrect",
        failure="case battery/128x16/gaussian query_1:\n  table: 1 of 4096 values out of tolerance\n"
                "  worst at index 17: got 1.5, reference 1.25\tend \"quoted\" \\ back",
        correctness_cases=7, arch="x86_64", total_seconds=3.5, peak_mem_mb=80.0,
    )


RESULTS = {"paired": paired_result, "single": single_result, "failed": failed_result}


@pytest.mark.parametrize("name", RESULTS)
def test_block_round_trip(name):
    r = RESULTS[name]()
    block = r.to_block()
    assert block.startswith("---\n") and block.endswith("---\n")
    assert parse_block(block) == r


@pytest.mark.parametrize("name", RESULTS)
def test_json_round_trip(name):
    r = RESULTS[name]()
    assert parse_json(r.to_json()) == r


@pytest.mark.parametrize("name", RESULTS)
def test_block_to_json_cross_round_trip(name):
    r = RESULTS[name]()
    assert parse_json(parse_block(r.to_block()).to_json()) == r
    assert parse_block(parse_json(r.to_json()).to_block()) == r


def test_block_round_trip_preserves_float_bits():
    r = replace(paired_result(), geomean_ns_per_query=0.1 + 0.2, speedup_geomean=1 / 3,
                geomean_ns_ci_90pct=(1e-300, 1.7976931348623157e308))
    back = parse_block(r.to_block())
    assert back.geomean_ns_per_query == 0.1 + 0.2
    assert back.speedup_geomean == 1 / 3
    assert back.geomean_ns_ci_90pct == (1e-300, 1.7976931348623157e308)


def test_failed_result_block_is_multiline_safe():
    r = failed_result()
    block = r.to_block()
    # The multi-line evidence stays on one line of the block.
    failure_lines = [ln for ln in block.splitlines() if ln.startswith("failure:")]
    assert len(failure_lines) == 1
    back = parse_block(block)
    assert back.failure == r.failure and back.failure_kind == "incorrect" and back.exit_code == 2
    assert not back.ok


def test_ok_property():
    assert paired_result().ok and not failed_result().ok


# --- malformed blocks -------------------------------------------------------------------------------

def _lines(r=None):
    return (r or paired_result()).to_block().strip("\n").split("\n")


def _block(lines):
    return "\n".join(lines) + "\n"


def _replace_line(prefix, new, r=None):
    lines = _lines(r)
    idx = [i for i, ln in enumerate(lines) if ln.startswith(prefix)]
    assert len(idx) == 1, prefix
    lines[idx[0]] = new
    return _block(lines)


def _drop(prefix, r=None):
    lines = _lines(r)
    kept = [ln for ln in lines if not ln.startswith(prefix)]
    assert len(kept) < len(lines), prefix
    return _block(kept)


def test_missing_opening_fence():
    with pytest.raises(ResultParseError):
        parse_block(_block(_lines()[1:]))


def test_missing_closing_fence():
    with pytest.raises(ResultParseError):
        parse_block(_block(_lines()[:-1]))


@pytest.mark.parametrize("text", ["", "---", "---\n", "\n\n", "target: pq-l2\n"])
def test_degenerate_blocks(text):
    with pytest.raises(ResultParseError):
        parse_block(text)


def test_two_blocks_rejected():
    block = paired_result().to_block()
    with pytest.raises(ResultParseError):
        parse_block(block + block)


def test_unknown_key():
    lines = _lines()
    lines.insert(3, "favourite_colour: blue")
    with pytest.raises(ResultParseError, match="unknown"):
        parse_block(_block(lines))


@pytest.mark.parametrize("prefix", ["target:", "exit_code:", "speedup_geomean:", "shapes_tested:",
                                    "geomean_ns_ci_90pct:", "worst_ns_per_query:", "failure_kind:"])
def test_duplicate_key(prefix):
    r = failed_result() if prefix == "failure_kind:" else paired_result()
    lines = _lines(r)
    line = next(ln for ln in lines if ln.startswith(prefix))
    lines.insert(-1, line)
    with pytest.raises(ResultParseError, match="duplicate"):
        parse_block(_block(lines))


@pytest.mark.parametrize("entry", ["threads[OMP_NUM_THREADS]: 1",
                                   f"per_combo_geomean_ns[{COMBOS[0]}]: 3100.5",
                                   f"per_combo_speedup[{COMBOS[1]}]: 1.05"])
def test_duplicate_map_entry(entry):
    lines = _lines()
    assert entry in lines
    lines.insert(-1, entry)
    with pytest.raises(ResultParseError, match="duplicate"):
        parse_block(_block(lines))


@pytest.mark.parametrize("line", [
    "no colon here",
    "target:pq-l2",                 # no space after the colon
    "Target: pq-l2",                # upper case key
    " target: pq-l2",               # leading space
    "target : pq-l2",
    "",                             # blank line inside the block
    "threads: 1",                   # map without [name]
    "target[x]: pq-l2",             # [name] on a scalar
    "per_combo_speedup[]: 1.0",
])
def test_malformed_line(line):
    lines = _lines()
    lines.insert(2, line)
    with pytest.raises(ResultParseError):
        parse_block(_block(lines))


@pytest.mark.parametrize("prefix,new", [
    ("geomean_ns_per_query:", "geomean_ns_per_query: fast"),
    ("geomean_ns_per_query:", "geomean_ns_per_query: 1.0.0"),
    ("geomean_ns_per_query:", "geomean_ns_per_query: "),
    ("speedup_geomean:", "speedup_geomean: 0x10"),
    ("peak_mem_mb:", "peak_mem_mb: 12 MB"),
    (f"per_combo_speedup[{COMBOS[0]}]:", f"per_combo_speedup[{COMBOS[0]}]: one"),
    ("exit_code:", "exit_code: 0.0"),
    ("exit_code:", "exit_code: zero"),
    ("passes:", "passes: 3.5"),
    ("passes:", "passes: "),
])
def test_non_numeric(prefix, new):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line(prefix, new))


@pytest.mark.parametrize("prefix,new", [
    ("geomean_ns_per_query:", "geomean_ns_per_query: nan"),
    ("geomean_ns_per_query:", "geomean_ns_per_query: inf"),
    ("speedup_geomean:", "speedup_geomean: -inf"),
    ("speedup_geomean:", "speedup_geomean: 1e999"),
    ("total_seconds:", "total_seconds: NaN"),
    ("geomean_ns_ci_90pct:", "geomean_ns_ci_90pct: [1.0, inf]"),
    ("speedup_ci_90pct:", "speedup_ci_90pct: [nan, 1.0]"),
    ("worst_ns_per_query:", f"worst_ns_per_query: nan ({COMBOS[2]})"),
    ("worst_combo_speedup:", f"worst_combo_speedup: inf ({COMBOS[2]})"),
    (f"per_combo_geomean_ns[{COMBOS[0]}]:", f"per_combo_geomean_ns[{COMBOS[0]}]: nan"),
])
def test_non_finite(prefix, new):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line(prefix, new))


@pytest.mark.parametrize("new", [
    "speedup_ci_90pct: [1.2, 1.1]",
    "speedup_ci_90pct: [1.1]",
    "speedup_ci_90pct: 1.1, 1.2",
    "speedup_ci_90pct: [1.1,1.2]",
    "speedup_ci_90pct: (1.1, 1.2)",
    "speedup_ci_90pct: [1.1, 1.2, 1.3]",
])
def test_bad_interval(new):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("speedup_ci_90pct:", new))


@pytest.mark.parametrize("new", [
    "worst_ns_per_query: 54321.5",
    "worst_ns_per_query: 54321.5 768x96/sparse",
    "worst_ns_per_query: (768x96/sparse) 54321.5",
    "worst_ns_per_query: 54321.5 ()",
    "worst_ns_per_query: x (768x96/sparse)",
    "worst_ns_per_query: 54321.5 (768x96/sparse) extra",
])
def test_bad_measured(new):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("worst_ns_per_query:", new))


# Fields a passing paired result cannot do without (written out here, not imported).
REQUIRED_PAIRED_SCALARS = [
    "target", "mode", "exit_code", "correctness",
    "correctness_cases", "passes", "queries_per_combo", "shapes_tested", "distributions_tested",
    "geomean_ns_per_query", "geomean_ns_ci_90pct", "median_ns_per_query", "worst_ns_per_query",
    "best_ns_per_query", "total_seconds", "peak_mem_mb",
    "speedup_geomean", "speedup_ci_90pct", "worst_combo_speedup", "jit_seconds",
    "incumbent_geomean_ns_per_query", "incumbent_geomean_ns_ci_90pct", "incumbent_worst_ns_per_query",
]
REQUIRED_PAIRED_MAPS = ["per_combo_geomean_ns", "per_combo_speedup", "incumbent_per_combo_geomean_ns"]


@pytest.mark.parametrize("name", REQUIRED_PAIRED_SCALARS)
def test_missing_required_field_block(name):
    with pytest.raises(ResultParseError):
        parse_block(_drop(f"{name}:"))


# Of those, the ones whose value is not free text ("n/a" is a legal string or list item).
REQUIRED_PAIRED_NON_TEXT = [n for n in REQUIRED_PAIRED_SCALARS
                            if n not in ("target", "shapes_tested", "distributions_tested")]


@pytest.mark.parametrize("name", REQUIRED_PAIRED_NON_TEXT)
def test_required_field_na_block(name):
    # "n/a" (the block's spelling of None) where a value is required must not parse.
    with pytest.raises(ResultParseError):
        parse_block(_replace_line(f"{name}:", f"{name}: n/a"))


@pytest.mark.parametrize("name", REQUIRED_PAIRED_MAPS)
def test_missing_required_map_block(name):
    with pytest.raises(ResultParseError):
        parse_block(_drop(f"{name}["))


@pytest.mark.parametrize("name", REQUIRED_PAIRED_SCALARS + REQUIRED_PAIRED_MAPS)
def test_missing_required_field_json(name):
    data = json.loads(paired_result().to_json())
    del data[name]
    with pytest.raises(ResultParseError):
        parse_json(json.dumps(data))


@pytest.mark.parametrize("name", REQUIRED_PAIRED_SCALARS)
def test_null_required_field_json(name):
    data = json.loads(paired_result().to_json())
    data[name] = None
    with pytest.raises(ResultParseError):
        parse_json(json.dumps(data))


@pytest.mark.parametrize("name", ["shapes_tested", "distributions_tested"])
def test_empty_required_list(name):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line(f"{name}:", f"{name}: "))


def test_required_fields_list_covers_every_scalar_the_schema_marks_required_for_paired():
    # Sanity for the parametrisation itself: every name is a real field of the dataclass.
    names = {f.name for f in fields(TrialResult)}
    assert set(REQUIRED_PAIRED_SCALARS + REQUIRED_PAIRED_MAPS) <= names


def test_single_mode_does_not_need_paired_fields():
    # The same deletions that break a paired result are fine for a single one.
    r = single_result()
    assert r.speedup_geomean is None
    assert parse_block(r.to_block()) == r


@pytest.mark.parametrize("name", ["geomean_ns_per_query", "worst_ns_per_query", "total_seconds"])
def test_missing_required_field_single(name):
    with pytest.raises(ResultParseError):
        parse_block(_drop(f"{name}:", single_result()))


def test_exit0_with_correctness_fail():
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("correctness:", "correctness: fail"))
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("correctness:", "correctness: not_run"))


def test_unknown_correctness_value():
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("correctness:", "correctness: maybe"))


@pytest.mark.parametrize("code", ["4", "-1", "255"])
def test_unknown_exit_code(code):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("exit_code:", f"exit_code: {code}"))


def test_paired_missing_speedup_ci():
    with pytest.raises(ResultParseError):
        parse_block(_drop("speedup_ci_90pct:"))
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("speedup_ci_90pct:", "speedup_ci_90pct: n/a"))


def test_per_combo_speedup_combos_differ():
    old = f"per_combo_speedup[{COMBOS[1]}]: 1.05"
    with pytest.raises(ResultParseError):
        parse_block(_replace_line(old, "per_combo_speedup[256x16/uniform]: 1.05"))
    lines = _lines()
    lines.insert(-1, "per_combo_speedup[999x1/extra]: 1.0")
    with pytest.raises(ResultParseError):
        parse_block(_block(lines))
    with pytest.raises(ResultParseError):
        parse_block(_drop(old))


def test_incumbent_combos_differ():
    with pytest.raises(ResultParseError):
        parse_block(_drop(f"incumbent_per_combo_geomean_ns[{COMBOS[0]}]:"))


@pytest.mark.parametrize("key", ["worst_ns_per_query", "best_ns_per_query", "worst_combo_speedup"])
def test_measured_names_unmeasured_combo(key):
    with pytest.raises(ResultParseError, match="unmeasured"):
        parse_block(_replace_line(f"{key}:", f"{key}: 1.0 (999x1/nowhere)"))
    data = json.loads(paired_result().to_json())
    data[key]["combo"] = "999x1/nowhere"
    with pytest.raises(ResultParseError, match="unmeasured"):
        parse_json(json.dumps(data))


def test_failed_without_failure_kind():
    with pytest.raises(ResultParseError):
        parse_block(_drop("failure_kind:", failed_result()))
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("failure_kind:", "failure_kind: oops", failed_result()))
    data = json.loads(failed_result().to_json())
    data["failure_kind"] = None
    with pytest.raises(ResultParseError):
        parse_json(json.dumps(data))


@pytest.mark.parametrize("mode", ["fast", "", "Paired", "paired "])
def test_unknown_mode(mode):
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("mode:", f"mode: {mode}"))
    data = json.loads(paired_result().to_json())
    data["mode"] = mode
    with pytest.raises(ResultParseError):
        parse_json(json.dumps(data))


def test_bad_quoted_string():
    with pytest.raises(ResultParseError):
        parse_block(_replace_line("failure:", 'failure: "unterminated', failed_result()))


# --- malformed JSON ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("exit_code", "0"),                       # string for int
    ("exit_code", True),                      # bool for int
    ("exit_code", 0.0),                       # float for int
    ("passes", False),
    ("correctness_cases", "30"),
    ("target", None),                         # null for required
    ("mode", None),
    ("correctness", None),
    ("target", 5),
    ("geomean_ns_per_query", "12345.6"),
    ("geomean_ns_per_query", True),
    ("speedup_geomean", [1.0]),
    ("speedup_ci_90pct", [1.2, 1.1]),
    ("speedup_ci_90pct", [1.0]),
    ("speedup_ci_90pct", [1.0, "2"]),
    ("speedup_ci_90pct", {"lo": 1.0, "hi": 2.0}),
    ("worst_ns_per_query", [54321.5, "768x96/sparse"]),
    ("worst_ns_per_query", {"value": 1.0}),
    ("worst_ns_per_query", {"value": 1.0, "combo": 3}),
    ("worst_ns_per_query", {"value": 1.0, "combo": COMBOS[2], "extra": 1}),
    ("shapes_tested", "128x16"),
    ("shapes_tested", [128]),
    ("threads", {"OMP_NUM_THREADS": 1}),
    ("threads", ["1"]),
    ("per_combo_speedup", {COMBOS[0]: "1.1", COMBOS[1]: 1.05, COMBOS[2]: 0.9}),
    ("per_combo_speedup", [1.1, 1.05, 0.9]),
    ("shapes_tested", None),
    ("per_combo_geomean_ns", None),
    ("threads", None),
])
def test_json_wrong_types(key, value):
    data = json.loads(paired_result().to_json())
    data[key] = value
    with pytest.raises(ResultParseError):
        parse_json(json.dumps(data))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_non_finite_numbers(token):
    text = paired_result().to_json().replace('"speedup_geomean": 1.0512', f'"speedup_geomean": {token}')
    assert token in text
    with pytest.raises(ResultParseError):
        parse_json(text)


def test_json_unknown_key():
    data = json.loads(paired_result().to_json())
    data["extra"] = 1
    with pytest.raises(ResultParseError, match="unknown"):
        parse_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "[]", "null", "42", "{", '"result"'])
def test_json_not_an_object(text):
    with pytest.raises(ResultParseError):
        parse_json(text)


def test_json_duplicate_key():
    # A JSON document with the same key twice is not "exactly the schema" either.
    text = paired_result().to_json()
    text = text.replace('"exit_code": 0,', '"exit_code": 0,\n  "exit_code": 0,', 1)
    assert text.count('"exit_code"') == 2
    with pytest.raises(ResultParseError):
        parse_json(text)


# --- free-text fields must survive the block format whatever they contain ---------------------------

@pytest.mark.parametrize("text", [
    "plain evidence",
    "  leading and trailing spaces  ",
    "tab\tinside",
    "multi\nline\n",
    'ends with a "quote"',
    "unicode: \u00e9\u2028",
])
def test_failure_text_round_trips(text):
    r = replace(failed_result(), failure=text)
    assert parse_block(r.to_block()).failure == text
    assert parse_json(r.to_json()).failure == text


def test_failed_result_without_evidence_is_rejected():
    r = replace(failed_result(), failure="")
    with pytest.raises(ResultParseError):
        parse_json(r.to_json())


@pytest.mark.parametrize("text", [
    '"table" differs at index 3',        # leading quote: parse fails
    '"quoted"',                          # leading quote: silently unquoted
    "n/a",                               # silently becomes None
])
def test_failure_text_that_looks_quoted_round_trips(text):
    r = replace(failed_result(), failure=text)
    assert parse_block(r.to_block()).failure == text
