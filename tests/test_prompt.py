"""orchestrator.prompt: the conversation is rebuilt from files on disk each attempt."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import BASELINE, ROOT, history
from orchestrator.ledger import RunHistory
from orchestrator.config import RunConfig
from orchestrator.loop import limits_text
from orchestrator.prompt import (MAX_EVIDENCE_CHARS, PEOPLE_ONLY, Context, PromptError, PromptFiles, build,
                                 history_table, model_copy, repair)
from targets.harness import machine
from orchestrator.provider import Message


@pytest.fixture
def files(tmp_path: Path) -> PromptFiles:
    shutil.copy(ROOT / "HARNESS.md", tmp_path / "HARNESS.md")
    (tmp_path / "target").mkdir()
    shutil.copy(ROOT / "targets" / "pq_l2" / "program.md", tmp_path / "target" / "program.md")
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    return PromptFiles(harness=tmp_path / "HARNESS.md", program=tmp_path / "target" / "program.md",
                       lessons=tmp_path / "target" / "lessons.md", prompts_dir=tmp_path / "prompts")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


COMBOS = ("128x16/clustered", "768x96/uniform")


def trial(speedups: dict[str, float], ns: dict[str, float], incumbent_ns: dict[str, float]) -> dict:
    """A paired trial as the runner reports it (the fields the prompt reads)."""
    return {"mode": "paired", "per_combo_speedup": speedups, "per_combo_geomean_ns": ns,
            "incumbent_per_combo_geomean_ns": incumbent_ns}


RECORDS = [
    {"attempt": 1, "verdict": "keep", "reason": "keep", "speedup": 1.5, "speedup_ci": [1.4, 1.6],
     "hypothesis": "vectorise it", "worst_combo": {"combo": "768x96/uniform", "value": 1.2},
     "trial": trial({COMBOS[0]: 1.8, COMBOS[1]: 1.2}, {COMBOS[0]: 90_000.0, COMBOS[1]: 410_000.0},
                    {COMBOS[0]: 160_000.0, COMBOS[1]: 492_000.0}),
     "lesson": "the table dominates at M=16"},
    {"attempt": 2, "verdict": "discard", "reason": "not_faster", "speedup": 0.99, "speedup_ci": [0.95, 1.02],
     "hypothesis": "use float64", "reasons": ["not_faster: CI [0.95, 1.02]"],
     "trial": trial({COMBOS[0]: 1.0, COMBOS[1]: 0.98}, {}, {})},
    {"attempt": 3, "verdict": "discard", "reason": "worst_combo", "speedup": 1.08, "speedup_ci": [1.03, 1.12],
     "hypothesis": "block N by 256", "reasons": ["worst_combo: 768x96/uniform 0.91x", "tradeoff: gains 2x losses"],
     "diff": "--- a/kernels.py\n+++ b/kernels.py\n-    BLOCK = 0\n+    BLOCK = 256\n",
     "trial": trial({COMBOS[0]: 1.25, COMBOS[1]: 0.91}, {}, {})},
    {"attempt": 4, "verdict": "discard", "reason": "edit_failed", "hypothesis": None,
     "reason_detail": "block 1 does not occur", "evidence": "block 1: the SEARCH text does not occur"},
]
PROFILE = {"kernel": "attempt 1", "shapes": {"128x16": {
    "distribution": "clustered", "op_ns": 265_000.0, "r2": 0.994, "max_rel_residual": 0.043,
    "points_ns": {"num_vectors=1000,k=10": 90_000.0},
    "stages": [{"kind": "fixed", "label": "distance table + fixed", "factor": "", "ns": 25_100.0, "at": 1, "share": 0.09},
               {"kind": "slope", "label": "per vector (distance pass)", "factor": "num_vectors", "ns": 8.14,
                "at": 20_000, "share": 0.61},
               {"kind": "slope", "label": "per k (top-k)", "factor": "k", "ns": 316.0, "at": 10, "share": 0.01},
               {"kind": "overhead", "label": "harness round trip", "factor": "", "ns": 73_800.0, "at": 1,
                "share": 0.28}]}}}


def make(files: PromptFiles, kernel: str = "KERNEL_TEXT = 1\n", records=RECORDS, rows: int = 40,
         profile: dict | None = PROFILE, run_id: str = "RUN-B"):
    return build(files, Context(target="pq-l2", run_id=run_id, attempt=len(records) + 1, kernel=kernel,
                                history=history(*records), history_rows=rows, machine=machine.facts(),
                                limits=limits_text(RunConfig()), profile=profile))


def test_system_message_holds_what_is_fixed_for_the_run(files: PromptFiles) -> None:
    p = make(files)
    assert [m.role for m in p.messages] == ["system", "user"]
    system = p.messages[0].content
    assert files.program.read_text().strip() in system and "program.md (pq-l2)" in system
    # The reply format never changes: it belongs to the cached system prefix, not the user message.
    assert "<<<<<<< SEARCH" in system and "LESSON:" in system and "<<<<<<< SEARCH" not in p.messages[1].content
    assert "${" not in system
    assert "KERNEL_TEXT" not in system and "vectorise it" not in system
    assert p.messages[0].boundaries == (len(system),)          # one cache breakpoint: the whole of it


def test_the_model_gets_the_machine_and_the_limits(files: PromptFiles) -> None:
    system = make(files).messages[0].content
    caches = machine.cache_sizes()
    assert machine.cpu_model() in system and machine.simd_flags() in system
    assert all(f"{level} {size}" in system for level, size in caches.items())
    assert "numba" in system and "llvmlite" in system and "numpy" in system
    c = RunConfig()
    assert f"{c.trial_budget_seconds:g} s of wall time, numba compilation" in system
    assert f"{c.repair_turns} repair turn(s)" in system and "at most 64 KB" in system
    assert f"above {1 + c.gate.min_effect:g}x" in system


def test_harness_sections_for_people_are_not_sent(files: PromptFiles) -> None:
    harness = files.harness.read_text()
    assert "## 5. The result block and exit codes\n" + PEOPLE_ONLY in harness
    system = make(files).messages[0].content
    assert "The result block and exit codes" not in system and "Running a trial by hand" not in system
    assert "orchestrator trial --target" not in system
    assert "## 4. The measurement" in system and "## 7. The loop" in system and "Discard reasons" in system


def test_model_copy_cuts_a_marked_section_to_the_next_heading_of_its_level() -> None:
    text = f"# T\n## A\nkeep a\n## B\n{PEOPLE_ONLY}\ncut b\n### B.1\ncut too\n## C\nkeep c\n"
    assert model_copy(text) == "# T\n## A\nkeep a\n## C\nkeep c\n"
    # A "# comment" in a fenced block of a cut section is code, not a heading that ends the cut.
    fenced = f"## A\nkeep a\n## B\n{PEOPLE_ONLY}\n```\n# a shell comment\n```\ncut b\n## C\nkeep c\n"
    assert model_copy(fenced) == "## A\nkeep a\n## C\nkeep c\n"


def test_user_message_holds_this_attempt(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    assert user.startswith("# pq-l2: the current best kernel and this run so far") and "\n# Attempt 5\n" in user
    assert "```python\nKERNEL_TEXT = 1\n```" in user
    assert "| 1 | keep | 1.500x [1.400, 1.600] | 768x96/uniform 1.20x | vectorise it — lesson: the table dominates" in user
    assert "${" not in user


def test_incumbent_time_per_combo_and_the_slowest(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    assert "current best kernel (attempt 1)" in user
    assert "- 128x16/clustered: 90.0 µs\n- 768x96/uniform: 410.0 µs  <- slowest" in user
    assert "768x96/uniform takes 82% of the summed time" in user


def test_before_any_keep_the_baseline_times_come_from_the_first_trial(files: PromptFiles) -> None:
    user = make(files, records=RECORDS[1:2] and [{**RECORDS[0], "verdict": "discard", "reason": "not_faster"}]
                 ).messages[1].content
    assert "current best kernel (the baseline)" in user and "- 128x16/clustered: 160.0 µs" in user


def test_stage_split_of_the_incumbent(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    assert ("- 128x16 (265.0 µs per op): distance table + fixed 25.1 µs (9%), per vector (distance pass) 8.14 ns "
            "x 20,000 (61%), per k (top-k) 316 ns x 10 (1%), harness round trip 73.8 µs (28%); fit R² 0.994, "
            "worst residual 4%") in user
    assert "Time by stage: not measured for this kernel." in make(files, profile=None).messages[1].content
    failed = make(files, profile={"kernel": "attempt 1", "error": "kernel crashed"}).messages[1].content
    assert "the profile of attempt 1 failed (kernel crashed)" in failed


def test_per_combo_speedups_of_recent_attempts(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    assert "| combo | #1 (keep) | #2 (discard) | #3 (discard) |" in user
    assert "| 768x96/uniform | 1.20x | 0.98x | 0.91x |" in user


def test_near_misses_show_their_diff_and_every_failed_rule(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    section = user.split("## Near misses")[1].split("## Recent failures")[0]
    assert "### Attempt 3: 1.080x overall" in section
    assert "worst_combo: 768x96/uniform 0.91x; tradeoff: gains 2x losses" in section
    assert "+    BLOCK = 256" in section
    assert "Attempt 2" not in section                    # slower: not a near miss


def test_failures_beyond_the_last_with_every_rule(files: PromptFiles) -> None:
    user = make(files).messages[1].content
    section = user.split("## Recent failures")[1]
    assert "### Attempt 2 (not_faster)" in section and "### Attempt 3 (worst_combo)" in section
    assert "worst_combo: 768x96/uniform 0.91x; tradeoff: gains 2x losses" in section
    assert "### Attempt 4 (edit_failed)" in section and "block 1: the SEARCH text does not occur" in section


def test_failure_evidence_keeps_the_tail(files: PromptFiles) -> None:
    evidence = "HEAD" + "a" * MAX_EVIDENCE_CHARS + "TAIL"
    user = make(files, records=[*RECORDS[:-1], {**RECORDS[-1], "evidence": evidence}]).messages[1].content
    assert "TAIL" in user and "HEAD" not in user


def test_placeholders_when_nothing_happened_yet(files: PromptFiles) -> None:
    user = make(files, records=[], profile=None).messages[1].content
    assert "(none yet: this is the first attempt)" in user
    assert "## Lessons from earlier runs on this machine\n(none yet)" in user
    assert "No trial has measured the current best kernel yet." in user
    assert "## Recent failures, with every failing rule and the evidence\n(none)" in user


def test_lessons_are_labelled_capped_keeps_first_and_this_runs_own_left_to_the_table(files: PromptFiles) -> None:
    lines = [f"- 2026-11-0{i % 9 + 1} run RUN-A attempt {i} (discard: not_faster): idea {i} was slow" for i in range(30)]
    lines.insert(3, "- 2026-11-01 run RUN-A attempt 99 (keep): transposed codebook pays")
    lines.append("- 2026-11-30 run RUN-B attempt 1 (keep): this run's own lesson")
    files.lessons.write_text("\n".join(lines) + "\n")
    user = make(files).messages[1].content
    section = user.split("## Lessons from earlier runs on this machine")[1].split("## The current best kernels.py")[0]
    assert "Unverified" in section
    shown = [ln for ln in section.splitlines() if ln.startswith("- ")]
    assert shown[0].endswith("transposed codebook pays")                 # tied to a keep: first
    assert len(shown) == 12 and "idea 29 was slow" in section and "idea 5 was slow" not in section
    assert "this run's own lesson" not in section
    assert "(19 older or discarded-attempt lessons not shown)" in section


def test_the_growing_prefix_of_one_attempt_is_a_prefix_of_the_next(files: PromptFiles) -> None:
    """What a cache needs: the user message up to its last history row is reproduced byte for byte
    in the next attempt's, and each row ends on a block boundary."""
    first, second = make(files, records=RECORDS[:3]), make(files, records=RECORDS)
    u1, u2 = first.messages[1], second.messages[1]
    assert len(u1.boundaries) == 1 + 3 and len(u2.boundaries) == 1 + 4      # after the header, after each row
    stable = u1.content[:u1.boundaries[-1]]
    assert u2.content.startswith(stable) and stable in u2.content[:u2.boundaries[-1]]
    assert set(u1.boundaries) <= set(u2.boundaries)
    assert u1.content[u1.boundaries[-2]:u1.boundaries[-1]].startswith("| 3 | discard")


