"""pq-cosine: pq-l2's kernel on unit-norm embeddings. The inputs are Lance-normalised, the compiled
baseline is Lance's L2 order bit for bit, the expanded table is legal here (and only here), and the
offline playbook keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, ROOT, finished, run_daemon, write_config
from lance_scalar import bits, normalize
from orchestrator.edit import EditError, parse_and_apply
from targets.harness.pq import PqShape
from targets.pq_cosine import inputs, kernels, reference
from targets.pq_l2 import reference as l2_reference

FOLDER = ROOT / "targets" / "pq_cosine"
PLAYBOOK = FOLDER / "playbook"


def playbook_kernel(tmp_path: Path, *entries: str) -> Path:
    """The kernel after applying playbook entries in order to the baseline."""
    text = (FOLDER / "kernels.py").read_text()
    for entry in entries:
        text = parse_and_apply((PLAYBOOK / entry).read_text(), text).new_text
    path = tmp_path / f"{len(entries)}-kernels.py"
    path.write_text(text)
    return path


def trial(target: str, kernel: Path, against: Path | None, out: Path) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", f"targets.{target}.run_experiment", "--kernel", str(kernel),
           "--result-json", str(out), *FAST]
    if against is not None:
        cmd += ["--against", str(against)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc.returncode, json.loads(out.read_text())


def test_normalize_is_lances_sequential_f32_sum_then_division() -> None:
    x = inputs.generate("gaussian", 5, 3, 37) * np.float32(7.5)      # any rows; renormalised below
    raw = np.array([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    assert np.array_equal(reference.normalize_rows(raw), raw / np.array([[3.0], [5.0]], dtype=np.float32))
    for row in x:
        assert np.array_equal(reference.normalize_rows(row[None, :])[0], normalize(row))


@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_battery_vectors_and_queries_are_unit_norm(kind: str) -> None:
    fx = inputs.fixtures()
    shape = inputs.SHAPES[0]
    prefix = f"battery/{shape.label}/{kind}/"
    codes_q = [fx[prefix + "query_0"], fx[prefix + "query_1"]]
    for q in codes_q:
        assert abs(float(np.linalg.norm(q.astype(np.float64))) - 1.0) < 1e-5
    data = inputs.generate(kind, 11, 50, shape.dim, inputs._centres(3, shape.dim))
    assert np.allclose(np.linalg.norm(data.astype(np.float64), axis=1), 1.0, atol=1e-5)


def test_near_duplicate_query_sits_next_to_a_stored_vector() -> None:
    shape = PqShape(384, 48)
    data = inputs.generate("gaussian", 9, 200, shape.dim)
    q = inputs.near_duplicate(data, inputs.Stream(inputs.mix_seeds(1, "near")))
    nearest = np.min(((data.astype(np.float64) - q) ** 2).sum(axis=1))
    assert 0 < nearest < 1e-5


def test_inputs_are_deterministic() -> None:
    a = inputs.fresh_case(inputs.SHAPES[0], "anisotropic", 1234)
    b = inputs.fresh_case(inputs.SHAPES[0], "anisotropic", 1234)
    c = inputs.fresh_case(inputs.SHAPES[0], "anisotropic", 1235)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["query_0"], c["query_0"])


KEEP = "01-expanded-table-fused-search.md"


@pytest.mark.slow
@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_baseline_search_is_lance_l2_order_bit_for_bit(shape: PqShape) -> None:
    # The shipped kernel is pq-l2's port of Lance's loops: asked for every vector of a unit-norm
    # battery case, it returns each one's reference distance bit for bit, in (distance, id) order.
    case = inputs.fresh_case(shape, "clustered", 5)
    n = inputs.CORRECTNESS_NUM_VECTORS
    table = l2_reference.distance_table(shape, case["codebook"], case["query_0"])
    ref = l2_reference.distances(shape, table, case["codes_aos"], n)
    kernel = kernels.PqKernel(shape, case["codebook"], case["codes_aos"], n)
    ids, dists = np.full(n, -1, dtype=np.int64), np.full(n, np.nan, dtype=np.float32)
    kernel.search(case["query_0"], n, ids, dists)
    assert sorted(ids.tolist()) == list(range(n))
    np.testing.assert_array_equal(bits(dists), bits(ref[ids]))
    assert np.all(np.diff(dists) >= 0) and np.all(np.diff(ids)[np.diff(dists) == 0] > 0)


def test_playbook_entries_apply_in_sequence() -> None:
    # 01 is the keep; 02 (norms dropped) and 04 (pair tables) apply to it; 03 is a stale edit.
    names = sorted(p.name for p in PLAYBOOK.glob("*.md"))
    assert [n[:2] for n in names] == ["01", "02", "03", "04"]
    incumbent = parse_and_apply((PLAYBOOK / names[0]).read_text(), (FOLDER / "kernels.py").read_text()).new_text
    for name in (names[1], names[3]):
        parse_and_apply((PLAYBOOK / name).read_text(), incumbent)
    with pytest.raises(EditError, match="does not occur"):
        parse_and_apply((PLAYBOOK / names[2]).read_text(), incumbent)


@pytest.mark.slow
def test_expanded_table_is_kept_here_and_rejected_by_pq_l2(tmp_path: Path) -> None:
    expanded = playbook_kernel(tmp_path, KEEP)
    code, result = trial("pq_cosine", expanded, FOLDER / "kernels.py", tmp_path / "cos.json")
    assert code == 0, result.get("failure")
    assert result["correctness"] == "pass" and result["speedup_ci_90pct"][0] > 1.0
    # The same kernel on pq-l2's unnormalised battery: cancellation, caught.
    code, result = trial("pq_l2", expanded, None, tmp_path / "l2.json")
    assert code == 2 and result["failure_kind"] == "incorrect"


@pytest.mark.slow
def test_dropping_the_norms_is_caught(tmp_path: Path) -> None:
    wrong = playbook_kernel(tmp_path, KEEP, "02-rank-by-dot-only.md")
    code, result = trial("pq_cosine", wrong, None, tmp_path / "wrong.json")
    assert code == 2 and result["failure_kind"] == "incorrect" and "differs from" in result["failure"]


@pytest.mark.slow
def test_offline_loop_keeps_the_fused_search(repo: Path) -> None:
    # Judged at the gate's calibrated size, 16 blocks of 8 queries (4 pairs x 4 blocks: fewer numba imports).
    config = write_config(repo, cumulative=False, trial_replicates=4, trial_sessions=4, trial_queries=8)
    proc = run_daemon(repo, None, "--target", "pq-cosine", "--model", "offline", "--max-attempts", "3",
                      config=config, timeout=900)                    # the slower entry 04: see pq-dot's test
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted((repo / "runs" / "pq-cosine").glob("*/run.json"))
    got = finished(runs[0].parent)
    reasons = [got[n]["reason"] for n in sorted(got)]
    # Against the compiled baseline the fused search is a modest win (1.07x [1.06, 1.09] paired,
    # quiet machine), so on a busy one the gate may miss it; it must measure faster either way.
    assert reasons[0] in ("keep", "tradeoff", "worst_combo", "not_faster") and got[1]["speedup"] > 1.0
    # Entry 2 edits the kept kernel: without the keep its SEARCH text is not there to replace.
    assert reasons[1:3] == (["incorrect"] if reasons[0] == "keep" else ["edit_failed"]) + ["edit_failed"]
    assert len(reasons) == 3
    assert reasons[0] != "keep" or got[1]["speedup"] > 1.02
