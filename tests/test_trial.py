"""End-to-end trials of small kernels written here: real runner, real worker processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psutil
import pytest

import targets
from conftest import BASELINE, FAST, NUMBA_KERNEL, processes_mentioning, run_experiment
from targets.harness import runner, sandbox
from targets.harness.plan import TrialOptions
from targets.harness.result import parse_block, parse_json



@pytest.mark.slow
def test_baseline_single_mode_passes_and_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = run_experiment("--result-json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    block, data = parse_block(proc.stdout), parse_json(out.read_text())
    assert block == data                           # one result, two renderings
    assert data.correctness == "pass" and data.mode == "single"
    assert data.correctness_cases == 36            # 15 battery + 3 fresh cases, 2 calls each
    assert data.shapes_tested == ["128x16", "256x16", "768x96"]
    assert data.distributions_tested == ["clustered", "uniform", "sparse"]
    assert len(data.per_combo_geomean_ns) == 9
    assert data.verified_calls >= 9                 # at least one timed call per combo re-checked
    assert 0 < data.peak_mem_mb < 400
    assert data.speedup_geomean is None


@pytest.mark.slow
def test_paired_numba_kernel_is_faster_than_baseline() -> None:
    proc = run_experiment("--kernel", str(NUMBA_KERNEL), "--against", str(BASELINE), *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = parse_block(proc.stdout)
    assert result.mode == "paired" and (result.replicates, result.sessions) == (1, 2)
    # Blocked SoA gathers, four sub-vectors a pass, top-k fused: ~2x the compiled baseline in
    # process, ~1.6x through the wire; a 2-block trial's CI is wide on a shared machine.
    assert result.speedup_ci_90pct[0] > 1.1 and result.speedup_geomean > 1.15, result.speedup_ci_90pct
    assert set(result.per_combo_speedup) == set(result.per_combo_geomean_ns)
    assert result.jit_seconds > 0


def _zombie_children() -> set[int]:
    found = set()
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_killed_worker_pairs_are_reaped_during_the_trial(monkeypatch) -> None:
    """Each worker pair is killed after its blocks; the runner's child for each worker (bwrap, or
    the worker itself unsandboxed) must be reaped then, not left a zombie until the trial ends."""
    before = _zombie_children()
    seen: list[int] = []
    real = runner.measure_block

    def counting(*args, **kwargs):
        seen.append(len(_zombie_children() - before))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "measure_block", counting)
    options = TrialOptions(kernel=BASELINE, against=BASELINE, seed=7, replicates=3, sessions=1, queries_per_combo=3,
                           sandbox=sandbox.probe().active)       # the baseline is trusted: unsafe where there is none
    result = runner.run_trial(targets.get("pq-l2").plan(), options,
                              on_samples=lambda _: seen.append(len(_zombie_children() - before)))
    assert result.ok, result.failure
    # At the start of each pair's block, then after the last pair: unreaped, that was 0, 2, 4, 6.
    # At most the pair killed last may still be exiting.
    assert len(seen) == 4 and max(seen) <= 2, seen
    assert _zombie_children() - before == set()


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.probe().active, reason="kept only where a sandbox keeps the other arm out")
def test_a_targets_own_kernel_compiles_once_per_machine(tmp_path: Path, monkeypatch) -> None:
    # The baseline's machine code is kept across trials; an LLM kernel's never is (it would let a
    # kernel carry state from one trial to the next).
    from targets.harness import cache
    monkeypatch.setattr(cache, "numba_store", lambda sha: tmp_path / "store" / sha[:12])
    options = TrialOptions(kernel=NUMBA_KERNEL, against=BASELINE, seed=3, replicates=1, sessions=1,
                           queries_per_combo=2)
    plan = targets.get("pq-l2").plan()
    assert runner.run_trial(plan, options).ok
    stores = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert stores == [hashlib.sha256(BASELINE.read_bytes()).hexdigest()[:12]]       # the baseline's only
    compiled = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.nb*")}
    assert any(p.suffix == ".nbc" for p in compiled)
    assert runner.run_trial(plan, options).ok
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.nb*")} == compiled   # loaded, not rebuilt


@pytest.mark.slow
def test_wrong_kernel_fails_correctness_naming_the_case(write_kernel) -> None:
    # Drops the last sub-vector from every distance.
    kernel = write_kernel("wrong", replace=("    dists[:] = 0.0\n    for m in range(num_sub_vectors):\n",
                                            "    dists[:] = 0.0\n    for m in range(num_sub_vectors - 1):\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 2, proc.stdout
    result = parse_block(proc.stdout)
    assert result.correctness == "fail" and result.failure_kind == "incorrect"
    assert "case 128x16/gaussian" in result.failure and "differs from reference" in result.failure


@pytest.mark.slow
def test_lossy_expansion_fails_on_large_dynamic_range(write_kernel) -> None:
    # The q²+c²−2qc rewrite: fast, algebraically equal, numerically lossy.
    kernel = write_kernel("expansion", replace=(
        "    total = np.float32(0.0)\n"
        "    for d in range(sub_dim):\n"
        "        diff = q[d] - x[d]\n"
        "        total += diff * diff\n"
        "    return total\n",
        "    qq = np.float32(0.0)\n"
        "    xx = np.float32(0.0)\n"
        "    qx = np.float32(0.0)\n"
        "    for d in range(sub_dim):\n"
        "        qq += q[d] * q[d]\n"
        "        xx += x[d] * x[d]\n"
        "        qx += q[d] * x[d]\n"
        "    return qq + xx - np.float32(2.0) * qx\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 2, proc.stdout
    assert "large_dynamic_range" in parse_block(proc.stdout).failure


@pytest.mark.slow
def test_nan_output_fails_correctness(write_kernel) -> None:
    kernel = write_kernel("nan", replace=("        _top_k(self.dists, k, out_ids, out_dists)\n",
                                          "        _top_k(self.dists, k, out_ids, out_dists)\n"
                                          "        out_dists[-1] = np.nan\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 2, proc.stdout
    assert "non-finite" in parse_block(proc.stdout).failure


@pytest.mark.slow
def test_unwritten_output_fails_correctness(write_kernel) -> None:
    # Leaving part of `out_dists` untouched leaves the harness's NaN fill in place.
    kernel = write_kernel("partial", replace=("        _top_k(self.dists, k, out_ids, out_dists)\n",
                                              "        dists = np.empty(k, dtype=np.float32)\n"
                                              "        _top_k(self.dists, k, out_ids, dists)\n"
                                              "        out_dists[:-1] = dists[:-1]\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 2
    assert "non-finite" in parse_block(proc.stdout).failure


@pytest.mark.slow
def test_kernel_wrong_only_when_timed_is_caught(write_kernel) -> None:
    # Honest for the correctness battery (N=4096), wrong on the speed workloads (N=20000).
    kernel = write_kernel("sneaky", replace=("    dists[:] = 0.0\n", "    dists[:] = 0.0 if num_vectors < 10000 else 1e6\n"))
    proc = run_experiment("--kernel", str(kernel), "--against", str(BASELINE), *FAST)
    assert proc.returncode == 2, proc.stdout
    result = parse_block(proc.stdout)
    assert result.correctness == "fail" and "timed call" in result.failure


def test_crashing_kernel_exits_1_with_traceback(write_kernel) -> None:
    kernel = write_kernel("crash", replace=("    def search(self, query, k, out_ids, out_dists):\n",
                                            "    def search(self, query, k, out_ids, out_dists):\n"
                                            "        raise RuntimeError('kernel exploded')\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 1
    result = parse_block(proc.stdout)
    assert result.failure_kind == "crash" and "kernel exploded" in result.failure


def test_kernel_killing_its_worker_is_a_crash(write_kernel) -> None:
    kernel = write_kernel("exit", replace=("    def search(self, query, k, out_ids, out_dists):\n",
                                           "    def search(self, query, k, out_ids, out_dists):\n"
                                           "        import os; os._exit(0)\n"))
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 1
    assert parse_block(proc.stdout).failure_kind == "crash"


def test_syntax_error_is_a_crash(write_kernel) -> None:
    kernel = write_kernel("syntax", source="class PqKernel(:\n")
    proc = run_experiment("--kernel", str(kernel))
    assert proc.returncode == 1
    assert "SyntaxError" in parse_block(proc.stdout).failure


@pytest.mark.slow
def test_hanging_kernel_times_out_and_leaves_no_process(write_kernel) -> None:
    kernel = write_kernel("hang", replace=("    def search(self, query, k, out_ids, out_dists):\n",
                                           "    def search(self, query, k, out_ids, out_dists):\n"
                                           "        while True:\n            pass\n"))
    proc = run_experiment("--kernel", str(kernel), "--budget-seconds", "4")
    assert proc.returncode == 3, proc.stdout
    assert parse_block(proc.stdout).failure_kind == "timeout"
    assert processes_mentioning(str(kernel)) == []


@pytest.mark.slow
def test_result_json_matches_block_on_failure(write_kernel, tmp_path: Path) -> None:
    kernel = write_kernel("crash2", replace=("    def __init__(self, shape, codebook, codes_aos, num_vectors):\n",
                                             "    def __init__(self, shape, codebook, codes_aos, num_vectors):\n"
                                             "        raise ValueError('no')\n"))
    out = tmp_path / "r.json"
    proc = run_experiment("--kernel", str(kernel), "--result-json", str(out))
    assert proc.returncode == 1
    assert json.loads(out.read_text())["failure_kind"] == "crash"
    assert parse_json(out.read_text()) == parse_block(proc.stdout)


@pytest.mark.parametrize("args, message", [
    (["--kernel", "/nonexistent/kernels.py"], "--kernel /nonexistent/kernels.py: no such file"),
    (["--budget-seconds", "0"], "must be positive"),
    (["--replicates", "0"], "must be at least 1"),
])
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = run_experiment(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_an_a_a_trial_gives_the_machine_wide_store_to_one_arm(tmp_path: Path, monkeypatch) -> None:
    # Each arm's uid owns its numba cache: two arms on one store took it from each other, and one
    # recompiled on every worker pair (an A/A trial of pq-l2's baseline: 10.7 s of jit over 4 pairs,
    # 4.6 s with one arm on the store).
    from targets.harness import cache
    monkeypatch.setattr(cache, "numba_store", lambda sha: tmp_path / "store" / sha[:12])
    trusted = cache.trusted_kernels()
    assert runner.trusted_stores([("incumbent", BASELINE), ("candidate", BASELINE)], trusted) == {
        "incumbent": cache.numba_store(hashlib.sha256(BASELINE.read_bytes()).hexdigest())}
    assert runner.trusted_stores([("incumbent", BASELINE), ("candidate", NUMBA_KERNEL)], trusted).keys() == {"incumbent"}
    assert runner.trusted_stores([("lance", None), ("candidate", BASELINE)], trusted).keys() == {"candidate"}
    assert runner.trusted_stores([("incumbent", BASELINE), ("candidate", BASELINE)], {}) == {}
