"""orchestrator.edit: reply parsing (lenient where the meaning is unambiguous, precise errors elsewhere),
all-or-nothing SEARCH/REPLACE, API validation."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BASELINE, ROOT
from orchestrator.edit import (MAX_ANALYSIS_CHARS, MAX_KERNEL_BYTES, Edit, EditError, hypothesis_of, parse_and_apply,
                               validate)
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
    with pytest.raises(EditError, match="no HYPOTHESIS: line"):
        parse_and_apply("```python\nA = 1\n```\n", CURRENT)
    with pytest.raises(EditError, match="no HYPOTHESIS: line"):
        parse_and_apply("My hypothesis is that it is faster.\n```python\nA = 1\n```\n", CURRENT)


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


@pytest.mark.parametrize("line, forms", [
    ("Hypothesis: fuse the loops", "in lower or mixed case"),
    ("hypothesis: fuse the loops", "in lower or mixed case"),
    ("**HYPOTHESIS:** fuse the loops", "in markdown emphasis"),
    ("**Hypothesis**: fuse the loops", "in markdown emphasis, in lower or mixed case"),
    ("*Hypothesis:* fuse the loops", "in markdown emphasis, in lower or mixed case"),
    ("__HYPOTHESIS__: fuse the loops", "in markdown emphasis"),
    ("**HYPOTHESIS: fuse the loops**", "in markdown emphasis"),
    ("### HYPOTHESIS: fuse the loops", "as a markdown heading"),
    ("## Hypothesis\n\nfuse the loops",
     "as a markdown heading, in lower or mixed case, with its text on the next line"),
    ("**Hypothesis**\nfuse the\nloops", "in markdown emphasis, in lower or mixed case, with its text on the next line"),
    ("HYPOTHESIS:\nfuse the loops", "with its text on the next line"),
    ("- Hypothesis: fuse the loops", "as a list item, in lower or mixed case"),
    ("  * **HYPOTHESIS:** fuse the loops", "as a list item, in markdown emphasis"),
])
def test_hypothesis_label_variants(line: str, forms: str) -> None:
    reply = f"{line}\n\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.hypothesis == "fuse the loops" == hypothesis_of(reply)
    assert edit.notes == (f"hypothesis given {forms}",)


def test_plain_labels_leave_no_notes() -> None:
    edit = parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\nLESSON: l\n", CURRENT)
    assert edit.notes == () and edit.analysis is None


def test_lesson_label_variants() -> None:
    edit = parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\n\n**Lesson:** tables fit L1\n", CURRENT)
    assert edit.lesson == "tables fit L1"
    assert edit.notes == ("lesson given in markdown emphasis, in lower or mixed case",)
    edit = parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\n\n## Lesson\nTables fit L1.\n", CURRENT)
    assert edit.lesson == "Tables fit L1."


def test_prose_that_mentions_a_label_is_not_one() -> None:
    reply = ("HYPOTHESIS: h\nHypothesis testing aside, the hypothesis is sound.\n## Hypothesis testing\n"
             "```python\nA = 1\n```\n")
    assert parse_and_apply(reply, CURRENT).hypothesis == "h"


def test_labels_inside_code_do_not_count() -> None:
    kernel = "# hypothesis: a comment in the kernel\nHYPOTHESIS = 1\n"
    reply = f"HYPOTHESIS: h\n\n```python\n{kernel}```\n"
    edit = parse_and_apply(reply, CURRENT)
    assert edit.hypothesis == "h" and edit.new_text == kernel
    reply = "Hypothesis: h\n" + block("        out[:] = 1.0\n",
                                      "        # HYPOTHESIS: two is faster\n        out[:] = 2.0\n")
    assert parse_and_apply(reply, CURRENT).hypothesis == "h"
    # A hypothesis only inside code is missing, and the error says where it went.
    with pytest.raises(EditError, match=r"no HYPOTHESIS: line outside code \(reply line 2 has one inside"):
        parse_and_apply("```python\nHYPOTHESIS: h\nA = 1\n```\n", CURRENT)


def test_two_hypotheses_in_different_forms_are_still_two() -> None:
    with pytest.raises(EditError, match=r"2 HYPOTHESIS: lines \(reply lines 1, 3\)"):
        parse_and_apply("## Hypothesis\nfirst\n**Hypothesis:** second\n```python\nA = 1\n```\n", CURRENT)


def test_a_heading_with_nothing_after_it_is_empty() -> None:
    with pytest.raises(EditError, match=r"HYPOTHESIS: line is empty \(reply line 1\)"):
        parse_and_apply("## Hypothesis\n\n```python\nA = 1\n```\n", CURRENT)
    with pytest.raises(EditError, match="HYPOTHESIS: line is empty"):
        parse_and_apply("## Hypothesis\nLESSON: l\n```python\nA = 1\n```\n", CURRENT)


# -- ANALYSIS ------------------------------------------------------------------------------------

def test_analysis_is_free_text_up_to_the_hypothesis() -> None:
    reply = ("ANALYSIS: the table build is 60% of the time.\n\nThe scan is memory-bound at M = 96:\n"
             "- 20k vectors x 96 codes\n\nHYPOTHESIS: h\n```python\nA = 1\n```\n")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.analysis == ("the table build is 60% of the time.\n\nThe scan is memory-bound at M = 96:\n"
                             "- 20k vectors x 96 codes")
    assert edit.hypothesis == "h" and edit.notes == ()


def test_analysis_as_a_heading_leaves_code_out() -> None:
    reply = ("## Analysis\n\nThe hot loop is\n```python\nfor n in range(N): ...\n```\nwhich gathers.\n\n"
             f"## Hypothesis\nGather less.\n\n```python\n{CURRENT}```\n")
    edit = parse_and_apply(reply, CURRENT, api=API)
    assert edit.analysis == "The hot loop is\nwhich gathers."
    assert edit.hypothesis == "Gather less." and edit.new_text == CURRENT
    assert "analysis given as a markdown heading, in lower or mixed case" in edit.notes


def test_analysis_is_optional_capped_and_joined() -> None:
    assert parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\n", CURRENT).analysis is None
    assert parse_and_apply("ANALYSIS:\nHYPOTHESIS: h\n```python\nA = 1\n```\n", CURRENT).analysis is None
    long = "x" * (MAX_ANALYSIS_CHARS + 10)
    edit = parse_and_apply(f"ANALYSIS: {long}\nHYPOTHESIS: h\n```python\nA = 1\n```\n", CURRENT)
    assert edit.analysis == "x" * MAX_ANALYSIS_CHARS + "…"
    assert edit.notes == (f"analysis cut to 4,000 of its {MAX_ANALYSIS_CHARS + 10:,} characters",)
    edit = parse_and_apply("ANALYSIS: a\nHYPOTHESIS: h\nAnalysis: b\n```python\nA = 1\n```\n", CURRENT)
    assert edit.analysis == "a\n\nb" and "2 ANALYSIS sections joined" in edit.notes


# -- leniencies in the code ----------------------------------------------------------------------

def test_whole_file_chosen_among_snippets_by_the_api() -> None:
    reply = ("HYPOTHESIS: h\n\nThe loop now reads:\n```python\nout[:] = 2.0\n```\n\n```python\n"
             + CURRENT + "```\n\nOutput before:\n```text\n1.0\n```\n")
    edit = parse_and_apply(reply, CURRENT, api=API)
    assert edit.new_text == CURRENT and edit.format == "whole_file"
    assert edit.notes == ("chose fenced block 2 of 3 (the only whole kernels.py that keeps the API)",)
    # Without the API both Python blocks are whole files: ambiguous.
    with pytest.raises(EditError, match=r"found 3 fenced code blocks .* 2 of them \(blocks 1, 2\)"):
        parse_and_apply(reply, CURRENT)


def test_whole_file_rejections_name_every_block() -> None:
    reply = ("HYPOTHESIS: h\n```python\nout[:] = (\n```\n```python\nA = 1\n```\n```bash\nls\n```\n"
             "```diff\n-a\n+b\n```\n")
    with pytest.raises(EditError) as exc:
        parse_and_apply(reply, CURRENT, api=API)
    msg = str(exc.value)
    assert msg.startswith("found 4 fenced code blocks and no SEARCH/REPLACE blocks, and none is a whole kernels.py "
                          "that keeps the API: ")
    assert "block 1 (reply line 2, 1 line): does not parse as Python (" in msg
    assert "block 2 (reply line 5, 1 line): the API needs a top-level class PqKernel" in msg
    assert "block 3 (reply line 8, 1 line): fenced as ```bash, not as Python" in msg
    assert "block 4 (reply line 11, 2 lines): a ```diff block: unified diffs are not applied" in msg


def test_two_whole_files_that_keep_the_api_are_ambiguous() -> None:
    other = CURRENT.replace("out[:] = 1.0", "out[:] = 2.0")
    reply = f"HYPOTHESIS: h\n```python\n{CURRENT}```\nor\n```python\n{other}```\n"
    with pytest.raises(EditError, match=r"2 of them \(blocks 1, 2\) are a whole kernels.py that keeps the API"):
        parse_and_apply(reply, CURRENT, api=API)
    # The same file twice is one answer.
    reply = f"HYPOTHESIS: h\n```python\n{other}```\nagain:\n```python\n{other}```\n"
    edit = parse_and_apply(reply, CURRENT, api=API)
    assert edit.new_text == other and "blocks 1, 2 are the same file" in edit.notes[0]


def test_one_whole_file_that_breaks_the_api_says_how() -> None:
    broken = CURRENT.replace("def search(self, query, k,", "def search(self, q, k,")
    with pytest.raises(EditError, match=r"found 1 fenced code block .*PqKernel\.search must take exactly"):
        parse_and_apply(f"HYPOTHESIS: h\n```python\n{broken}```\n", CURRENT, api=API)


@pytest.mark.parametrize("opening", ["```python", "```py", "```python3", "```", "```python   ", "```Python"])
def test_fence_info_strings(opening: str) -> None:
    reply = f"HYPOTHESIS: h\n{opening}\nA = 2\n```  \n"
    assert parse_and_apply(reply, CURRENT).new_text == "A = 2\n"


def test_unclosed_last_fence_is_truncation() -> None:
    reply = "HYPOTHESIS: h\n```python\nimport numpy as np\n\nclass PqKer"
    with pytest.raises(EditError, match=r"ends inside fenced block 1 \(opened at reply line 2, 3 lines so far\).*"
                                        "truncated"):
        parse_and_apply(reply, CURRENT)
    with pytest.raises(EditError, match="truncated"):
        parse_and_apply("HYPOTHESIS: h\n```python\nA = 1\n```\nand\n```python\nB = 1\n", CURRENT)


def test_search_replace_ending_inside_a_block_is_truncation() -> None:
    reply = "HYPOTHESIS: h\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n") + \
        "<<<<<<< SEARCH\n        out[:] = 0.0\n=======\n        out[:] = 3."
    with pytest.raises(EditError, match=r"ends inside block 2 \(its '<<<<<<< SEARCH' at reply line 7\).*truncated"):
        parse_and_apply(reply, CURRENT)


def test_search_replace_blocks_in_fences() -> None:
    reply = ("HYPOTHESIS: h\n\nkernels.py\n```diff\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
             + "```\n\n```python\n" + block("        out[:] = 0.0\n", "        out[:] = 3.0\n") + "```\n")
    edit = parse_and_apply(reply, CURRENT, api=API)
    assert edit.blocks == 2
    assert edit.new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 2.0").replace("out[:] = 0.0", "out[:] = 3.0")
    assert edit.notes == ("SEARCH/REPLACE blocks inside ``` fences (the fence lines are ignored)",)


def test_search_matches_ignoring_trailing_whitespace_on_either_side() -> None:
    current = CURRENT.replace("    def fill_dists(self, out):\n", "    def fill_dists(self, out):  \n")
    ids, dists = "    def fill_ids(self, out):\n", "    def fill_dists(self, out):\n"
    reply = ("HYPOTHESIS: h\n"
             + block(ids.replace(":", ": ") + "        out[:] = 0.0\t\n\n", ids + "        out[:] = 4.0\n\n")
             + block(dists + "        out[:] = 1.0\n", dists + "        out[:] = 5.0\n"))
    edit = parse_and_apply(reply, current)
    assert edit.new_text == (current.replace("out[:] = 0.0", "out[:] = 4.0")
                             .replace("    def fill_dists(self, out):  \n        out[:] = 1.0\n",
                                      dists + "        out[:] = 5.0\n"))
    assert edit.notes == ("block 1 matched ignoring trailing whitespace",
                          "block 2 matched ignoring trailing whitespace")


def test_search_matches_a_last_line_without_final_newline() -> None:
    current = CURRENT.rstrip("\n")
    reply = "HYPOTHESIS: h\n" + block("    def fill_dists(self, out):\n        out[:] = 1.0\n",
                                      "    def fill_dists(self, out):\n        out[:] = 8.0\n")
    edit = parse_and_apply(reply, current)
    assert edit.new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 8.0")
    assert edit.notes == ("block 1 matched the file's last line, which has no final newline",)


def test_trailing_whitespace_leniency_still_needs_one_match() -> None:
    current = CURRENT.replace("out[:] = 1.0", "out[:] = 0.0 ")          # both methods, one with a trailing space
    reply = "HYPOTHESIS: h\n" + block("        out[:] = 0.0  \n", "        out[:] = 2.0\n")
    with pytest.raises(EditError, match=r"block 1: the SEARCH text occurs 2 times in the current kernels.py ignoring "
                                        r"trailing whitespace \(at lines 14, 17\)"):
        parse_and_apply(reply, current)


def test_nothing_fuzzier_than_trailing_whitespace() -> None:
    # Indentation changed: not matched, and the error points at the line and the file's version of it.
    reply = "HYPOTHESIS: h\n" + block("    def fill_ids(self, out):\n      out[:] = 0.0\n", "x = 1\n")
    with pytest.raises(EditError) as exc:
        parse_and_apply(reply, CURRENT)
    assert str(exc.value).startswith("block 1: the SEARCH text does not occur in the current kernels.py, not even "
                                     "ignoring trailing whitespace: its line 1 matches the file from line 13, but "
                                     "SEARCH line 2 '      out[:] = 0.0' differs from the file's line 14 "
                                     "'        out[:] = 0.0' (the file has '        out[:] = 0.0' at line 14: the "
                                     "indentation differs).")
    # A changed word is not matched either.
    reply = "HYPOTHESIS: h\n" + block("        out[:] = 1.00\n", "x = 1\n")
    with pytest.raises(EditError, match="its first line '        out\\[:\\] = 1.00' is not a line of the file"):
        parse_and_apply(reply, CURRENT)


def test_a_block_that_an_earlier_block_consumed_says_so() -> None:
    reply = ("HYPOTHESIS: h\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")
             + block("        out[:] = 1.0\n", "        out[:] = 3.0\n"))
    with pytest.raises(EditError, match="block 2: the SEARCH text does not occur in kernels.py as block 1 left it.*"
                                        "It is in the original kernels.py: an earlier block changed those lines"):
        parse_and_apply(reply, CURRENT)


def test_crlf_reply() -> None:
    reply = ("HYPOTHESIS: h\n" + block("        out[:] = 1.0\n", "        out[:] = 2.0\n")).replace("\n", "\r\n")
    edit = parse_and_apply(reply, CURRENT)
    assert edit.new_text == CURRENT.replace("out[:] = 1.0", "out[:] = 2.0") and "\r" not in edit.new_text
    assert edit.notes == ("the reply's CRLF line endings were read as LF",)


def test_empty_reply() -> None:
    for reply in ("", "  \n\n"):
        with pytest.raises(EditError, match="the reply is empty"):
            parse_and_apply(reply, CURRENT)


def test_every_problem_is_reported_at_once() -> None:
    reply = "Here you go.\n" + block("        out[:] = 9.0\n", "x\n")
    with pytest.raises(EditError) as exc:
        parse_and_apply(reply, CURRENT)
    lines = str(exc.value).splitlines()
    assert lines[0] == "the reply has 2 problems:"
    assert lines[1].startswith("1. the reply has no HYPOTHESIS: line")
    assert lines[2].startswith("2. block 1: the SEARCH text does not occur")


# -- hypothesis_of -------------------------------------------------------------------------------

def test_hypothesis_of_reads_what_parse_and_apply_reads() -> None:
    assert hypothesis_of("**Hypothesis:** fuse\n<<<<<<< SEARCH\nnot in any file\n") == "fuse"
    assert hypothesis_of("HYPOTHESIS: a\nHYPOTHESIS: b\n") == "a"               # the first of two
    assert hypothesis_of("## Hypothesis\r\n\r\nGather less.\r\n```python\n") == "Gather less."
    assert hypothesis_of("```python\n# HYPOTHESIS: in code\n```\n") is None
    assert hypothesis_of("HYPOTHESIS:\n\n```python\nA = 1\n```\n") is None


@pytest.mark.parametrize("reply", ["", "\n", "```", "<<<<<<< SEARCH", ">>>>>>> REPLACE\n=======", "## Hypothesis",
                                   "**", "HYPOTHESIS", "\x00\r\r\n```\x00", "ANALYSIS:\nLESSON:\n", "- ", "`" * 10])
def test_hypothesis_of_never_raises(reply: str) -> None:
    hypothesis_of(reply)


def test_null_byte_is_a_parse_error() -> None:
    with pytest.raises(EditError, match="does not parse"):
        validate(CURRENT + "\x00\n", API)


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
