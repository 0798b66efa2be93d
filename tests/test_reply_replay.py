"""Replay a corpus of replies, written as models write them, against pq-l2's shipped kernel.

Every reply whose meaning is unambiguous must apply (a rejected one would cost a repair turn, a
paid call) and change the kernel as it meant to; every malformed one must fail with a precise
error. The replies (tests/replies/, listed in manifest.yaml) are written against the current
targets/pq_l2/kernels.py: if that file changes, the SEARCH text and line numbers here must too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from conftest import BASELINE, ROOT
from orchestrator.edit import Edit, EditError, hypothesis_of, parse_and_apply, validate
from targets.pq_l2.target import KERNEL_API

REPLIES = ROOT / "tests" / "replies"
MANIFEST: dict[str, dict[str, Any]] = yaml.safe_load((REPLIES / "manifest.yaml").read_text())


@dataclass
class Replay:
    name: str
    expected: dict[str, Any]
    edit: Edit | None
    error: str | None


def replay(name: str) -> Replay:
    expected = MANIFEST[name]
    text = (REPLIES / name).read_text()
    if expected.get("crlf"):
        text = text.replace("\n", "\r\n")
    try:
        edit = parse_and_apply(text, BASELINE.read_text(), api=KERNEL_API)
        validate(edit.new_text, KERNEL_API)
    except EditError as exc:
        return Replay(name, expected, None, str(exc))
    assert hypothesis_of(text) == edit.hypothesis, "the daemon would log another hypothesis than the edit's"
    return Replay(name, expected, edit, None)


def test_manifest_lists_every_reply_and_nothing_else() -> None:
    assert sorted(MANIFEST) == sorted(p.name for p in REPLIES.glob("*.md"))


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if "error" not in MANIFEST[n]))
def test_unambiguous_reply_applies_as_meant(name: str) -> None:
    r = replay(name)
    assert r.error is None, f"{name} would cost a repair turn: {r.error}"
    assert r.edit is not None
    want, edit = r.expected, r.edit
    assert edit.format == want["format"]
    assert edit.hypothesis.startswith(want["hypothesis"]), edit.hypothesis
    for field in ("analysis", "lesson"):
        got = getattr(edit, field)
        if want[field] is None:
            assert got is None, (field, got)
        else:
            assert got and got.startswith(want[field]), (field, got)
    before, after = BASELINE.read_text().splitlines(), edit.new_text.splitlines()
    for line in want["added"]:
        assert line in after and line not in before, line
    for line in want["removed"]:
        assert line in before and line not in after, line
    assert list(edit.notes) == want["notes"]


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if "error" in MANIFEST[n]))
def test_malformed_reply_fails_precisely(name: str) -> None:
    r = replay(name)
    assert r.edit is None, f"{name} applied: {r.edit}"
    assert r.error is not None and r.expected["error"] in r.error, r.error


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    replays = [replay(name) for name in sorted(MANIFEST)]
    meant = [r for r in replays if "error" not in r.expected]
    applied = [r for r in replays if r.edit is not None]
    lenient = [r for r in applied if r.edit and r.edit.notes]
    wasted = [r.name for r in meant if r.edit is None]
    precise = [r for r in replays if "error" in r.expected and r.error and r.expected["error"] in r.error]
    with capsys.disabled():
        print(f"\n{len(replays)} replies: {len(applied)} applied ({len(lenient)} through a leniency), "
              f"{len(precise)} precise errors, {len(wasted)} repair turns spent on unambiguous replies")
    assert wasted == []
    assert len(applied) == len(meant) and len(precise) == len(replays) - len(meant)
    assert len(replays) >= 30 and len(lenient) >= len(meant) // 2
