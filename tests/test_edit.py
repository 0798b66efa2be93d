"""orchestrator.edit: strict reply parsing, all-or-nothing SEARCH/REPLACE, API validation."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BASELINE, ROOT
from orchestrator.edit import MAX_KERNEL_BYTES, Edit, EditError, parse_and_apply, validate
from targets.pq_l2.target import KERNEL_API

PLAYBOOK = ROOT / "targets" / "pq_l2" / "playbook"

CURRENT = textwrap.dedent("""\
    import numpy as np


    class PqKernel:
        def __init__(self, shape, codebook, codes_aos, num_vectors):
            self.shape = shape
            self.num_vectors = num_vectors

        def search(self, query, k, out_ids, out_dists):
            self.fill_ids(out_ids)
            self.fill_dists(out_dists)

        def fill_ids(self, out):
            out[:] = 0.0

        def fill_dists(self, out):
            out[:] = 1.0
    """)

API = {"PqKernel": {"__init__": ["self", "shape", "codebook", "codes_aos", "num_vectors"],
                    "search": ["self", "query", "k", "out_ids", "out_dists"]}}
SEARCH_SIG = "self, query, k, out_ids, out_dists"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def kernel_with(search_sig: str = SEARCH_SIG, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        class PqKernel:
            def __init__(self, shape, codebook, codes_aos, num_vectors):
                pass

            def search({search_sig}):
                pass
        {extra}""")


# -- whole file ----------------------------------------------------------------------------------

def test_whole_file_reply_in_python_fence() -> None:
    new = "import numpy as np\n\nX = 1\n"
    reply = f"HYPOTHESIS: rewrite everything\n\n```python\n{new}```\n"
    edit = parse_and_apply(reply, CURRENT)
    assert edit == Edit("rewrite everything", "whole_file", new, lesson=None, blocks=0)


def test_whole_file_reply_in_bare_fence() -> None:
    reply = "HYPOTHESIS: h\n```\nA = 2\n```\n"
    edit = parse_and_apply(reply, CURRENT)
    assert edit.format == "whole_file" and edit.new_text == "A = 2\n"


def test_zero_fenced_blocks_is_an_error() -> None:
    with pytest.raises(EditError, match="found 0 fenced code blocks"):
        parse_and_apply("HYPOTHESIS: h\n\nI would make it faster.\n", CURRENT)


def test_two_fenced_blocks_is_an_error() -> None:
    reply = "HYPOTHESIS: h\n```python\nA = 1\n```\nand\n```python\nB = 2\n```\n"
    with pytest.raises(EditError, match="found 2 fenced code blocks"):
        parse_and_apply(reply, CURRENT)


# -- SEARCH/REPLACE ------------------------------------------------------------------------------

def test_single_search_replace_block() -> None:
    reply = "HYPOTHESIS: fill with two\n\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.format == "search_replace" and edit.blocks == 1 and edit.hypothesis == "fill with two"
    assert edit.new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 2.0")


def test_multiple_blocks_apply_in_order_and_may_match_earlier_output() -> None:
    # Block 2's SEARCH text exists only after block 1 ran.
    reply = ("HYPOTHESIS: two steps\n"
             + block("        out[:] = 0.0\n", "        out[:] = 5.0  # step one\n")
             + "\n"
             + block("        out[:] = 5.0  # step one\n", "        out[:] = 6.0  # step two\n")
             + block("        out[:] = 1.0\n", "        out[:] = 7.0\n"))
    edit = parse_and_apply(reply, CURRENT)
    assert edit.blocks == 3
    expected = CURRENT.replace("        out[:] = 0.0\n", "        out[:] = 6.0  # step two\n") \
                      .replace("out[:] = 1.0", "out[:] = 7.0")
    assert edit.new_text == expected


def test_empty_replace_deletes_lines() -> None:
    reply = "HYPOTHESIS: drop import\n" + block("import numpy as np\n", "")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.new_text == CURRENT.replace("import numpy as np\n", "", 1)
    assert "numpy" not in edit.new_text


def test_search_replace_inside_a_fence_still_applies() -> None:
    reply = ("HYPOTHESIS: h\n\n```python\n"
             + block("        out[:] = 1.0\n", "        out[:] = 3.0\n")
             + "```\n")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.format == "search_replace"
    assert edit.new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 3.0")


