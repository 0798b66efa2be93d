"""Turn a reply into a new ``kernels.py``: parse, apply all-or-nothing, validate.

The reply format (``prompts/reply-format.md``): optionally an ``ANALYSIS:`` section, a
``HYPOTHESIS:`` line, then either SEARCH/REPLACE blocks against the current ``kernels.py`` or the
whole new file in a fenced block, and optionally one ``LESSON:`` line. Every rejected reply costs
a repair turn (a paid call), so the variants models commonly write are read where their meaning
is unambiguous — labels in any case, in markdown emphasis, as a heading or a list item; blocks
wrapped in fences; SEARCH lines that differ from the file only in trailing whitespace; a short
snippet next to the whole file — and each leniency used is recorded in ``Edit.notes``. Nothing
fuzzier (as aider: no indentation or content matching). Anything else is an ``EditError`` whose
message is precise enough to send back to the model as is.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass

MAX_KERNEL_BYTES = 64 * 1024
MAX_ANALYSIS_CHARS = 4_000
_SEARCH, _DIVIDER, _REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_PYTHON_FENCES = ("", "python", "py", "python3")
_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,})[ \t]*([^`\s]*)[^`]*$")
_FENCE_CLOSE = re.compile(r"^[ \t]*(`{3,})[ \t]*$")
_EMPHASIS = r"\*\*|__|\*|_"
# A labelled line: optional list marker, heading and emphasis around the label, then a colon
# (which a heading or an emphasised label on its own line may leave out).
_LABEL = re.compile(
    r"^[ \t]*(?P<bullet>(?:[-*+]|\d{1,2}[.)])[ \t]+)?(?P<heading>#{1,6}[ \t]+)?"
    rf"(?P<open>{_EMPHASIS})?(?P<name>hypothesis|lesson|analysis)(?![a-z0-9-])"
    rf"(?(open)(?P<close>{_EMPHASIS})?)[ \t]*(?P<colon>:)?[ \t]*(?(open)(?P<close2>{_EMPHASIS})?)"
    r"[ \t]*(?P<rest>.*?)[ \t]*$", re.I)


class EditError(ValueError):
    """The reply cannot be applied; the message says exactly why."""


@dataclass(frozen=True)
class Edit:
    hypothesis: str
    format: str                       # "search_replace" | "whole_file"
    new_text: str
    lesson: str | None = None
    blocks: int = 0
    analysis: str | None = None       # capped at MAX_ANALYSIS_CHARS (it is for the log)
    notes: tuple[str, ...] = ()       # the leniencies the parser used, for the log


@dataclass(frozen=True)
class _Fence:
    number: int                       # 1-based, in reply order
    line: int                         # reply line of the opening fence
    info: str
    text: str

    def describe(self) -> str:
        n = len(self.text.splitlines())
        return f"block {self.number} (reply line {self.line}, {n} line{'s' if n != 1 else ''})"


@dataclass(frozen=True)
class _Block:
    number: int
    line: int                         # reply line of its SEARCH marker
    search: str
    replace: str
    fenced: bool


@dataclass(frozen=True)
class _Scan:
    """The reply split into prose and code: fenced blocks and SEARCH/REPLACE blocks."""
    lines: list[str]
    prose: list[bool]                 # per line: outside every fence and SEARCH/REPLACE block
    fences: list[_Fence]
    blocks: list[_Block]
    markers: bool                     # a SEARCH/REPLACE marker occurs: the reply is an edit
    problem: str | None               # the first structural fault (truncation, a stray marker)


@dataclass(frozen=True)
class _Label:
    name: str                         # "HYPOTHESIS" | "LESSON" | "ANALYSIS"
    line: int
    text: str
    forms: tuple[str, ...]            # how it departs from 'NAME: text'


def parse_and_apply(reply: str, current: str, *, api: dict[str, dict[str, list[str]]] | None = None) -> Edit:
    """The new file text, or EditError. ``current`` is the incumbent ``kernels.py``; ``api`` (as
    ``validate`` takes it) picks the whole file among several fenced blocks."""
    text = reply.replace("\r\n", "\n")
    if not text.strip():
        raise EditError("the reply is empty; reply with a HYPOTHESIS: line, then SEARCH/REPLACE blocks against "
                        "the current kernels.py or the whole new kernels.py in one ```python fenced block")
    scan = _scan(text)
    problems: list[str] = []
    labels = code = None
    # Both halves are read even when one fails, so one repair turn can fix every problem at once.
    try:
        labels = _read_labels(scan)
    except EditError as exc:
        problems.append(str(exc))
    try:
        code = _read_code(scan, current, api)
    except EditError as exc:
        problems.append(str(exc))
    if labels is None or code is None:
        if len(problems) == 1:
            raise EditError(problems[0])
        raise EditError(f"the reply has {len(problems)} problems:\n"
                        + "\n".join(f"{i}. {p}" for i, p in enumerate(problems, 1)))
    hypothesis, lesson, analysis, label_notes = labels
    form, new_text, blocks, code_notes = code
    crlf = ("the reply's CRLF line endings were read as LF",) if text != reply else ()
    return Edit(hypothesis, form, new_text, lesson=lesson, blocks=blocks, analysis=analysis,
                notes=crlf + label_notes + code_notes)


def hypothesis_of(reply: str) -> str | None:
    """The reply's (first) hypothesis as ``parse_and_apply`` reads it, or None. Never raises: the
    daemon logs it for replies that fail too."""
    found = [f for f in _labels(_scan(reply.replace("\r\n", "\n"))) if f.name == "HYPOTHESIS" and f.text]
    return found[0].text if found else None


def validate(text: str, api: dict[str, dict[str, list[str]]]) -> None:
    """The new file must parse and keep the target's API (classes, methods, parameter names)."""
    if len(text.encode()) > MAX_KERNEL_BYTES:
        raise EditError(f"the new kernels.py is {len(text.encode())} bytes, over the {MAX_KERNEL_BYTES}-byte cap")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as exc:          # ValueError: a null byte, on 3.11
        raise EditError(f"the new kernels.py does not parse: {_syntax(exc)}") from None
    problem = _api_problem(tree, api)
    if problem:
        raise EditError(problem)


