"""Comparing a target's runs: did an edit to program.md or a prompt template help?

People edit ``targets/<t>/program.md`` and ``prompts/*.md`` between runs. Each attempt records
the sha256 of every file its prompt was built from (``AttemptRecord.prompt_hashes``), and the
loop stores those files' texts, content-addressed, under ``runs/<target>/<run-id>/inputs/``
(``save_inputs``). Here the runs are lined up oldest first; for each, what changed in its inputs
since the run before (a diff stat and the section the change starts in) and what it achieved.

Like ``report``, everything but ``save_inputs`` only reads a run's files.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from orchestrator.ledger import AttemptRecord, Totals
from orchestrator.prompt import markdown_headings
from orchestrator.report import RunView, progress_points, tokens_text
from targets.harness.files import write_atomic

INPUTS = "inputs"                     # the run's folder of input texts
ABSENT = "absent"                     # prompt.py's "hash" of a file that did not exist (lessons.md at first)
# The loop appends to lessons.md after attempts, so its hash moving within a run is no human edit.
LOOP_WRITTEN = frozenset({"lessons.md"})
SHORT = 8                             # hex digits of a hash shown to people
NONE = "—"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_inputs(run_dir: Path, texts: Mapping[str, bytes]) -> None:
    """Store each prompt input (file name -> content) as ``run_dir/inputs/<name>.<sha256[:16]>``.

    Content-addressed, so a file read by every attempt is stored once per version, and a version
    already there is not written again."""
    for name, data in texts.items():
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"input name {name!r}: expected a bare file name, as in prompt_hashes")
        path = run_dir / INPUTS / f"{name}.{_sha256(data)[:16]}"
        if not path.exists():
            write_atomic(path, data)


def saved_text(run_dirs: Sequence[Path], name: str, sha: str) -> str | None:
    """The text of ``name`` whose sha256 is ``sha``, from any of these runs' inputs; None if no run
    saved it. Content-addressed, so any run's copy will do; the full hash is checked."""
    if sha == ABSENT:
        return ""
    for run_dir in run_dirs:
        try:
            data = (run_dir / INPUTS / f"{name}.{sha[:16]}").read_bytes()
        except OSError:
            continue
        if _sha256(data) == sha:
            return data.decode(errors="replace")
    return None


# ---------------------------------------------------------------------------------- diffs

def heading_at(lines: Sequence[str], index: int) -> str | None:
    """The nearest markdown heading at or above ``lines[index]`` (fenced code is not a heading)."""
    headings = markdown_headings(lines[: index + 1])
    return headings[max(headings)][1] if headings else None


@dataclass(frozen=True)
class DiffStat:
    added: int
    removed: int
    section: str | None          # the heading above the first changed line, if any


