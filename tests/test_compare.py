"""orchestrator.compare and `report --compare`: a target's runs side by side, with what changed in
their prompt inputs; cache-read tokens in `status` and the report.

Runs are built with the real Ledger API (no trials): records with the fields a finished attempt
has, and the prompt inputs saved the way the loop saves them.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, copy_repo, history, write_config
from orchestrator import cli, compare, project, report
from orchestrator.ledger import AttemptRecord, Ledger

TARGET = "pq-l2"
PROGRAM = (ROOT / "targets" / "pq_l2" / "program.md").read_text()
BASE_TEXTS = {"system.md": (ROOT / "prompts" / "system.md").read_bytes(),
              "HARNESS.md": (ROOT / "HARNESS.md").read_bytes(),
              "attempt.md": (ROOT / "prompts" / "attempt.md").read_bytes(),
              "reply-format.md": (ROOT / "prompts" / "reply-format.md").read_bytes()}


def edited_program() -> tuple[str, int, int, str]:
    """program.md with one line under its priors heading replaced by three: the text, +, − and
    the section the change is in."""
    lines = PROGRAM.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("## Priors for this stack"))
    at = heading + 2
    assert lines[at].strip(), "the edit replaces a line of text"
    new = [*lines[:at], "- new prior one", "- new prior two", "- new prior three", *lines[at + 1:]]
    return "\n".join(new) + "\n", 3, 1, lines[heading].removeprefix("## ")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_run(runs: Path, run_id: str, records: list[dict[str, Any]], texts: list[dict[str, bytes]] | None,
             provider: str = "anthropic", model: str = "claude-test", save: bool = True) -> Path:
    """A finished run: ``records`` (ledger fields; a keep's cumulative/vs-Lance numbers go through
    ``annotate`` as the loop writes them), attempt n's prompt built from ``texts[n - 1]``."""
    ledger = Ledger(runs / TARGET / run_id)
    ledger.create({"run_id": run_id, "target": TARGET, "provider": provider, "model": model,
                   "started_at": f"{run_id}Z", "branch": f"autoresearch/{TARGET}/{run_id}"})
    for n, fields in enumerate(records, 1):
        measured = {k: fields.pop(k) for k in list(fields) if k in ("cumulative_speedup", "vs_lance")}
        rec = AttemptRecord(attempt=n, provider=provider, model=model, **fields)
        if texts is not None:
            rec.prompt_hashes = {name: sha(data) for name, data in texts[n - 1].items()}
            if save:
                compare.save_inputs(ledger.dir, texts[n - 1])
        ledger.start(n, rec)
        ledger.finish(rec)
        if measured:
            ledger.annotate(n, measured)
    return ledger.dir


def keep(speedup: float, **extra: Any) -> dict[str, Any]:
    return {"verdict": "keep", "reason": "keep", "speedup": speedup, **extra}


def discard(reason: str = "not_faster", **extra: Any) -> dict[str, Any]:
    return {"verdict": "discard", "reason": reason, **extra}


