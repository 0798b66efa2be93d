"""orchestrator.edit: strict reply parsing, all-or-nothing SEARCH/REPLACE, API validation."""

from __future__ import annotations

import re
import textwrap

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

        def distance_table(self, query, out):
            out[:] = 0.0

        def compute_distances(self, table, out):
            out[:] = 1.0
    """)

API = {"PqKernel": {"__init__": ["self", "shape", "codebook", "codes_aos", "num_vectors"],
                    "distance_table": ["self", "query", "out"],
                    "compute_distances": ["self", "table", "out"]}}


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def kernel_with(distance_table_sig: str = "self, query, out", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        class PqKernel:
            def __init__(self, shape, codebook, codes_aos, num_vectors):
                pass

            def distance_table({distance_table_sig}):
                pass

            def compute_distances(self, table, out):
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
    reply = "HYPOTHESIS: h\n" + block("    def compute_distances(self, table, out):\n        out[:] = 0.0\n",
                                      "    def compute_distances(self, table, out):\n        out[:] = 2.0\n")
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
    text = CURRENT.replace("def compute_distances(self, table, out):", "def compute(self, table, out):")
    with pytest.raises(EditError, match=r"needs method PqKernel\.compute_distances\(self, table, out\)"):
        validate(text, API)


@pytest.mark.parametrize("sig", [
    "self, q, out",              # renamed
    "self, out, query",          # reordered
    "self, query",               # missing
    "self, query, out, extra",   # extra positional
    "self, query, out, *args",
    "self, query, out, **kwargs",
    "self, query, *, out",       # out made keyword-only
    "self, query, out, *, flag=False",
])
def test_wrong_signature_rejected(sig: str) -> None:
    with pytest.raises(EditError, match=r"PqKernel\.distance_table must take exactly \(self, query, out\)"):
        validate(kernel_with(sig), API)


def test_defaults_do_not_change_the_api() -> None:
    validate(kernel_with("self, query, out=None"), API)


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
    text = BASELINE.read_text().replace("def compute_distances(self, table, out):",
                                        "def compute_distances(self, out, table):")
    assert text != BASELINE.read_text()
    with pytest.raises(EditError, match="compute_distances must take exactly"):
        validate(text, KERNEL_API)


# -- the real playbook ---------------------------------------------------------------------------

def _reply(name: str) -> str:
    [path] = PLAYBOOK.glob(f"{name}-*.md")
    return path.read_text()


@pytest.fixture(scope="module")
def states() -> dict[str, str]:
    base = BASELINE.read_text()
    out = {"baseline": base}
    for n in ("01", "03", "05", "06"):
        edit = parse_and_apply(_reply(n), base)
        assert edit.format == "whole_file", n
        out[n] = edit.new_text
    return out


@pytest.mark.parametrize("n", ["01", "03", "05", "06"])
def test_playbook_whole_file_entries_validate(n: str, states: dict[str, str]) -> None:
    edit = parse_and_apply(_reply(n), BASELINE.read_text())
    assert edit.format == "whole_file" and edit.blocks == 0 and edit.hypothesis
    assert edit.new_text != BASELINE.read_text()
    assert edit.new_text.lstrip().startswith('"""pq-l2 kernels')
    validate(edit.new_text, KERNEL_API)


def test_playbook_lessons() -> None:
    base = BASELINE.read_text()
    assert parse_and_apply(_reply("01"), base).lesson.startswith("At M=16 the cost is numpy call overhead")
    assert parse_and_apply(_reply("03"), base).lesson is None


def test_playbook_02_applies_to_01(states: dict[str, str]) -> None:
    edit = parse_and_apply(_reply("02"), states["01"])
    assert edit.format == "search_replace" and edit.blocks == 1
    assert "np.matmul(self.codebook, q)" in edit.new_text
    assert "np.multiply(diff, diff, out=diff)" not in edit.new_text
    # Everything outside the replaced lines is unchanged.
    assert edit.new_text.split("    def distance_table")[0] == states["01"].split("    def distance_table")[0]
    assert edit.new_text.split("    def compute_distances")[1] == states["01"].split("    def compute_distances")[1]
    validate(edit.new_text, KERNEL_API)


def test_playbook_02_does_not_apply_to_baseline(states: dict[str, str]) -> None:
    with pytest.raises(EditError, match="does not occur"):
        parse_and_apply(_reply("02"), states["baseline"])


@pytest.mark.parametrize("state", ["baseline", "01", "01+02", "03", "05"])
def test_playbook_04_fails_against_every_earlier_state(state: str, states: dict[str, str]) -> None:
    text = (parse_and_apply(_reply("02"), states["01"]).new_text if state == "01+02" else states[state])
    with pytest.raises(EditError, match=re.escape("block 1: the SEARCH text does not occur")):
        parse_and_apply(_reply("04"), text)


def test_playbook_has_the_expected_entries() -> None:
    names = sorted(p.name[:2] for p in PLAYBOOK.glob("*.md") if not p.name.endswith(".repair.md"))
    assert names == ["01", "02", "03", "04", "05", "06"]