def test_search_that_does_not_occur() -> None:
    reply = "HYPOTHESIS: h\n" + block("        out[:] = 9.0\n", "        out[:] = 2.0\n")
    with pytest.raises(EditError, match="block 1: the SEARCH text does not occur") as exc:
        parse_and_apply(reply, CURRENT)
    assert "out[:] = 9.0" in str(exc.value)       # the first SEARCH line is quoted back


def test_search_is_whitespace_exact() -> None:
    reply = "HYPOTHESIS: h\n" + block("    out[:] = 1.0\n", "    out[:] = 2.0\n")    # 4 spaces, not 8
    # "    out[:] = 1.0\n" *is* a substring of "        out[:] = 1.0\n": still matches exactly once.
    assert parse_and_apply(reply, CURRENT).new_text.count("out[:] = 2.0") == 1
    reply = "HYPOTHESIS: h\n" + block("\tout[:] = 1.0\n", "\tout[:] = 2.0\n")
    with pytest.raises(EditError, match="does not occur"):
        parse_and_apply(reply, CURRENT)


def test_search_that_occurs_twice() -> None:
    current = CURRENT.replace("out[:] = 1.0", "out[:] = 0.0")     # now in both methods
    reply = "HYPOTHESIS: h\n" + block("        out[:] = 0.0\n", "        out[:] = 2.0\n")
    with pytest.raises(EditError, match="block 1: the SEARCH text occurs 2 times"):
        parse_and_apply(reply, current)
    # With enough context to be unique, the same change applies.
    reply = "HYPOTHESIS: h\n" + block("    def fill_dists(self, out):\n        out[:] = 0.0\n",
                                      "    def fill_dists(self, out):\n        out[:] = 2.0\n")
    assert parse_and_apply(reply, current).new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 2.0")


def test_all_or_nothing_when_a_later_block_fails() -> None:
    reply = ("HYPOTHESIS: h\n"
             + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
             + block("        not in the file\n", "        x = 1\n"))
    current = CURRENT
    with pytest.raises(EditError, match="block 2: the SEARCH text does not occur"):
        parse_and_apply(reply, current)
    assert current == CURRENT
    # A block whose SEARCH was consumed by an earlier block also fails (it no longer occurs).
    reply = ("HYPOTHESIS: h\n"
             + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
             + block("        out[:] = 1.0\n", "        out[:] = 3.0\n"))
    with pytest.raises(EditError, match="block 2: .*does not occur"):
        parse_and_apply(reply, CURRENT)


def test_empty_search_is_an_error() -> None:
    reply = "HYPOTHESIS: h\n<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE\n"
    with pytest.raises(EditError, match="block 1: the SEARCH text is empty"):
        parse_and_apply(reply, CURRENT)
    reply = "HYPOTHESIS: h\n<<<<<<< SEARCH\n   \n=======\nx = 1\n>>>>>>> REPLACE\n"
    with pytest.raises(EditError, match="SEARCH text is empty"):
        parse_and_apply(reply, CURRENT)


@pytest.mark.parametrize("body", [
    "<<<<<<< SEARCH\n        out[:] = 1.0\n=======\n        out[:] = 2.0\n",               # no REPLACE marker
    "        out[:] = 1.0\n=======\n        out[:] = 2.0\n>>>>>>> REPLACE\n",            # no SEARCH marker
    "<<<<<<< SEARCH\n        out[:] = 1.0\n        out[:] = 2.0\n>>>>>>> REPLACE\n",      # no divider
    block("        out[:] = 1.0\n", "        out[:] = 2.0\n") + "<<<<<<< SEARCH\n        x\n",  # 2 SEARCH, 1 block
    "<<<<<<< SEARCH        out[:] = 1.0\n=======\n        out[:] = 2.0\n>>>>>>> REPLACE\n",  # marker not alone
])
def test_unbalanced_or_malformed_markers(body: str) -> None:
    with pytest.raises(EditError, match="malformed SEARCH/REPLACE"):
        parse_and_apply("HYPOTHESIS: h\n" + body, CURRENT)


# -- HYPOTHESIS and LESSON -----------------------------------------------------------------------