def tokens(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, float]:
    return {"input_tokens": inp, "output_tokens": out, "cache_read_tokens": read, "cache_write_tokens": write,
            "latency_seconds": 1.5}


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs/ folder of its own (report reads project.RUNS at call time)."""
    monkeypatch.setattr(project, "RUNS", tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def three(runs: Path) -> dict[str, Any]:
    """Run 1 offline (two keeps, one only paired-measured), run 2 with program.md edited and
    attempt.md edited mid-run (tokens, cache reads, repairs), run 3 with zero keeps, run 4 empty."""
    v1 = {**BASE_TEXTS, "program.md": PROGRAM.encode(), "lessons.md": b""}
    lessons = [f"- lesson {i}\n".encode() for i in range(4)]
    r1 = [keep(1.3, cumulative_speedup=1.35, vs_lance=0.8), discard(), keep(1.2)]
    make_run(runs, "20250101-000001", [dict(r) for r in r1],
             [{**v1, "lessons.md": b"".join(lessons[:i])} for i in range(3)], provider="offline",
             model="playbook:playbook")
    program2, plus, minus, section = edited_program()
    v2 = {**v1, "program.md": program2.encode(), "lessons.md": b"".join(lessons[:3])}
    attempt2 = BASE_TEXTS["attempt.md"] + b"\nOne more instruction.\n"
    r2 = [discard("incorrect", repair_turns=2, tokens=tokens(1000, 200, 0, 3000), cost_usd=0.05),
          keep(1.5, cumulative_speedup=1.6, vs_lance=1.1, repair_turns=1, tokens=tokens(900, 150, 3000), cost_usd=0.02),
          discard(tokens=tokens(950, 180, 3000), cost_usd=0.03)]
    make_run(runs, "20250102-000001", [dict(r) for r in r2],
             [v2, {**v2, "lessons.md": v2["lessons.md"] + b"- more\n"}, {**v2, "attempt.md": attempt2}])
    v3 = {**v2, "attempt.md": attempt2, "program.md": program2.encode() + b"\n## Never saved\n"}
    r3 = [discard("incorrect", tokens=tokens(100, 10)), discard(tokens=tokens(100, 10))]
    make_run(runs, "20250103-000001", [dict(r) for r in r3], [v3, v3], save=False)
    make_run(runs, "20250104-000001", [], None)
    return {"r1": r1, "r2": r2, "r3": r3, "program2": program2, "stat": (plus, minus, section), "v3": v3,
            "v2": v2}


# ---------------------------------------------------------------------------------- saving inputs

def test_save_inputs_is_content_addressed_and_written_once(tmp_path: Path) -> None:
    texts = {"program.md": b"# p\n\nv1\n", "HARNESS.md": b"# h\n"}
    compare.save_inputs(tmp_path, texts)
    stored = tmp_path / "inputs" / f"program.md.{sha(texts['program.md'])[:16]}"
    assert stored.read_bytes() == texts["program.md"]
    before = stored.stat().st_mtime_ns
    compare.save_inputs(tmp_path, {**texts, "program.md": b"# p\n\nv2\n"})
    assert stored.stat().st_mtime_ns == before                       # present: not rewritten
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "inputs").iterdir()) == ["HARNESS", "program", "program"]
    assert not list((tmp_path / "inputs").glob(".*"))                # no temporary files left
    assert compare.saved_text([tmp_path], "program.md", sha(b"# p\n\nv2\n")) == "# p\n\nv2\n"
    assert compare.saved_text([tmp_path], "program.md", sha(b"never saved")) is None
    assert compare.saved_text([tmp_path], "lessons.md", compare.ABSENT) == ""
    with pytest.raises(ValueError, match="bare file name"):
        compare.save_inputs(tmp_path, {"../escape.md": b"x"})


def test_a_saved_text_must_match_its_whole_hash(tmp_path: Path) -> None:
    compare.save_inputs(tmp_path, {"program.md": b"real"})
    (tmp_path / "inputs" / f"program.md.{sha(b'real')[:16]}").write_bytes(b"tampered")
    assert compare.saved_text([tmp_path], "program.md", sha(b"real")) is None


# ---------------------------------------------------------------------------------- diffs

def test_diff_stat_counts_lines_and_names_the_section_of_the_first_change() -> None:
    program2, plus, minus, section = edited_program()
    assert compare.diff_stat(PROGRAM, program2) == compare.DiffStat(plus, minus, section)
    assert compare.diff_stat(PROGRAM, PROGRAM) == compare.DiffStat(0, 0, None)


def test_a_comment_in_a_code_block_is_not_a_heading() -> None:
    old = "# Title\n\n## The API\n\n```python\n# not a heading\nx = 1\n```\n"
    new = old.replace("x = 1", "x = 2")
    assert compare.diff_stat(old, new) == compare.DiffStat(1, 1, "The API")


def test_a_deletion_is_placed_where_it_was() -> None:
    old = "# Title\n\nintro\n\n## Gone\n\nline\n"
    new = "# Title\n\nintro\n"
    stat = compare.diff_stat(old, new)
    assert (stat.added, stat.removed) == (0, len(old.splitlines()) - len(new.splitlines()))
    assert stat.section == "Title"                                   # the heading above the first deleted line


# ---------------------------------------------------------------------------------- comparing runs

def expected_best(records: list[dict[str, Any]]) -> float | None:
    """Cumulative speedup of the last keep where measured, else the chain of paired speedups."""
    best = None
    for r in records:
        if r["verdict"] == "keep":
            best = r.get("cumulative_speedup") or (best or 1.0) * r["speedup"]
    return best


def test_each_run_says_what_changed_since_the_previous_and_how_it_did(three: dict[str, Any]) -> None:
    rows = compare.compare_runs(report.all_runs(TARGET))
    assert [r.run_id for r in rows] == ["20250101-000001", "20250102-000001", "20250103-000001",
                                        "20250104-000001"]
    first, second, third, empty = rows
    assert first.model == "offline playbook (no LLM)" and second.model == "claude-test (anthropic)"
    assert first.changes is None and "nothing to compare with" in first.changes_text()

    # Run 2: program.md edited (diffed against what run 1 ended on); lessons.md grew by run 1's last lesson.
    plus, minus, section = three["stat"]
    by_name = {c.name: c for c in second.changes or []}
    assert set(by_name) == {"program.md", "lessons.md"}
    assert by_name["program.md"].stat == compare.DiffStat(plus, minus, section)
    assert by_name["lessons.md"].stat is not None and by_name["lessons.md"].stat.added == 1
    text = second.changes_text()
    assert f"program.md +{plus} −{minus} (§ {section})" in text and "since 20250101-000001" in text
    # attempt.md changed at attempt 3; lessons.md changing within the run is the loop's doing, not flagged.
    assert second.inputs is not None and second.inputs.mid_run == {"attempt.md": 3}
    assert "changed mid-run: attempt.md (from attempt 3)" in text

    # Run 3 saved no texts: its hashes only. Compared with run 2's end, only program.md differs.
    assert not third.texts_saved and third.hashes_text().endswith("(texts not saved)")
    v3 = three["v3"]
    assert f"program.md {sha(v3['program.md'])[:8]}" in third.hashes_text()
    assert [c.name for c in third.changes or []] == ["program.md"] and third.changes
    assert third.changes[0].stat is None and "(texts not saved)" in third.changes[0].text()

    # The numbers, from the records written above.
    for row, records in ((first, three["r1"]), (second, three["r2"]), (third, three["r3"])):
        keeps = [r for r in records if r["verdict"] == "keep"]
        assert row.attempts == len(records) and row.keeps == len(keeps)
        assert row.keep_rate == pytest.approx(len(keeps) / len(records))
        assert row.repairs_per_attempt == pytest.approx(sum(r.get("repair_turns", 0) for r in records) / len(records))
        cost = sum(r.get("cost_usd", 0.0) for r in records)
        assert row.cost_usd == pytest.approx(cost)
        assert row.cost_per_keep == (pytest.approx(cost / len(keeps)) if keeps else None)
        best = expected_best(records)
        assert row.best_speedup == (pytest.approx(best) if best else None)
        assert row.best_measured == bool(keeps and keeps[-1].get("cumulative_speedup"))
        assert row.vs_lance == (keeps[-1].get("vs_lance") if keeps else None)
        assert row.first_keep == next((n for n, r in enumerate(records, 1) if r["verdict"] == "keep"), None)
        for kind in ("input", "output", "cache_read", "cache_write"):
            assert getattr(row.tokens, f"{kind}_tokens") == sum(r.get("tokens", {}).get(f"{kind}_tokens", 0) for r in records)
    t = second.tokens
    assert t.cache_hit_share == pytest.approx(t.cache_read_tokens / (t.input_tokens + t.cache_read_tokens + t.cache_write_tokens))
    assert first.tokens.cache_hit_share is None                      # no tokens: no share, not a division by 0

    # Zero keeps and no attempts at all: dashes, not crashes.
    assert third.keep_rate == 0 and third.cost_per_keep is None and third.best_speedup is None
    assert empty.attempts == 0 and empty.keep_rate is None and empty.repairs_per_attempt is None
    assert empty.inputs is None and empty.changes is None and "no attempts" in empty.changes_text()


def test_the_table_shows_every_run_with_dashes_where_nothing_was_measured(three: dict[str, Any]) -> None:
    rows = compare.compare_runs(report.all_runs(TARGET))
    table = compare.comparison_table(TARGET, rows)
    lines = table.splitlines()
    header = lines[1]
    assert all(c in header for c in ("keep rate", "repairs/attempt", "first keep", "best vs baseline", "vs Lance",
                                     "tokens in/out/cache read", "cache hit", "cost/keep"))
    row_lines = {r.run_id: next(ln for ln in lines if ln.startswith(r.run_id)) for r in rows}
    first, second, third, empty = rows
    assert "offline playbook (no LLM)" in row_lines[first.run_id]
    assert f"~{expected_best(three['r1']):.2f}x" in row_lines[first.run_id]        # chained: marked
    assert f"{first.keeps / first.attempts:.0%}" in row_lines[first.run_id]
    t = second.tokens
    assert f"{t.input_tokens:,}/{t.output_tokens:,}/{t.cache_read_tokens:,}" in row_lines[second.run_id]
    assert f"{t.cache_read_tokens / (t.input_tokens + t.cache_read_tokens + t.cache_write_tokens):.0%}" in row_lines[second.run_id]
    assert f"${second.cost_usd / second.keeps:.4f}" in row_lines[second.run_id]
    assert f"{expected_best(three['r2']):.2f}x" in row_lines[second.run_id] and "1.10x" in row_lines[second.run_id]
    plus, minus, section = three["stat"]
    assert f"program.md +{plus} −{minus} (§ {section})" in table
    assert row_lines[third.run_id].count(compare.NONE) == 4          # first keep, best, vs Lance, cost/keep
    assert row_lines[empty.run_id].count(compare.NONE) >= 8


def test_report_html_has_the_comparison_section_and_cache_reads(three: dict[str, Any],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--target", TARGET, "--run", "20250102-000001"]) == 0
    page = (project.RUNS / TARGET / "20250102-000001" / "report.html").read_text()
    assert f"Runs of {TARGET} compared" in page and "<tr class='current'><td>20250102-000001</td>" in page
    plus, minus, section = three["stat"]
    assert f"program.md +{plus} −{minus} (§ {section})" in page and "offline playbook (no LLM)" in page
    view = report.load_run(project.RUNS / TARGET / "20250102-000001")
    t = view.history.totals
    assert f"<th>cache read tokens</th><td class='num'>{t.cache_read_tokens}</td>" in page
    assert f"{t.cache_read_tokens / (t.input_tokens + t.cache_read_tokens + t.cache_write_tokens):.1%}" in page


def test_status_shows_cache_reads_and_the_hit_share(three: dict[str, Any]) -> None:
    table = report.status_table(report.all_runs(TARGET))
    lines = table.splitlines()
    assert "tokens in/out/cache read" in lines[0] and "cache hit" in lines[0]
    view = report.load_run(project.RUNS / TARGET / "20250102-000001")
    t = view.history.totals
    line = next(ln for ln in lines if "20250102-000001" in ln)
    assert f"{t.input_tokens:,}/{t.output_tokens:,}/{t.cache_read_tokens:,}" in line
    assert f"{t.cache_read_tokens / (t.input_tokens + t.cache_read_tokens + t.cache_write_tokens):.0%}" in line
    offline = next(ln for ln in lines if "20250101-000001" in ln)
    assert "0/0/0" in offline                                         # no tokens: no share either


def test_compare_prints_the_table(three: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--target", TARGET, "--compare"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{TARGET}: 4 runs, oldest first")
    assert not list(project.RUNS.glob("*/*/report.html"))             # printing writes nothing


@pytest.mark.parametrize("args, message", [
    (["--target", "nope", "--compare"], "unknown target 'nope'"),
    (["--target", "pq-dot", "--compare"], "no runs of pq-dot"),
    (["--target", TARGET, "--compare", "--run", "x"], "leave out --run"),
])
def test_bad_compare_input_is_exit_2(runs: Path, args: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_run(runs, "20250101-000001", [discard()], [BASE_TEXTS])
    assert cli.main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestrator: error: ") and message in err


def test_cache_share_is_none_without_prompt_tokens() -> None:
    empty = history().totals
    assert empty.cache_hit_share is None and report.hit_text(empty) == "-"
    t = history({"verdict": "discard", "tokens": {"input_tokens": 100, "output_tokens": 5, "cache_read_tokens": 300,
                                                  "cache_write_tokens": 100}}).totals
    assert t.cache_hit_share is not None and math.isclose(t.cache_hit_share, 300 / 500)
    assert report.hit_text(t) == "60%" and report.tokens_text(t) == "100/5/300"


# ---------------------------------------------------------------------------------- the CLI as a process

def cli_run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=repo, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_compare_from_the_command_line(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")                               # its own runs/: none yet
    none = cli_run(repo, "report", "--target", TARGET, "--compare")
    assert none.returncode == 2 and f"no runs of {TARGET}" in none.stderr and none.stdout == ""
    unknown = cli_run(repo, "report", "--target", "nope", "--compare")
    assert unknown.returncode == 2 and "unknown target 'nope'" in unknown.stderr
    no_target = cli_run(repo, "report", "--compare")
    assert no_target.returncode == 2 and "--target" in no_target.stderr

    program2, plus, minus, section = edited_program()
    make_run(repo / "runs", "20250101-000001", [discard()], [{**BASE_TEXTS, "program.md": PROGRAM.encode()}],
             provider="offline", model="playbook:playbook")
    make_run(repo / "runs", "20250102-000001", [keep(1.4, cumulative_speedup=1.4), discard()],
             [{**BASE_TEXTS, "program.md": program2.encode()}] * 2)
    proc = cli_run(repo, "report", "--target", TARGET, "--compare")
    assert proc.returncode == 0, proc.stderr
    assert f"program.md +{plus} −{minus} (§ {section})" in proc.stdout and "offline playbook" in proc.stdout


@pytest.mark.slow
def test_two_real_offline_runs_with_an_edited_program_are_compared(tmp_path: Path) -> None:
    """The use it is for: run, edit program.md, run again, compare; the edit is named."""
    repo = copy_repo(tmp_path / "repo")
    config = write_config(repo, cumulative=False)
    loop = [sys.executable, "-m", "orchestrator", "loop", "--target", TARGET, "--model", "offline", "--max-attempts",
            "1", "--config", str(config), "--no-vs-lance"]
    assert subprocess.run(loop, cwd=repo, capture_output=True, timeout=300).returncode == 0
    program = repo / "targets" / "pq_l2" / "program.md"
    program.write_text(program.read_text().replace(
        "## Not allowed here\n", "## Not allowed here\n\n- Reading the codes twice per query.\n", 1))
    assert subprocess.run(loop, cwd=repo, capture_output=True, timeout=300).returncode == 0
    proc = cli_run(repo, "report", "--target", TARGET, "--compare")
    assert proc.returncode == 0, proc.stderr
    first, second = sorted(p.name for p in (repo / "runs" / TARGET).iterdir())
    assert proc.stdout.index(first) < proc.stdout.index(second)
    assert f"since {first}: program.md +2 −0 (§ Not allowed here)" in proc.stdout
    assert proc.stdout.count("offline playbook (no LLM)") == 2