def diff_stat(old: str, new: str) -> DiffStat:
    """Lines added and removed from ``old`` to ``new``, and where the first change is."""
    a, b = old.splitlines(), new.splitlines()
    ops = [op for op in SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return DiffStat(0, 0, None)
    tag, i1, _, j1, _ = ops[0]
    # A pure deletion has no new line to point at: its section is where it was in the old text.
    section = heading_at(a, i1) if tag == "delete" else heading_at(b, j1)
    return DiffStat(sum(j2 - j1 for _, _, _, j1, j2 in ops), sum(i2 - i1 for _, i1, i2, _, _ in ops), section)


@dataclass(frozen=True)
class FileChange:
    """One input file whose content differs from the previous run's."""

    name: str
    old: str                     # sha256 (or ABSENT)
    new: str
    stat: DiffStat | None        # None: a text was not saved, so only the hashes differ

    def text(self) -> str:
        if self.stat is None:
            return f"{self.name} {self.old[:SHORT]}→{self.new[:SHORT]} (texts not saved)"
        where = f" (§ {self.stat.section})" if self.stat.section else ""
        return f"{self.name} +{self.stat.added} −{self.stat.removed}{where}"


def file_changes(before: Mapping[str, str], after: Mapping[str, str], run_dirs: Sequence[Path]) -> list[FileChange]:
    """The files whose hash differs between two hash maps, diffed where their texts were saved.
    Only files both maps name: a file recorded on one side only has nothing to diff against."""
    changes = []
    for name, sha in after.items():
        if name not in before or before[name] == sha:
            continue
        old, new = saved_text(run_dirs, name, before[name]), saved_text(run_dirs, name, sha)
        changes.append(FileChange(name, before[name], sha,
                                  diff_stat(old, new) if old is not None and new is not None else None))
    return changes


# ---------------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class RunInputs:
    """What a run's prompts were built from, as its attempts recorded it."""

    start: dict[str, str]        # the first attempt's hashes: how the run started
    end: dict[str, str]          # the last attempt's: what the next run is compared with
    mid_run: dict[str, int]      # a human-edited file -> the first attempt that read a new version


def run_inputs(records: Sequence[AttemptRecord]) -> RunInputs | None:
    """None for a run none of whose attempts recorded hashes (no attempts yet)."""
    hashed = [r for r in records if r.prompt_hashes]
    if not hashed:
        return None
    start = hashed[0].prompt_hashes
    mid_run: dict[str, int] = {}
    for r in hashed[1:]:
        for name, sha in r.prompt_hashes.items():
            if name not in LOOP_WRITTEN and name in start and sha != start[name]:
                mid_run.setdefault(name, r.attempt)
    return RunInputs(dict(start), dict(hashed[-1].prompt_hashes), mid_run)


def model_label(info: Mapping[str, Any]) -> str:
    if info.get("provider") == "offline":
        return "offline playbook (no LLM)"
    model, provider = info.get("model") or "?", info.get("provider")
    return f"{model} ({provider})" if provider else str(model)


@dataclass(frozen=True)
class RunComparison:
    """One run's row: its inputs, what changed in them since the run before, and its results."""

    run_id: str
    dir: Path
    model: str
    state: str
    inputs: RunInputs | None
    texts_saved: bool            # the run has an inputs/ folder (older runs do not)
    changes: list[FileChange] | None     # None: no earlier run with recorded inputs
    previous: str | None         # the run the changes are against
    attempts: int
    keeps: int
    repair_turns: int
    tokens: Totals
    cost_usd: float
    best_speedup: float | None   # the best keep vs the run's baseline
    best_measured: bool          # measured by the cumulative trial, not chained from paired speedups
    vs_lance: float | None
    first_keep: int | None       # the attempt number of the first keep

    @property
    def keep_rate(self) -> float | None:
        return self.keeps / self.attempts if self.attempts else None

    @property
    def repairs_per_attempt(self) -> float | None:
        return self.repair_turns / self.attempts if self.attempts else None

    @property
    def cost_per_keep(self) -> float | None:
        return self.cost_usd / self.keeps if self.keeps else None

    def hashes_text(self) -> str:
        if self.inputs is None:
            return "not recorded (no attempts)"
        names = ", ".join(f"{name} {sha[:SHORT]}" for name, sha in self.inputs.start.items())
        return names + ("" if self.texts_saved else " (texts not saved)")

    def changes_text(self) -> str:
        if self.inputs is None:
            return "no attempts, so no inputs to compare"
        if self.changes is None:
            text = "first run with recorded inputs: nothing to compare with"
        elif not self.changes:
            text = f"inputs unchanged since {self.previous}"
        else:
            text = f"since {self.previous}: " + "; ".join(c.text() for c in self.changes)
        if self.inputs.mid_run:
            text += "; changed mid-run: " + ", ".join(f"{name} (from attempt {n})"
                                                      for name, n in self.inputs.mid_run.items())
        return text


def _best(view: RunView) -> tuple[float | None, bool]:
    best = view.best
    if best is None:
        return None, False
    # The chain the progress plot draws: the cumulative trial where it was measured, else the
    # paired speedups of the keeps multiplied up.
    return progress_points(view.history)[-1].best, best.cumulative_speedup is not None


def compare_runs(views: Sequence[RunView]) -> list[RunComparison]:
    """One row per run, in the order given (``report.all_runs``: oldest first). Each run's inputs
    are compared with those the last earlier run with attempts ended on."""
    rows: list[RunComparison] = []
    previous: tuple[RunView, RunInputs] | None = None
    for v in views:
        inputs = run_inputs(v.records)
        changes = None
        if inputs is not None and previous is not None:
            changes = file_changes(previous[1].end, inputs.start, [v.dir, previous[0].dir])
        best_speedup, measured = _best(v)
        best = v.best
        first_keep = v.keeps[0].attempt if v.keeps else None
        rows.append(RunComparison(
            v.run_id, v.dir, model_label(v.info), v.state, inputs, (v.dir / INPUTS).is_dir(), changes,
            previous[0].run_id if previous else None, len(v.records), len(v.keeps),
            sum(r.repair_turns for r in v.records), v.history.totals, v.history.totals.cost_usd, best_speedup, measured,
            best.vs_lance if best else None, first_keep))
        if inputs is not None:
            previous = (v, inputs)
    return rows


# ---------------------------------------------------------------------------------- rendering

COLUMNS = ("run", "model", "attempts", "keeps", "keep rate", "repairs/attempt", "first keep", "best vs baseline",
           "vs Lance", "tokens in/out/cache read", "cache hit", "cost", "cost/keep")


def _num(value: float | None, fmt: str) -> str:
    return NONE if value is None else format(value, fmt)


def _cells(row: RunComparison) -> tuple[str, ...]:
    best = NONE if row.best_speedup is None else f"{'' if row.best_measured else '~'}{row.best_speedup:.2f}x"
    share = row.tokens.cache_hit_share
    return (row.run_id, row.model, str(row.attempts), str(row.keeps), _num(row.keep_rate, ".0%"),
            _num(row.repairs_per_attempt, ".2f"), NONE if row.first_keep is None else f"#{row.first_keep}",
            best, NONE if row.vs_lance is None else f"{row.vs_lance:.2f}x",
            tokens_text(row.tokens) if row.attempts else NONE, _num(share, ".0%"),
            f"${row.cost_usd:.4f}", NONE if row.cost_per_keep is None else f"${row.cost_per_keep:.4f}")


def comparison_table(target: str, rows: Sequence[RunComparison]) -> str:
    """`report --target T --compare`: a row per run, and under it its inputs and their changes."""
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip()

    out = [f"{target}: {len(rows)} run{'s' if len(rows) != 1 else ''}, oldest first; inputs are compared with "
           "those the previous run ended on (~: best chained from paired speedups, not measured)",
           line(COLUMNS)]
    for row, c in zip(rows, cells[1:]):
        out += [line(c), f"    inputs:  {row.hashes_text()}", f"    changes: {row.changes_text()}"]
    return "\n".join(out)


def comparison_html(target: str, rows: Sequence[RunComparison], current: str | None = None) -> str:
    """The same comparison as a section of report.html; ``current`` (a run id) is highlighted."""
    e = html.escape
    out = [f"<h2>Runs of {e(target)} compared</h2>",
           "<p class='muted'>Oldest first. Each run's inputs are compared with those the previous run ended on; "
           "~ marks a best speedup chained from paired speedups (the cumulative trial was not measured).</p>",
           "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "<th>inputs and what changed</th></tr>"]
    for row in rows:
        cells = _cells(row)
        style = " class='current'" if row.run_id == current else ""
        out.append(f"<tr{style}><td>{e(cells[0])}</td><td>{e(cells[1])}</td>"
                   + "".join(f"<td class='num'>{e(c)}</td>" for c in cells[2:])
                   + f"<td>{e(row.changes_text())}<br><span class='muted'>{e(row.hashes_text())}</span></td></tr>")
    out.append("</table>")
    return "\n".join(out)