def test_a_history_over_its_rows_drops_the_oldest_half_at_once() -> None:
    records = [{"attempt": n, "verdict": "discard", "reason": "crash", "hypothesis": f"idea {n}"} for n in range(1, 12)]
    tables = [history_table(history(*records[:n]), 4) for n in range(4, 12)]
    shown = [[int(ln.split(" | ")[0][2:]) for ln in t.splitlines() if ln[:3].strip("| ").isdigit()] for t in tables]
    # The window starts at attempt 1 until 4 rows overflow, then jumps by 2 (half the rows): between
    # jumps each table is the previous one plus a row.
    assert [rows[0] for rows in shown] == [1, 3, 3, 5, 5, 7, 7, 9]
    assert all(len(rows) <= 4 and rows == list(range(rows[0], rows[-1] + 1)) for rows in shown)
    assert tables[2].startswith(tables[1].rstrip("\n")) and tables[4].startswith(tables[3].rstrip("\n"))
    assert tables[1].splitlines()[0] == "(2 older attempts not shown)"


def test_file_hashes_and_texts(files: PromptFiles) -> None:
    p = make(files)
    assert p.file_hashes == {
        "system.md": sha(files.prompts_dir / "system.md"), "HARNESS.md": sha(files.harness),
        "program.md": sha(files.program), "lessons.md": "absent",
        "attempt.md": sha(files.prompts_dir / "attempt.md"), "reply-format.md": sha(files.prompts_dir / "reply-format.md"),
    }
    assert all(hashlib.sha256(p.file_texts[name]).hexdigest() == h for name, h in p.file_hashes.items() if h != "absent")
    files.lessons.write_text("one lesson\n")
    assert make(files).file_hashes["lessons.md"] == hashlib.sha256(b"one lesson\n").hexdigest()