def test_missing_hypothesis() -> None:
    with pytest.raises(EditError, match="HYPOTHESIS"):
        parse_and_apply("```python\nA = 1\n```\n", CURRENT)
    with pytest.raises(EditError, match="no HYPOTHESIS: line"):
        parse_and_apply("Hypothesis: lower case does not count\n```python\nA = 1\n```\n", CURRENT)


def test_two_hypothesis_lines() -> None:
    with pytest.raises(EditError, match="2 HYPOTHESIS: lines"):
        parse_and_apply("HYPOTHESIS: a\nHYPOTHESIS: b\n```python\nA = 1\n```\n", CURRENT)


def test_empty_hypothesis() -> None:
    with pytest.raises(EditError, match="HYPOTHESIS: line is empty"):
        parse_and_apply("HYPOTHESIS:   \n```python\nA = 1\n```\n", CURRENT)


def test_lesson_is_optional_and_parsed() -> None:
    reply = "HYPOTHESIS: h\n```python\nA = 1\n```\n\nLESSON:  measure first \n"
    edit = parse_and_apply(reply, CURRENT)
    assert edit.lesson == "measure first"
    assert parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\n", CURRENT).lesson is None


def test_two_lesson_lines() -> None:
    with pytest.raises(EditError, match="2 LESSON: lines"):
        parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\nLESSON: a\nLESSON: b\n", CURRENT)


def test_empty_lesson_is_an_error() -> None:
    with pytest.raises(EditError, match="LESSON: line is empty"):
        parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\nLESSON:\n", CURRENT)


# -- validate ------------------------------------------------------------------------------------

def test_valid_kernel_passes() -> None:
    validate(CURRENT, API)
    validate(kernel_with(), API)


def test_syntax_error_names_the_line() -> None:
    text = "import numpy as np\n\nclass PqKernel(:\n    pass\n"
    with pytest.raises(EditError, match=r"does not parse: .* at line 3"):
        validate(text, API)


def test_missing_class() -> None:
    text = CURRENT.replace("class PqKernel:", "class Kernel:")
    with pytest.raises(EditError, match="top-level class PqKernel"):
        validate(text, API)


def test_class_nested_in_a_function_is_not_top_level() -> None:
    text = "def make():\n" + textwrap.indent(CURRENT, "    ")
    with pytest.raises(EditError, match="top-level class PqKernel"):
        validate(text, API)


def test_missing_method() -> None:
    text = CURRENT.replace("def search(self, query, k, out_ids, out_dists):", "def find(self, query, k, out_ids, out_dists):")
    with pytest.raises(EditError, match=r"needs method PqKernel\.search\(self, query, k, out_ids, out_dists\)"):
        validate(text, API)


@pytest.mark.parametrize("sig", [
    "self, q, k, out_ids, out_dists",                 # renamed
    "self, query, k, out_dists, out_ids",             # reordered
    "self, query, out_ids, out_dists",                # missing
    "self, query, k, out_ids, out_dists, extra",      # extra positional
    "self, query, k, out_ids, out_dists, *args",
    "self, query, k, out_ids, out_dists, **kwargs",
    "self, query, k, out_ids, *, out_dists",          # out_dists made keyword-only
    "self, query, k, out_ids, out_dists, *, flag=False",
])
def test_wrong_signature_rejected(sig: str) -> None:
    with pytest.raises(EditError, match=r"PqKernel\.search must take exactly \(self, query, k, out_ids, out_dists\)"):
        validate(kernel_with(sig), API)


def test_defaults_do_not_change_the_api() -> None:
    validate(kernel_with("self, query, k=10, out_ids=None, out_dists=None"), API)


