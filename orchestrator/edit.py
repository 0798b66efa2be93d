"""Turn a reply into a new ``kernels.py``: parse strictly, apply all-or-nothing, validate.

The reply format (``prompts/reply-format.md``): a ``HYPOTHESIS:`` line, then either
SEARCH/REPLACE blocks against the current ``kernels.py`` or the whole new file in one fenced
block, and optionally one ``LESSON:`` line. Any deviation is an ``EditError`` whose message is
precise enough to send back to the model as is.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_KERNEL_BYTES = 64 * 1024
_SEARCH, _DIVIDER, _REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_BLOCK = re.compile(r"^<<<<<<< SEARCH[ \t]*\n(.*?)^=======[ \t]*\n(.*?)^>>>>>>> REPLACE[ \t]*$", re.S | re.M)


class EditError(ValueError):
    """The reply cannot be applied; the message says exactly why."""


@dataclass(frozen=True)
class Edit:
    hypothesis: str
    format: str                       # "search_replace" | "whole_file"
    new_text: str
    lesson: str | None = None
    blocks: int = 0


def _single_line(reply: str, label: str, required: bool) -> str | None:
    found = [m.group(1).strip() for m in re.finditer(rf"^{label}:[ \t]*(.*)$", reply, re.M)]
    if len(found) > 1:
        raise EditError(f"the reply has {len(found)} {label}: lines; give exactly one")
    if not found:
        if required:
            raise EditError(f"the reply has no {label}: line; start it with '{label}: <one sentence>'")
        return None
    if not found[0]:
        raise EditError(f"the {label}: line is empty")
    return found[0]


def parse_and_apply(reply: str, current: str) -> Edit:
    """The new file text, or EditError. ``current`` is the incumbent ``kernels.py``."""
    hypothesis = _single_line(reply, "HYPOTHESIS", required=True)
    lesson = _single_line(reply, "LESSON", required=False)
    assert hypothesis is not None
    if _SEARCH in reply or _REPLACE in reply:
        text, count = _apply_blocks(reply, current)
        return Edit(hypothesis, "search_replace", text, lesson=lesson, blocks=count)
    fences = _FENCE.findall(reply)
    if len(fences) != 1:
        raise EditError(f"found {len(fences)} fenced code blocks and no SEARCH/REPLACE blocks; give either "
                        "SEARCH/REPLACE blocks or exactly one fenced block holding the whole new kernels.py")
    return Edit(hypothesis, "whole_file", fences[0], lesson=lesson)


def _apply_blocks(reply: str, current: str) -> tuple[str, int]:
    blocks = _BLOCK.findall(reply)
    markers = reply.count(_SEARCH)
    if not blocks or markers != len(blocks) or reply.count(_REPLACE) != len(blocks):
        raise EditError(f"malformed SEARCH/REPLACE: {markers} '{_SEARCH}' markers but {len(blocks)} complete "
                        f"blocks; each block is '{_SEARCH}' / old lines / '{_DIVIDER}' / new lines / '{_REPLACE}', "
                        "each marker on its own line")
    text = current
    for i, (search, replace) in enumerate(blocks, 1):
        if not search.strip():
            raise EditError(f"block {i}: the SEARCH text is empty")
        count = text.count(search)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise EditError(f"block {i}: the SEARCH text {where} in the current kernels.py (after the earlier "
                            f"blocks are applied); it must match exactly once, whitespace included. "
                            f"First SEARCH line: {search.splitlines()[0]!r}")
        text = text.replace(search, replace, 1)
    return text, len(blocks)


def validate(text: str, api: dict[str, dict[str, list[str]]]) -> None:
    """The new file must parse and keep the target's API (classes, methods, parameter names)."""
    if len(text.encode()) > MAX_KERNEL_BYTES:
        raise EditError(f"the new kernels.py is {len(text.encode())} bytes, over the {MAX_KERNEL_BYTES}-byte cap")
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise EditError(f"the new kernels.py does not parse: {exc.msg} at line {exc.lineno}") from None
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for cls, methods in api.items():
        if cls not in classes:
            raise EditError(f"the API needs a top-level class {cls}")
        defs = {n.name: n for n in classes[cls].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for method, params in methods.items():
            if method not in defs:
                raise EditError(f"the API needs method {cls}.{method}({', '.join(params)})")
            args = defs[method].args
            got = [a.arg for a in args.posonlyargs + args.args]
            if got != params or args.vararg or args.kwarg or args.kwonlyargs:
                raise EditError(f"{cls}.{method} must take exactly ({', '.join(params)}), not ({', '.join(got)})")