def test_files_are_reread_every_build(files: PromptFiles) -> None:
    first = make(files)
    files.program.write_text(files.program.read_text() + "\nNEW PRIOR: try the blocked layout.\n")
    second = make(files)
    assert "NEW PRIOR: try the blocked layout." not in first.messages[0].content
    assert "NEW PRIOR: try the blocked layout." in second.messages[0].content
    assert first.file_hashes["program.md"] != second.file_hashes["program.md"] == sha(files.program)
    assert first.file_hashes["HARNESS.md"] == second.file_hashes["HARNESS.md"]
    (files.prompts_dir / "attempt.md").write_text("Attempt ${attempt}: ${kernel}\n${history}\n")
    assert make(files).messages[1].content.startswith("Attempt 5: KERNEL_TEXT = 1")


def test_a_template_naming_an_unknown_field_is_a_clear_error(files: PromptFiles) -> None:
    (files.prompts_dir / "attempt.md").write_text("Attempt ${attempt} ${last_failure}\n")
    with pytest.raises(PromptError, match=r"attempt.md uses \$\{last_failure\}, which is not a field here; the fields "
                                          r"are .*\$\{failures\}"):
        make(files)


def test_missing_required_file_raises(files: PromptFiles) -> None:
    files.harness.unlink()
    with pytest.raises(FileNotFoundError):
        make(files)


