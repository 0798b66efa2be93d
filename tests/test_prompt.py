"""orchestrator.prompt: the conversation is rebuilt from files on disk each attempt."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import BASELINE, ROOT, history
from orchestrator.ledger import RunHistory
from orchestrator.prompt import MAX_EVIDENCE_CHARS, PromptFiles, build, history_table, repair
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


RECORDS = [
    {"attempt": 1, "verdict": "keep", "speedup": 1.5, "speedup_ci": [1.4, 1.6], "hypothesis": "vectorise it"},
    {"attempt": 2, "verdict": "discard", "reason": "not_faster", "speedup": 0.99, "speedup_ci": [0.95, 1.02],
     "hypothesis": "use float64"},
    {"attempt": 3, "verdict": "discard", "reason": "edit_error", "hypothesis": None},
]


def make(files: PromptFiles, kernel: str = "KERNEL_TEXT = 1\n", records=RECORDS,
         last_failure: str | None = "block 1 does not occur", rows: int = 40):
    """A prompt whose last (failed) record has ``last_failure`` as its evidence."""
    if last_failure is not None:
        records = [*records[:-1], {**records[-1], "evidence": last_failure}]
    return build(files, "pq-l2", 4, kernel, history(*records), rows)


def test_system_message_holds_harness_and_program(files: PromptFiles) -> None:
    p = make(files)
    assert [m.role for m in p.messages] == ["system", "user"]
    system = p.messages[0].content
    assert files.harness.read_text().strip() in system
    assert files.program.read_text().strip() in system
    assert "program.md (pq-l2)" in system
    assert "${" not in system
    # The volatile parts belong to the user message, so the system prefix can be cached.
    assert "KERNEL_TEXT" not in system and "vectorise it" not in system


def test_user_message_holds_everything_of_this_attempt(files: PromptFiles) -> None:
    files.lessons.write_text("- numpy call overhead dominates at M=16\n")
    user = make(files).messages[1].content
    assert user.startswith("# Attempt 4 on pq-l2")
    assert "```python\nKERNEL_TEXT = 1\n```" in user
    assert "| 1 | keep | 1.500x [1.400, 1.600] | vectorise it |" in user
    assert "- numpy call overhead dominates at M=16" in user
    assert "attempt 3 (edit_error): block 1 does not occur" in user
    assert "Reply in exactly this shape" in user and "<<<<<<< SEARCH" in user and "LESSON: <one line>" in user
    assert "${" not in user


def test_placeholders_when_nothing_happened_yet(files: PromptFiles) -> None:
    user = make(files, records=[], last_failure=None).messages[1].content
    assert "(none yet: this is the first attempt)" in user
    assert "## Lessons recorded on this machine (lessons.md)\n(none yet)" in user
    assert "(none: the last attempt did not fail)" in user


def test_empty_lessons_file_reads_as_none_yet(files: PromptFiles) -> None:
    files.lessons.write_text("\n\n")
    p = make(files)
    assert "## Lessons recorded on this machine (lessons.md)\n(none yet)" in p.messages[1].content
    assert p.file_hashes["lessons.md"] == hashlib.sha256(b"\n\n").hexdigest()


def test_evidence_keeps_the_tail(files: PromptFiles) -> None:
    evidence = "HEAD" + "a" * MAX_EVIDENCE_CHARS + "TAIL"
    user = make(files, last_failure=evidence).messages[1].content
    assert "TAIL" in user and "HEAD" not in user


def test_file_hashes(files: PromptFiles) -> None:
    p = make(files)
    assert p.file_hashes == {
        "system.md": sha(files.prompts_dir / "system.md"), "HARNESS.md": sha(files.harness),
        "program.md": sha(files.program), "lessons.md": "absent",
        "attempt.md": sha(files.prompts_dir / "attempt.md"), "reply-format.md": sha(files.prompts_dir / "reply-format.md"),
    }
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
    # A template edit takes effect too.
    (files.prompts_dir / "attempt.md").write_text("Attempt ${attempt}: ${kernel}\n${history}${lessons}"
                                                  "${last_failure}${reply_format}${target}\n")
    assert make(files).messages[1].content.startswith("Attempt 4: KERNEL_TEXT = 1")


def test_missing_required_file_raises(files: PromptFiles) -> None:
    files.harness.unlink()
    with pytest.raises(FileNotFoundError):
        make(files)


def test_dollar_and_braces_in_inputs_survive(files: PromptFiles) -> None:
    kernel = "COST = '$5 ${price} $$ {} {0}'\nx = f'{a!r}'\n"
    files.lessons.write_text("$HOME is not expanded; ${lessons} neither\n")
    p = make(files, kernel=kernel, last_failure="KeyError: '${kernel}' at $x")
    user = p.messages[1].content
    assert "COST = '$5 ${price} $$ {} {0}'\nx = f'{a!r}'" in user
    assert "$HOME is not expanded; ${lessons} neither" in user
    assert "KeyError: '${kernel}' at $x" in user


def test_real_baseline_kernel_is_embedded_verbatim(files: PromptFiles) -> None:
    kernel = BASELINE.read_text()
    user = make(files, kernel=kernel).messages[1].content
    assert f"```python\n{kernel.rstrip(chr(10))}\n```" in user


def test_render_labels_roles(files: PromptFiles) -> None:
    text = make(files).render()
    assert text.startswith("===== system =====\n") and "\n\n===== user =====\n# Attempt 4" in text


# -- history table -------------------------------------------------------------------------------

def test_history_empty() -> None:
    assert "none yet" in history_table(RunHistory(), 40)


def test_history_rows() -> None:
    lines = history_table(history(*RECORDS), 40).splitlines()
    assert lines == [
        "| # | verdict | speedup [90% CI] | hypothesis / reason |",
        "|---|---|---|---|",
        "| 1 | keep | 1.500x [1.400, 1.600] | vectorise it |",
        "| 2 | discard | 0.990x [0.950, 1.020] | use float64 — not_faster |",
        "| 3 | discard | - | (no hypothesis) — edit_error |",
    ]


def test_history_shows_only_the_last_rows() -> None:
    records = [{"attempt": n, "verdict": "discard", "reason": "crash", "hypothesis": f"idea {n}"} for n in range(1, 6)]
    text = history_table(history(*records), 2)
    lines = text.splitlines()
    assert lines[0] == "(3 older attempts not shown)"
    assert [ln.split(" | ")[0] for ln in lines[3:]] == ["| 4", "| 5"]
    assert "idea 3" not in text and "idea 1" not in text
    assert "not shown" not in history_table(history(*records), 5)


def test_history_escapes_pipes() -> None:
    records = [{"attempt": 7, "verdict": "discard", "reason": "a|b", "hypothesis": "use |q|² + |c|²"}]
    row = history_table(history(*records), 40).splitlines()[-1]
    assert row == "| 7 | discard | - | use /q/² + /c/² — a/b |"
    assert row.count("|") == 5


def test_history_truncates_long_text() -> None:
    records = [{"attempt": 1, "verdict": "keep", "hypothesis": "x" * 1000}]
    row = history_table(history(*records), 40).splitlines()[-1]
    assert row == f"| 1 | keep | - | {'x' * 300} |"


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
