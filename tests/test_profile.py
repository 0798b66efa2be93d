"""``--mode profile``: the op's time split by stage by the slope method. The fit, the result's
profile section (round trips, strict parsing), and real profile trials of pq-l2 kernels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import targets
from conftest import BASELINE
from orchestrator import trial
from targets.harness import runner
from targets.harness.plan import ProfileShape, TrialOptions, Workload
from targets.harness.result import (ResultParseError, ShapeProfile, Stage, TrialResult, parse_block,
                                    parse_json)
from targets.harness.summary import OVERHEAD_LABEL, fit_linear, shape_profile

FACTORS = {"num_vectors": "per vector (distances, top-K scan)", "k": "per k (top-K heap, sorted output)"}
SIZES = [{"num_vectors": n, "k": k} for n in (1_000, 10_000, 20_000) for k in (10, 100)]
# Small but real: every phase runs, on one block of three queries per size.
FAST = {"queries_per_combo": 3, "sessions": 1}


def _timings(fixed: float, per_vector: float, per_k: float, noise: float = 0.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.array([fixed + per_vector * s["num_vectors"] + per_k * s["k"] for s in SIZES])
    return t * (1 + noise * rng.standard_normal(t.size))


def _shape(at: dict[str, int] | None = None) -> ProfileShape:
    def unused(size: dict[str, int]) -> Workload:
        raise AssertionError("the fit never builds a workload")
    return ProfileShape(shape="128x16", distribution="clustered",
                        values={"num_vectors": (1_000, 10_000, 20_000), "k": (10, 100)},
                        at=at or {"num_vectors": 20_000, "k": 10}, workload=unused)


# ----------------------------------------------------------------------------- the fit

def test_fit_recovers_known_coefficients_exactly() -> None:
    x = np.array([[s["num_vectors"], s["k"]] for s in SIZES])
    fit = fit_linear(x, _timings(40_000.0, 8.0, 300.0))
    assert fit.intercept == pytest.approx(40_000.0, rel=1e-9)
    assert fit.slopes == pytest.approx([8.0, 300.0], rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.max_rel_residual < 1e-9


def test_fit_recovers_coefficients_through_noise_and_shows_a_bad_fit() -> None:
    x = np.array([[s["num_vectors"], s["k"]] for s in SIZES])
    noisy = fit_linear(x, _timings(40_000.0, 8.0, 300.0, noise=0.01))
    assert noisy.slopes[0] == pytest.approx(8.0, rel=0.05)
    assert noisy.intercept == pytest.approx(40_000.0, rel=0.2)
    assert noisy.r2 > 0.99 and noisy.max_rel_residual < 0.05
    # A size whose time is off by 3x (a burst of other work): the fit says so.
    spoiled = _timings(40_000.0, 8.0, 300.0)
    spoiled[1] *= 3
    bad = fit_linear(x, spoiled)
    assert bad.r2 < 0.9 and bad.max_rel_residual > 0.3


def test_fit_refuses_points_that_cannot_separate_the_terms() -> None:
    with pytest.raises(ValueError, match="cannot separate"):
        fit_linear(np.array([[1_000, 10], [2_000, 10], [4_000, 10]]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="positive"):
        fit_linear(np.array([[1, 1], [2, 1], [1, 2]]), np.array([1.0, 0.0, 3.0]))


def test_shape_profile_splits_the_intercept_and_shares_the_op_at_the_speed_size() -> None:
    medians = _timings(100_000.0, 8.0, 300.0)
    p = shape_profile(_shape(), FACTORS, "distance table + per-call fixed", SIZES, list(medians), 60_000.0)
    assert [s.kind for s in p.stages] == ["fixed", "slope", "slope", "overhead"]
    fixed, per_vector, per_k, overhead = p.stages
    assert fixed.ns == pytest.approx(40_000.0) and overhead.ns == 60_000.0 and overhead.label == OVERHEAD_LABEL
    assert (per_vector.factor, per_vector.at, per_vector.ns) == ("num_vectors", 20_000, pytest.approx(8.0))
    assert (per_k.factor, per_k.at, per_k.ns) == ("k", 10, pytest.approx(300.0))
    op = 100_000.0 + 8.0 * 20_000 + 300.0 * 10
    assert p.op_ns == pytest.approx(op)
    assert per_vector.share == pytest.approx(160_000.0 / op, abs=1e-4)
    assert sum(s.share for s in p.stages) == pytest.approx(1.0, abs=1e-3)
    assert p.points_ns["num_vectors=1000,k=100"] == pytest.approx(medians[1], abs=0.1)


def test_a_negative_part_counts_zero_in_the_shares() -> None:
    # The fitted intercept (30 us) is below the measured round trip (40 us): noise around a fixed
    # cost of nothing, so it is shown as it is (negative) and shares nothing.
    p = shape_profile(_shape(), FACTORS, "fixed", SIZES, list(_timings(30_000.0, 8.0, 300.0)), 40_000.0)
    assert p.stages[0].ns == pytest.approx(-10_000.0) and p.stages[0].share == 0.0
    assert sum(s.share for s in p.stages) == pytest.approx(1.0, abs=1e-3)
    assert all(s.share >= 0 for s in p.stages)


# ----------------------------------------------------------------------------- the result's profile section

def profile_result() -> TrialResult:
    medians = _timings(100_000.0, 8.0, 300.0)
    shape = shape_profile(_shape(), FACTORS, "distance table + per-call fixed", SIZES, list(medians), 60_000.0)
    return TrialResult(
        target="pq-l2", mode="profile", exit_code=0, correctness="pass", correctness_cases=36, verified_calls=9,
        arch="x86_64", cpu="cpu", python="3.11.7", numpy="2.1.0", numba="0.60.0",
        threads={"OMP_NUM_THREADS": "1"}, passes=1, replicates=1, sessions=1, queries_per_combo=3,
        query_seed="00000000000000ff", shapes_tested=["128x16", "768x96"], distributions_tested=["clustered"],
        jit_seconds=0.2, fixture_seconds=0.1, peak_mem_mb=90.0, total_seconds=2.0, kernel_sha256="a" * 64,
        profile={"128x16": shape, "768x96": replace(shape, op_ns=1e6)})


def test_profile_result_round_trips_through_block_and_json() -> None:
    r = profile_result()
    block = r.to_block()
    assert sum(line.startswith("profile[") for line in block.splitlines()) == 2
    assert parse_block(block) == r
    assert parse_json(r.to_json()) == r
    assert parse_json(parse_block(block).to_json()) == r
    assert isinstance(parse_json(r.to_json()).profile["128x16"].stages[0], Stage)


def _json(r: TrialResult) -> dict:
    return json.loads(r.to_json())


def test_profile_parsing_is_strict() -> None:
    def refuses(data: dict, match: str) -> None:
        with pytest.raises(ResultParseError, match=match):
            parse_json(json.dumps(data))

    good = _json(profile_result())
    missing = json.loads(json.dumps(good))
    del missing["profile"]["128x16"]["r2"]
    refuses(missing, "exactly")
    extra = json.loads(json.dumps(good))
    extra["profile"]["128x16"]["stages"][1]["note"] = "x"
    refuses(extra, "exactly")
    kind = json.loads(json.dumps(good))
    kind["profile"]["128x16"]["stages"][0]["kind"] = "table"
    refuses(kind, "kind")
    order = json.loads(json.dumps(good))
    order["profile"]["128x16"]["stages"].reverse()
    refuses(order, "fixed, then one slope")
    nameless = json.loads(json.dumps(good))
    nameless["profile"]["128x16"]["stages"][1]["factor"] = ""
    refuses(nameless, "names its factor")
    at = json.loads(json.dumps(good))
    at["profile"]["128x16"]["stages"][1]["at"] = 2.5
    refuses(at, "positive integer")
    nan = json.loads(json.dumps(good))
    nan["profile"]["128x16"]["op_ns"] = "fast"
    refuses(nan, "finite number")
    few = json.loads(json.dumps(good))
    few["profile"]["128x16"]["points_ns"] = {"num_vectors=1000,k=10": 1.0}
    refuses(few, "fewer timed sizes")
    shapes = json.loads(json.dumps(good))
    shapes["shapes_tested"] = ["128x16"]
    refuses(shapes, "not shapes_tested")
    empty = json.loads(json.dumps(good))
    empty["profile"] = {}
    refuses(empty, "missing field 'profile'")
    single = json.loads(json.dumps(good))
    single["mode"] = "single"
    refuses(single, "only a profile-mode result")


def test_block_profile_lines_are_strict() -> None:
    lines = profile_result().to_block().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("profile[128x16]"))
    for bad, match in ((lines[i].replace('"r2"', '"r3"'), "exactly"), ("profile: {}", "expected profile"),
                       (lines[i][:-1], "not JSON"), (lines[i] + "\n" + lines[i], "duplicate")):
        with pytest.raises(ResultParseError, match=match):
            parse_block("\n".join(lines[:i] + [bad] + lines[i + 1:]) + "\n")


# ----------------------------------------------------------------------------- front ends

def test_profile_mode_takes_one_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--against", str(BASELINE)], ["--against-lance"]):
        with pytest.raises(SystemExit) as exc:
            runner.parse_args(["--mode", "profile", *extra], "pq-l2", BASELINE)
        assert exc.value.code == 2
    assert "--mode profile times one kernel" in capsys.readouterr().err


def test_every_shipped_target_declares_a_profile_the_runner_can_fit() -> None:
    for name in ("pq-l2", "pq-dot", "pq-cosine", "ivf-partition"):
        info = targets.get(name)
        spec = info.plan().profile
        assert spec is not None, info.name
        for ps in spec.shapes():
            assert set(ps.values) == set(spec.factors) == set(ps.at), (info.name, ps.shape)
            # At least two values per factor, and the speed size's own where they can reach it.
            assert all(len(set(v)) >= 2 for v in ps.values.values()), (info.name, ps.shape)
            w = ps.workload({f: max(v) for f, v in ps.values.items()})
            assert w.shape == ps.shape and w.distribution == ps.distribution


# ----------------------------------------------------------------------------- real trials

@pytest.mark.slow
def test_baseline_profile_through_the_daemons_trial_stage(tmp_path: Path) -> None:
    info = targets.get("pq-l2")
    outcome = trial.run(trial.TrialRequest(target=info, kernel=BASELINE, mode="profile",
                                           queries_per_combo=FAST["queries_per_combo"], sessions=FAST["sessions"]),
                        tmp_path)
    assert outcome.exit_code == 0 and outcome.result is not None, outcome.error
    result = outcome.result
    assert result.mode == "profile" and result.correctness == "pass" and result.verified_calls >= 18
    assert sorted(result.profile) == ["128x16", "256x16", "768x96"] == result.shapes_tested
    for shape, p in result.profile.items():
        profile: ShapeProfile = p
        per_vector = next(s for s in profile.stages if s.factor == "num_vectors")
        assert per_vector.ns > 0 and per_vector.at == 20_000, shape
        assert sum(s.share for s in profile.stages) == pytest.approx(1.0, abs=0.01), shape
        assert len(profile.points_ns) == 6 and profile.stages[-1].ns > 0, shape
    assert result.geomean_ns_per_query is None and not result.per_combo_geomean_ns


@pytest.mark.slow
def test_a_slower_distance_pass_shows_in_the_per_vector_cost(write_kernel) -> None:
    # Redundant work per vector and sub-space: four dependent square roots whose result is
    # multiplied by zero (kept: without fastmath the compiler may not drop it). Same answers.
    slow = write_kernel("slow", replace=("            dists[n] += row[codes[n]]\n",
                                         "            extra = np.float32(0.0)\n"
                                         "            for _ in range(4):\n"
                                         "                extra = np.sqrt(row[codes[n]] + extra)\n"
                                         "            dists[n] += row[codes[n]] + extra * np.float32(0.0)\n"))
    plan = targets.get("pq-l2").plan()
    per_vector = {}
    for label, kernel in (("baseline", BASELINE), ("slow", slow)):
        result = runner.run_trial(plan, TrialOptions(kernel=kernel, mode="profile", seed=5, **FAST))
        assert result.ok, result.failure
        per_vector[label] = {shape: next(s.ns for s in p.stages if s.factor == "num_vectors")
                             for shape, p in result.profile.items()}
    for shape in per_vector["baseline"]:
        assert per_vector["slow"][shape] > 1.5 * per_vector["baseline"][shape], per_vector


@pytest.mark.slow
def test_a_crash_in_profile_mode_is_a_failure(write_kernel) -> None:
    # Correct on the battery (N = 4,096); raises only at a profile size no other mode uses.
    crashing = write_kernel("crash", replace=("    def search(self, query, k, out_ids, out_dists):\n",
                                              "    def search(self, query, k, out_ids, out_dists):\n"
                                              "        if self.num_vectors == 1000:\n"
                                              "            raise RuntimeError('boom at 1000 vectors')\n"))
    result = runner.run_trial(targets.get("pq-l2").plan(),
                              TrialOptions(kernel=crashing, mode="profile", seed=5, **FAST))
    assert (result.exit_code, result.failure_kind, result.correctness) == (1, "crash", "pass")
    assert "boom at 1000 vectors" in (result.failure or "") and not result.profile
    assert parse_block(result.to_block()) == result