def test_dollar_and_braces_in_inputs_survive(files: PromptFiles) -> None:
    kernel = "COST = '$5 ${price} $$ {} {0}'\nx = f'{a!r}'\n"
    files.lessons.write_text("- 2026 run OTHER attempt 1 (keep): $HOME is not expanded; ${lessons} neither\n")
    records = [*RECORDS[:-1], {**RECORDS[-1], "evidence": "KeyError: '${kernel}' at $x"}]
    user = make(files, kernel=kernel, records=records).messages[1].content
    assert "COST = '$5 ${price} $$ {} {0}'\nx = f'{a!r}'" in user
    assert "$HOME is not expanded; ${lessons} neither" in user
    assert "KeyError: '${kernel}' at $x" in user


def test_real_baseline_kernel_is_embedded_verbatim(files: PromptFiles) -> None:
    kernel = BASELINE.read_text()
    user = make(files, kernel=kernel).messages[1].content
    assert f"```python\n{kernel.rstrip(chr(10))}\n```" in user


def test_render_labels_roles(files: PromptFiles) -> None:
    text = make(files).render()
    assert text.startswith("===== system =====\n") and "\n\n===== user =====\n# pq-l2" in text


# -- history table -------------------------------------------------------------------------------

def test_history_empty() -> None:
    assert "none yet" in history_table(RunHistory(), 40)