def tree_sha256(text: str) -> str:
    """The sha256 of the code's syntax tree without docstrings: equal for two files that differ
    only in comments, docstrings or layout (what makes a candidate a duplicate)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _api_problem(tree: ast.Module, api: dict[str, dict[str, list[str]]]) -> str | None:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for cls, methods in api.items():
        if cls not in classes:
            return f"the API needs a top-level class {cls}"
        defs = {n.name: n for n in classes[cls].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for method, params in methods.items():
            if method not in defs:
                return f"the API needs method {cls}.{method}({', '.join(params)})"
            args = defs[method].args
            got = [a.arg for a in args.posonlyargs + args.args]
            if got != params or args.vararg or args.kwarg or args.kwonlyargs:
                return f"{cls}.{method} must take exactly ({', '.join(params)}), not ({', '.join(got)})"
    return None


def _syntax(exc: SyntaxError | ValueError) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.msg} at line {exc.lineno}"
    return str(exc)


# -- the reply's structure -----------------------------------------------------------------------

def _scan(text: str) -> _Scan:
    """One pass over the lines; never raises (``hypothesis_of`` relies on it)."""
    lines = text.split("\n")
    prose = [False] * len(lines)
    fences: list[_Fence] = []
    blocks: list[_Block] = []
    problems: list[str] = []
    markers = False
    fence: tuple[int, str, str] | None = None            # (opening line index, backticks, info)
    body: list[str] = []
    block: int | None = None                               # index of the open block's SEARCH line
    divided = False
    search: list[str] = []
    replace: list[str] = []
    for i, line in enumerate(lines):
        bare = line.rstrip()
        if bare.startswith((_SEARCH, _REPLACE)) and bare not in (_SEARCH, _REPLACE):
            markers = True
            problems.append(f"malformed SEARCH/REPLACE: reply line {i + 1} starts with "
                            f"'{_SEARCH if bare.startswith(_SEARCH) else _REPLACE}' but has more text on it; "
                            "each marker goes on a line of its own")
        if block is not None:
            number = len(blocks) + 1
            if bare == _REPLACE and divided:
                blocks.append(_Block(number, block + 1, _joined(search), _joined(replace), fence is not None))
                block = None
            elif bare == _REPLACE:
                problems.append(f"malformed SEARCH/REPLACE: block {number} (its '{_SEARCH}' at reply line "
                                f"{block + 1}) has no '{_DIVIDER}' line before its '{_REPLACE}' at reply line {i + 1}; "
                                f"each block is '{_SEARCH}' / old lines / '{_DIVIDER}' / new lines / '{_REPLACE}'")
                block = None
            elif bare == _SEARCH:
                problems.append(f"malformed SEARCH/REPLACE: block {number} (its '{_SEARCH}' at reply line "
                                f"{block + 1}) has no '{_REPLACE}' line before the next '{_SEARCH}' at reply line "
                                f"{i + 1}; close every block with '{_REPLACE}' on a line of its own")
                block, divided, search, replace = i, False, [], []
            elif bare == _DIVIDER and not divided:
                divided = True
            else:
                (replace if divided else search).append(line)
            continue
        if bare == _SEARCH:
            markers, block, divided, search, replace = True, i, False, [], []
        elif bare == _REPLACE:
            markers = True
            problems.append(f"malformed SEARCH/REPLACE: the '{_REPLACE}' at reply line {i + 1} closes no block "
                            f"(no '{_SEARCH}' line opened it); each block is '{_SEARCH}' / old lines / "
                            f"'{_DIVIDER}' / new lines / '{_REPLACE}', each marker on a line of its own")
        elif fence is not None:
            close = _FENCE_CLOSE.match(line)
            if close and len(close[1]) >= len(fence[1]):
                fences.append(_Fence(len(fences) + 1, fence[0] + 1, fence[2], _joined(body)))
                fence = None
            else:
                body.append(line)
        elif opening := _FENCE_OPEN.match(line):
            fence, body = (i, opening[1], opening[2].lower()), []
        elif not bare.startswith((_SEARCH, _REPLACE)):
            prose[i] = True
    if block is not None:
        problems.append(f"malformed SEARCH/REPLACE: the reply ends inside block {len(blocks) + 1} (its "
                        f"'{_SEARCH}' at reply line {block + 1}) before its '{_REPLACE}' line, so it looks "
                        "truncated; send the whole reply again, complete, with short blocks (only the lines "
                        "that change, plus enough context to match once)")
    elif fence is not None:
        problems.append(f"the reply ends inside fenced block {len(fences) + 1} (opened at reply line "
                        f"{fence[0] + 1}, {len(body)} lines so far) with no closing ```, so it looks truncated; "
                        "send the whole reply again, complete (SEARCH/REPLACE blocks are much shorter than "
                        "the whole file)")
    return _Scan(lines, prose, fences, blocks, markers, problems[0] if problems else None)


def _joined(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


# -- ANALYSIS, HYPOTHESIS, LESSON ----------------------------------------------------------------

def _read_labels(scan: _Scan) -> tuple[str, str | None, str | None, tuple[str, ...]]:
    """(hypothesis, lesson, analysis, notes) or EditError."""
    found = _labels(scan)
    hypothesis = _single(found, "HYPOTHESIS", scan)
    lesson = _single(found, "LESSON", scan)
    assert hypothesis is not None
    notes = [f"{f.name.lower()} given {', '.join(f.forms)}" for f in found if f.forms]
    analyses = [f.text for f in found if f.name == "ANALYSIS" and f.text]
    if len(analyses) > 1:
        notes.append(f"{len(analyses)} ANALYSIS sections joined")
    analysis = "\n\n".join(analyses) or None
    if analysis and len(analysis) > MAX_ANALYSIS_CHARS:
        notes.append(f"analysis cut to {MAX_ANALYSIS_CHARS:,} of its {len(analysis):,} characters")
        analysis = analysis[:MAX_ANALYSIS_CHARS] + "…"
    return hypothesis.text, lesson.text if lesson else None, analysis, tuple(notes)


def _single(found: list[_Label], name: str, scan: _Scan) -> _Label | None:
    """The one ``name`` label: HYPOTHESIS is required, LESSON optional; neither may be empty."""
    mine = [f for f in found if f.name == name]
    if len(mine) > 1:
        why = ": one change per attempt (the others can be later attempts)" if name == "HYPOTHESIS" else ""
        lines = ", ".join(str(f.line) for f in mine)
        raise EditError(f"the reply has {len(mine)} {name}: lines (reply lines {lines}); give exactly one{why}")
    if not mine and name == "HYPOTHESIS":
        hidden = [i + 1 for i, line in enumerate(scan.lines) if not scan.prose[i] and _label(line, "HYPOTHESIS")]
        where = (f" outside code (reply line {hidden[0]} has one inside a code block, where it does not count)"
                 if hidden else "")
        raise EditError(f"the reply has no HYPOTHESIS: line{where}; start the reply with "
                        "'HYPOTHESIS: <one sentence>' on a line of its own, before any code")
    if mine and not mine[0].text:
        raise EditError(f"the {name}: line is empty (reply line {mine[0].line}); write '{name}: <one sentence>' "
                        "on one line")
    return mine[0] if mine else None


def _labels(scan: _Scan) -> list[_Label]:
    """Every labelled prose line, in reply order; code never counts (a ``# hypothesis:`` comment
    in the kernel is not a label)."""
    marks = {i: m for i, line in enumerate(scan.lines) if scan.prose[i] and (m := _label(line))}
    found = []
    for i, m in marks.items():
        name, forms = m["name"].upper(), []
        if m["bullet"]:
            forms.append("as a list item")
        if m["heading"]:
            forms.append("as a markdown heading")
        if m["open"]:
            forms.append("in markdown emphasis")
        if m["name"] != name:
            forms.append("in lower or mixed case")
        rest = m["rest"]
        if m["open"] and not (m["close"] or m["close2"]) and rest.endswith(m["open"]):
            rest = rest[:-len(m["open"])].rstrip()          # '**HYPOTHESIS: text**'
        if name == "ANALYSIS":
            # Free text up to the next label: several lines or paragraphs, code left out.
            end = min((j for j in marks if j > i), default=len(scan.lines))
            rest = "\n".join([rest] + [scan.lines[j] for j in range(i + 1, end) if scan.prose[j]]).strip()
        elif not rest:
            rest = _paragraph_after(scan, i, marks)
            if rest:
                forms.append("with its text on the next line")
        found.append(_Label(name, i + 1, rest, tuple(forms)))
    return found


def _label(line: str, name: str | None = None) -> re.Match[str] | None:
    m = _LABEL.match(line)
    if not m or (name and m["name"].upper() != name):
        return None
    # Without a colon only a heading or an emphasised label alone on its line is a label:
    # 'Hypothesis testing shows ...' is prose.
    if m["colon"] or (not m["rest"] and (m["heading"] or m["close"])):
        return m
    return None


def _paragraph_after(scan: _Scan, i: int, marks: dict[int, re.Match[str]]) -> str:
    """The prose paragraph after a label line that holds no text ('## Hypothesis' / its text)."""
    words: list[str] = []
    for j in range(i + 1, len(scan.lines)):
        if j in marks or not scan.prose[j] or (words and not scan.lines[j].strip()):
            break
        if scan.lines[j].strip():
            words.append(scan.lines[j].strip())
    return " ".join(words)


# -- the code ------------------------------------------------------------------------------------

def _read_code(scan: _Scan, current: str,
               api: dict[str, dict[str, list[str]]] | None) -> tuple[str, str, int, tuple[str, ...]]:
    """(format, new text, block count, notes) or EditError."""
    if scan.problem:
        raise EditError(scan.problem)
    if scan.markers:
        text, notes = _apply_blocks(scan.blocks, current)
        if any(b.fenced for b in scan.blocks):
            notes.insert(0, "SEARCH/REPLACE blocks inside ``` fences (the fence lines are ignored)")
        return "search_replace", text, len(scan.blocks), tuple(notes)
    fence, note = _whole_file(scan.fences, api)
    return "whole_file", fence.text, 0, (note,) if note else ()


def _whole_file(fences: list[_Fence], api: dict[str, dict[str, list[str]]] | None) -> tuple[_Fence, str | None]:
    """The one fenced block that is a whole kernels.py (parses, and keeps ``api`` if given); any
    other block is taken for a snippet in the explanation."""
    n = len(fences)
    found = f"found {n} fenced code block{'s' if n != 1 else ''} and no SEARCH/REPLACE blocks"
    if not fences:
        raise EditError(f"{found}; give SEARCH/REPLACE blocks against the current kernels.py, or the whole new "
                        "kernels.py in one ```python fenced block")
    whole = "whole kernels.py that keeps the API" if api else "whole Python file"
    verdicts = [(f, _not_whole(f, api)) for f in fences]
    good = [f for f, why in verdicts if why is None]
    rejected = "; ".join(f"{f.describe()}: {why}" for f, why in verdicts if why)
    if len(good) == 1 or (good and len({f.text for f in good}) == 1):     # identical copies are one answer
        if n == 1:
            return good[0], None
        copies = f"; blocks {', '.join(str(f.number) for f in good)} are the same file" if len(good) > 1 else ""
        return good[0], f"chose fenced block {good[0].number} of {n} (the only {whole}{copies})"
    if not good:
        raise EditError(f"{found}, and none is a {whole}: {rejected}. Give the whole new kernels.py in one "
                        "```python fenced block, or SEARCH/REPLACE blocks against the current kernels.py")
    raise EditError(f"{found}, and {len(good)} of them (blocks {', '.join(str(f.number) for f in good)}) are a "
                    f"{whole}, so it is unclear which one you mean{'; ' + rejected if rejected else ''}. Give "
                    "exactly one whole kernels.py (a short snippet in the explanation is fine, a second complete "
                    "file is not)")


def _not_whole(fence: _Fence, api: dict[str, dict[str, list[str]]] | None) -> str | None:
    if fence.info not in _PYTHON_FENCES:
        if fence.info == "diff":
            return "a ```diff block: unified diffs are not applied; use SEARCH/REPLACE blocks"
        return f"fenced as ```{fence.info}, not as Python"
    try:
        tree = ast.parse(fence.text)
    except (SyntaxError, ValueError) as exc:
        return f"does not parse as Python ({_syntax(exc)} of the block)"
    return _api_problem(tree, api) if api else None


def _apply_blocks(blocks: list[_Block], current: str) -> tuple[str, list[str]]:
    """Each block in order, all or nothing: exactly one exact match, or else exactly one match of
    its lines ignoring trailing whitespace."""
    text, notes = current, []
    for b in blocks:
        if not b.search.strip():
            raise EditError(f"block {b.number}: the SEARCH text is empty; copy the lines to change from the current "
                            "kernels.py into it")
        where = ("the current kernels.py" if b.number == 1 else
                 f"kernels.py as block{'s 1-' if b.number > 2 else ' '}{b.number - 1} left it")
        count = text.count(b.search)
        if count > 1:
            raise EditError(f"block {b.number}: the SEARCH text occurs {count} times in {where} (at lines "
                            f"{_lines_at(text, b.search)}); it must match exactly once: add lines around it until "
                            f"it is unique. First SEARCH line: {b.search.splitlines()[0]!r}")
        if count == 1:
            text = text.replace(b.search, b.replace, 1)
            continue
        lines = text.splitlines(keepends=True)
        have = [line.rstrip() for line in lines]
        want = [line.rstrip() for line in b.search.splitlines()]
        starts = [i for i in range(len(have) - len(want) + 1) if have[i:i + len(want)] == want]
        if len(starts) == 1:
            i = starts[0]
            matched = "".join(lines[i:i + len(want)])
            text = "".join(lines[:i]) + b.replace + "".join(lines[i + len(want):])
            notes.append(f"block {b.number} matched the file's last line, which has no final newline"
                         if matched + "\n" == b.search else f"block {b.number} matched ignoring trailing whitespace")
            continue
        if starts:
            raise EditError(f"block {b.number}: the SEARCH text occurs {len(starts)} times in {where} ignoring "
                            f"trailing whitespace (at lines {', '.join(str(i + 1) for i in starts)}); it must match "
                            "exactly once: add lines around it until it is unique")
        earlier = (" It is in the original kernels.py: an earlier block changed those lines; write each block "
                   "against the file as the blocks before it leave it." if b.number > 1 and b.search in current else "")
        raise EditError(f"block {b.number}: the SEARCH text does not occur in {where}, not even ignoring trailing "
                        f"whitespace: {_first_difference(want, have)}.{earlier} Copy the SEARCH lines exactly from "
                        "the current kernels.py (indentation included), or send the whole file")
    return text, notes


def _lines_at(text: str, part: str) -> str:
    at, found = text.find(part), []
    while at >= 0:
        found.append(str(text.count("\n", 0, at) + 1))
        at = text.find(part, at + len(part))
    return ", ".join(found)


def _first_difference(want: list[str], have: list[str]) -> str:
    """Where the SEARCH lines part from the file, at the place they match longest."""
    best, at = 0, 0
    for i in range(len(have)):
        k = 0
        while k < len(want) and i + k < len(have) and have[i + k] == want[k]:
            k += 1
        if k > best:
            best, at = k, i
    if best == 0:
        what = f"its first line {want[0]!r} is not a line of the file"
    elif at + best < len(have):
        what = (f"{_first(best)} the file from line {at + 1}, but SEARCH line {best + 1} "
                f"{want[best]!r} differs from the file's line {at + best + 1} {have[at + best]!r}")
    else:
        what = f"{_first(best)} the end of the file, and it goes on past the end"
    line = want[best] if best < len(want) else ""
    same = [j for j, h in enumerate(have) if line.strip() and h.strip() == line.strip() and h != line]
    if same:
        what += f" (the file has {have[same[0]]!r} at line {same[0] + 1}: the indentation differs)"
    return what


def _first(n: int) -> str:
    return "its line 1 matches" if n == 1 else f"its lines 1-{n} match"