def test_size_cap_is_in_bytes() -> None:
    base = kernel_with()
    pad = MAX_KERNEL_BYTES - len(base.encode()) - 2        # "#" + pad + "\n"
    at_cap = base + "#" + "x" * pad + "\n"
    assert len(at_cap.encode()) == MAX_KERNEL_BYTES
    validate(at_cap, API)
    over = base + "#" + "x" * (pad + 1) + "\n"
    with pytest.raises(EditError, match=f"{MAX_KERNEL_BYTES + 1} bytes, over the {MAX_KERNEL_BYTES}-byte cap"):
        validate(over, API)
    # Two-byte characters: under the cap in characters, over it in bytes.
    wide = base + "#" + "é" * (MAX_KERNEL_BYTES // 2) + "\n"
    assert len(wide) < MAX_KERNEL_BYTES < len(wide.encode())
    with pytest.raises(EditError, match="byte cap"):
        validate(wide, API)


def test_real_baseline_validates_against_kernel_api() -> None:
    validate(BASELINE.read_text(), KERNEL_API)


def test_kernel_api_rejects_a_broken_baseline() -> None:
    text = BASELINE.read_text().replace("def search(self, query, k, out_ids, out_dists):",
                                        "def search(self, query, out_ids, out_dists, k):")
    assert text != BASELINE.read_text()
    with pytest.raises(EditError, match="search must take exactly"):
        validate(text, KERNEL_API)


# -- the real playbook ---------------------------------------------------------------------------
# Generic over the entries (more are added over time): the offline provider replays them in name
# order, each against the kernel the loop holds when it is reached, which is the last keep. Which
# entries keep is up to their trials (tests/test_loop.py runs the playbook); here every kernel the
# loop could hold is a candidate: the baseline until 01 (the first keep), then 01's kernel and the
# result of every later entry that applied.

def _entries() -> list[Path]:
    return sorted(p for p in PLAYBOOK.glob("*.md") if not p.name.endswith(".repair.md"))


@dataclass
class Step:
    entry: Path
    candidates: list[str]                # the kernels the loop could hold when it reaches this entry
    applied: list[tuple[str, Edit]]      # (candidate, the entry applied to it) where it fits
    errors: list[str]                    # why it failed against the others


@pytest.fixture(scope="module")
def walk() -> list[Step]:
    baseline = BASELINE.read_text()
    candidates = [baseline]
    steps = []
    for entry in _entries():
        applied, errors = [], []
        for state in candidates:
            try:
                applied.append((state, parse_and_apply(entry.read_text(), state)))
            except EditError as exc:
                errors.append(str(exc))
        steps.append(Step(entry, list(candidates), applied, errors))
        new = [e.new_text for _, e in applied if e.new_text not in candidates]
        # 01 is the first keep: after it the baseline is gone for good.
        candidates = new if entry.name.startswith("01-") else candidates + new
    return steps


def test_playbook_entries_are_numbered_from_01_without_gaps() -> None:
    names = [p.name for p in _entries()]
    assert names and [n[:3] for n in names] == [f"{i:02d}-" for i in range(1, len(names) + 1)], names
    for repair in PLAYBOOK.glob("*.repair.md"):             # a repair reply belongs to an entry
        assert repair.with_name(repair.name.replace(".repair.md", ".md")).is_file(), repair.name


def test_playbook_01_is_a_whole_file_kernel_that_keeps_the_api(walk: list[Step]) -> None:
    first = walk[0]
    assert first.entry.name.startswith("01-") and first.errors == []
    [(state, edit)] = first.applied
    assert state == BASELINE.read_text()
    assert edit.format == "whole_file" and edit.blocks == 0 and edit.hypothesis and edit.lesson
    assert edit.new_text != state
    validate(edit.new_text, KERNEL_API)


@pytest.mark.parametrize("n", range(len(_entries())), ids=lambda n: _entries()[n].name)
def test_playbook_entry_applies_in_sequence_or_is_malformed_whatever_the_loop_held(n: int,
                                                                                   walk: list[Step]) -> None:
    step = walk[n]
    if not step.applied:
        # A malformed reply (the loop's edit_failed): it fails against every kernel the loop has
        # held or could hold, the baseline included, so the offline run cannot depend on which
        # earlier entries kept.
        for state in {BASELINE.read_text(), *(s.new_text for prev in walk[:n] for _, s in prev.applied)}:
            with pytest.raises(EditError):
                parse_and_apply(step.entry.read_text(), state)
        return
    for state, edit in step.applied:
        assert edit.hypothesis
        # Every reply that applies keeps the API (so it reaches its trial) and changes the kernel.
        validate(edit.new_text, KERNEL_API)
        assert edit.new_text != state, "a no-op edit"
        if edit.format == "whole_file":
            assert edit.blocks == 0 and edit.new_text.lstrip().startswith('"""pq-l2 kernels')
        else:
            assert edit.format == "search_replace" and edit.blocks >= 1