def test_history_rows() -> None:
    lines = history_table(history(*RECORDS[:3], {"attempt": 4, "verdict": "discard", "reason": "duplicate",
                                                  "hypothesis": "again", "duplicate_of": 2}), 40).splitlines()
    assert lines == [
        "| # | verdict | speedup vs its incumbent [90% CI] | worst combo | hypothesis — reason — lesson |",
        "|---|---|---|---|---|",
        "| 1 | keep | 1.500x [1.400, 1.600] | 768x96/uniform 1.20x | vectorise it — lesson: the table dominates at M=16 |",
        "| 2 | discard | 0.990x [0.950, 1.020] | - | use float64 — not_faster |",
        "| 3 | discard | 1.080x [1.030, 1.120] | - | block N by 256 — worst_combo |",
        "| 4 | discard | - | - | again — duplicate (same code as attempt 2) |",
    ]


def test_history_escapes_pipes() -> None:
    records = [{"attempt": 7, "verdict": "discard", "reason": "a|b", "hypothesis": "use |q|² + |c|²"}]
    row = history_table(history(*records), 40).splitlines()[-1]
    assert row == "| 7 | discard | - | - | use /q/² + /c/² — a/b |"
    assert row.count("|") == 6


def test_history_truncates_long_text() -> None:
    records = [{"attempt": 1, "verdict": "keep", "hypothesis": "x" * 1000}]
    row = history_table(history(*records), 40).splitlines()[-1]
    assert row == f"| 1 | keep | - | - | {'x' * 400} |"


# -- repair --------------------------------------------------------------------------------------

def test_repair_extends_the_conversation(files: PromptFiles) -> None:
    p = make(files)
    r = repair(p, files, "HYPOTHESIS: h\n<<<<<<< SEARCH\nnope\n", "block 1: the SEARCH text does not occur")
    assert r.messages[:2] == p.messages
    assert r.messages[2] == Message("assistant", "HYPOTHESIS: h\n<<<<<<< SEARCH\nnope\n")
    assert r.messages[3].role == "user"
    assert "Your reply could not be applied:\n\nblock 1: the SEARCH text does not occur" in r.messages[3].content
    assert r.file_hashes == {**p.file_hashes, "repair.md": sha(files.prompts_dir / "repair.md")}
    assert len(p.messages) == 2 and "repair.md" not in p.file_hashes      # the original is untouched
    # A second repair keeps every earlier turn.
    r2 = repair(r, files, "second try", "still wrong: $x ${error}")
    assert r2.messages[:4] == r.messages and len(r2.messages) == 6
    assert "still wrong: $x ${error}" in r2.messages[5].content
