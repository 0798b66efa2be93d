"""Build the conversation for one attempt from files a human may edit between attempts.

Re-reads ``HARNESS.md``, the target's ``program.md`` and ``lessons.md`` and every template in
``prompts/`` each time, and returns their sha256 (and texts) so the ledger records exactly what was
asked. The order is what prompt caching wants: the system message holds what is fixed for the run
(the model's copy of HARNESS.md, program.md, the reply format, the machine, the limits); the user
message starts with what changes only on a keep (lessons of earlier runs, the current best kernel
and its measurements), then what only grows (this run's attempts, one block per row), and ends
with what changes every attempt (recent per-combo speedups, near misses, recent failures).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from orchestrator.ledger import AttemptRecord, RunHistory
from orchestrator.provider import Message

MAX_EVIDENCE_CHARS = 1500        # per failure shown
FAILURES_SHOWN = 3
NEAR_MISSES_SHOWN = 3
MAX_NEAR_MISS_DIFF_CHARS = 2500
RECENT_TRIALS_SHOWN = 5
MAX_LESSONS = 12                 # lessons of earlier runs shown (keep-tied first)
MAX_LESSON_CHARS = 3000
# A heading followed by this line starts a section for people only (HARNESS.md's result block
# fields and CLI commands): the model's copy leaves it out.
PEOPLE_ONLY = "<!-- people only: not shown to the model -->"


class PromptError(Exception):
    """A human-edited template cannot be filled in (e.g. it names a field that does not exist)."""


@dataclass(frozen=True)
class PromptFiles:
    harness: Path
    program: Path
    lessons: Path
    prompts_dir: Path

    def template(self, name: str) -> Path:
        return self.prompts_dir / name


@dataclass(frozen=True)
class Context:
    """What the daemon knows that an attempt's prompt shows, besides the human-edited files."""

    target: str
    run_id: str
    attempt: int
    kernel: str                          # the current best kernels.py
    history: RunHistory
    history_rows: int
    machine: str                         # targets.harness.machine.facts()
    limits: str                          # the trial budget, repair turns, size cap, as text
    profile: dict[str, Any] | None = None    # the current best kernel's time split by stage


@dataclass(frozen=True)
class Prompt:
    messages: list[Message]
    file_hashes: dict[str, str]          # file name -> sha256 of what was read
    file_texts: dict[str, bytes]         # file name -> what was read (saved with the run)

    def render(self) -> str:
        return "\n\n".join(f"===== {m.role} =====\n{m.content}" for m in self.messages)


def _fill(path: Path, template: str, **fields: Any) -> str:
    try:
        return Template(template).substitute(**fields)
    except KeyError as exc:
        raise PromptError(f"{path} uses ${{{exc.args[0]}}}, which is not a field here; the fields are "
                          f"{', '.join('${' + f + '}' for f in sorted(fields))} (write $$ for a literal $)") from None
    except ValueError as exc:
        raise PromptError(f"{path}: {exc} (write $$ for a literal $)") from None


def _read(path: Path, hashes: dict[str, str], texts: dict[str, bytes], missing_ok: bool = False) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            hashes[path.name] = "absent"
            return ""
        raise
    hashes[path.name], texts[path.name] = hashlib.sha256(data).hexdigest(), data
    return data.decode()


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_headings(lines: Sequence[str]) -> dict[int, tuple[int, str]]:
    """Line index -> (level, text) of each markdown heading; a ``# comment`` inside a fenced code
    block is code, not a heading."""
    found, fenced = {}, False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            found[i] = (len(m.group(1)), m.group(2))
    return found


def model_copy(harness: str) -> str:
    """HARNESS.md without its sections for people only (a heading followed by ``PEOPLE_ONLY``,
    up to the next heading of the same or a higher level)."""
    out: list[str] = []
    skipping: int | None = None
    lines = harness.splitlines()
    headings = markdown_headings(lines)
    for i, line in enumerate(lines):
        level = headings.get(i, (0, ""))[0]
        if level and skipping is not None and level <= skipping:
            skipping = None
        if level and i + 1 < len(lines) and lines[i + 1].strip() == PEOPLE_ONLY:
            skipping = level
        if skipping is None:
            out.append(line)
    return "\n".join(out).strip() + "\n"


# ---------------------------------------------------------------------------------- growing part

def _row(r: AttemptRecord) -> str:
    ci = r.speedup_ci
    speed = f"{r.speedup:.3f}x [{ci[0]:.3f}, {ci[1]:.3f}]" if r.speedup and len(ci) == 2 else "-"
    worst = f"{r.worst_combo['combo']} {r.worst_combo['value']:.2f}x" if r.worst_combo else "-"
    what = r.hypothesis or "(no hypothesis)"
    if not r.kept:
        what += f" — {r.reason}"
        if r.duplicate_of is not None:
            what += f" (same code as {'the baseline' if r.duplicate_of == 0 else f'attempt {r.duplicate_of}'})"
    if r.lesson:
        what += f" — lesson: {r.lesson}"
    cells = [str(r.attempt), r.verdict or "?", speed, worst, what[:400]]
    return "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |\n"


def history_rows(history: RunHistory, rows: int) -> tuple[str, list[str]]:
    """(header, one line per shown attempt). Rows are only appended until ``rows`` overflow, then
    the oldest half is dropped at once: the rendered table stays a prefix of the next one, which
    is what lets a provider reuse its cached prefix."""
    records = history.records
    if not records:
        return "(none yet: this is the first attempt)\n", []
    step = max(1, rows // 2)
    start = math.ceil(max(0, len(records) - rows) / step) * step
    header = "" if start == 0 else f"({start} older attempts not shown)\n"
    header += ("| # | verdict | speedup vs its incumbent [90% CI] | worst combo | hypothesis — reason — lesson |\n"
               "|---|---|---|---|---|\n")
    return header, [_row(r) for r in records[start:]]


def history_table(history: RunHistory, rows: int) -> str:
    header, lines = history_rows(history, rows)
    return header + "".join(lines)


def earlier_lessons(text: str, run_id: str) -> str:
    """Lessons of earlier runs on this machine, labelled as what they are: the model's own words.
    Those that came with a keep first, then the newest others, capped. This run's own lessons are
    in its history rows."""
    lines = [ln for ln in text.splitlines() if ln.startswith("- ") and f" run {run_id} " not in ln]
    if not lines:
        return "(none yet)"
    kept = [ln for ln in lines if "(keep)" in ln]
    others = [ln for ln in lines if "(keep)" not in ln]
    chosen = (kept[-MAX_LESSONS:] + others[-max(0, MAX_LESSONS - len(kept)):])[:MAX_LESSONS]
    body = "\n".join(chosen)[:MAX_LESSON_CHARS]
    left = len(lines) - len(chosen)
    note = ("Unverified: each is an earlier model's own one-line note, with the verdict of the attempt it "
            "came with; no measurement checked the note itself. Lessons from kept attempts first.")
    return note + "\n" + body + (f"\n({left} older or discarded-attempt lessons not shown)" if left else "")


# ---------------------------------------------------------------------------------- per attempt

def _ns(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1e6:.2f} ms"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f} µs"
    return f"{value:.0f} ns" if abs(value) >= 10 else f"{value:.2f} ns"


def incumbent_section(history: RunHistory, profile: dict[str, Any] | None) -> str:
    """The current best kernel's time per combo (slowest marked) and its split by stage."""
    label, times = history.incumbent_times()
    parts: list[str] = []
    if times:
        slowest = max(times, key=lambda c: times[c])
        parts.append(f"Time per op of the current best kernel ({label}), per combo, as measured in its last trial "
                     f"(each includes the harness's round trip of ~80-100 µs, the same for every kernel):")
        parts += [f"- {combo}: {_ns(ns)}{'  <- slowest' if combo == slowest else ''}" for combo, ns in times.items()]
        share = times[slowest] / sum(times.values())
        parts.append(f"The overall speedup is a geometric mean over combos: each combo counts equally, and "
                     f"{slowest} takes {share:.0%} of the summed time.")
    else:
        parts.append("No trial has measured the current best kernel yet.")
    parts.append("")
    parts.append(profile_text(profile))
    return "\n".join(parts)


def profile_text(profile: dict[str, Any] | None) -> str:
    """The stage split the profile trial measured (``measure_profile``: the op timed at several
    sizes, time = fixed + per-unit costs, fitted per shape), as the model reads it."""
    if not profile:
        return "Time by stage: not measured for this kernel."
    if profile.get("error"):
        return f"Time by stage: the profile of {profile.get('kernel', 'this kernel')} failed ({profile['error']})."
    lines = [f"Time by stage of the current best kernel ({profile.get('kernel', 'incumbent')}): its op timed at "
             "several sizes and fitted per shape as fixed + per-unit costs (a kernel may fuse stages; this is "
             "what each size costs, not a timer inside it). Shares are of the op at the speed workload's size:"]
    for shape, fit in (profile.get("shapes") or {}).items():
        parts = []
        for st in fit.get("stages", []):
            cost = f"{_ns(st['ns'])} x {st['at']:,}" if st.get("kind") == "slope" else _ns(st["ns"])
            parts.append(f"{st['label']} {cost} ({st['share']:.0%})")
        lines.append(f"- {shape} ({_ns(fit['op_ns'])} per op): " + ", ".join(parts)
                     + f"; fit R² {fit['r2']:.3f}, worst residual {fit['max_rel_residual']:.0%}")
    return "\n".join(lines)


def recent_trials_section(history: RunHistory) -> str:
    """Per-combo speedups of the last attempts that were measured, and their worst combo."""
    measured = [r for r in history.records if r.trial and r.trial.get("per_combo_speedup")][-RECENT_TRIALS_SHOWN:]
    if not measured:
        return "(no attempt has been timed yet)"
    combos = list(measured[-1].trial["per_combo_speedup"])  # type: ignore[index]
    lines = ["| combo | " + " | ".join(f"#{r.attempt} ({r.verdict})" for r in measured) + " |",
             "|---|" + "---|" * len(measured)]
    for combo in combos:
        cells = []
        for r in measured:
            value = (r.trial or {}).get("per_combo_speedup", {}).get(combo)
            cells.append(f"{value:.2f}x" if isinstance(value, (int, float)) else "-")
        lines.append(f"| {combo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def near_misses_section(history: RunHistory) -> str:
    """Correct, faster-on-average attempts a gate rule stopped, with their diffs: worth fixing or
    combining."""
    found = history.near_misses(NEAR_MISSES_SHOWN)
    if not found:
        return "(none)"
    best = history.best
    parts = []
    for r in found:
        against = ("" if best is None or best.attempt < r.attempt
                   else f" (measured against the kernel before attempt {best.attempt}'s keep)")
        diff = r.diff if len(r.diff) <= MAX_NEAR_MISS_DIFF_CHARS else r.diff[:MAX_NEAR_MISS_DIFF_CHARS] + "\n[diff cut]"
        parts.append(f"### Attempt {r.attempt}: {r.speedup:.3f}x overall{against}, discarded: "
                     f"{'; '.join(r.reasons) or r.reason}\nHypothesis: {r.hypothesis}\n```diff\n{diff.rstrip()}\n```")
    return "\n\n".join(parts)


def failures_section(history: RunHistory) -> str:
    """The last discards with every failing rule and their evidence (not only the last one's)."""
    found = history.failures(FAILURES_SHOWN)
    if not found:
        return "(none)"
    parts = []
    for r in found:
        rules = "; ".join(r.reasons) if r.reasons else (r.reason_detail or r.reason)
        evidence = (r.evidence or "").strip()
        if len(evidence) > MAX_EVIDENCE_CHARS:
            evidence = "[…]" + evidence[-MAX_EVIDENCE_CHARS:]
        parts.append(f"### Attempt {r.attempt} ({r.reason}): {rules}" + (f"\n```\n{evidence}\n```" if evidence
                                                                          and evidence != rules else ""))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------- the prompt

def build(files: PromptFiles, ctx: Context) -> Prompt:
    hashes: dict[str, str] = {}
    texts: dict[str, bytes] = {}
    system = _fill(files.template("system.md"), _read(files.template("system.md"), hashes, texts),
        harness=model_copy(_read(files.harness, hashes, texts)), program=_read(files.program, hashes, texts),
        target=ctx.target, reply_format=_read(files.template("reply-format.md"), hashes, texts).strip(),
        machine=ctx.machine, limits=ctx.limits)
    lessons = earlier_lessons(_read(files.lessons, hashes, texts, missing_ok=True), ctx.run_id)
    header, rows = history_rows(ctx.history, ctx.history_rows)
    history = header + "".join(rows)
    user = _fill(files.template("attempt.md"), _read(files.template("attempt.md"), hashes, texts),
        attempt=ctx.attempt, target=ctx.target, kernel=ctx.kernel.rstrip("\n"), history=history.rstrip("\n"),
        lessons=lessons, incumbent=incumbent_section(ctx.history, ctx.profile),
        recent=recent_trials_section(ctx.history), near_misses=near_misses_section(ctx.history),
        failures=failures_section(ctx.history))
    return Prompt([Message("system", system, (len(system),)), Message("user", user, _row_ends(user, history, rows))],
                  hashes, texts)


def _row_ends(user: str, history: str, rows: list[str]) -> tuple[int, ...]:
    """Offsets in the user message just after the table header and after each history row: the
    stable, growing prefix (a template that moves the table elsewhere only loses caching)."""
    at = user.find(history.rstrip("\n"))
    if at < 0 or not rows or user.count(history.rstrip("\n")) != 1:
        return ()
    end = at + len(history) - sum(len(r) for r in rows)
    ends = [end]
    for r in rows:
        end += len(r)
        ends.append(min(end, len(user)))
    return tuple(ends)


def repair(prompt: Prompt, files: PromptFiles, reply: str, error: str) -> Prompt:
    """The conversation extended by the model's reply and the precise reason it failed (the last
    message, saved with the attempt)."""
    hashes, texts = dict(prompt.file_hashes), dict(prompt.file_texts)
    text = _fill(files.template("repair.md"), _read(files.template("repair.md"), hashes, texts), error=error)
    return Prompt([*prompt.messages, Message("assistant", reply), Message("user", text)], hashes, texts)
