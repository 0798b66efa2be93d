"""orchestrator.provider: the offline playbook replayer, the scripted test provider, load_script, the
declared interface (protocol, error kinds, from_config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from orchestrator.config import RunConfig
from orchestrator.provider import (ErrorKind, Message, ModelError, OfflineProvider, Provider, ProviderError, Reply,
                                   Scripted, ScriptedProvider, Usage, from_config, load_script)

MSGS = [Message("system", "s"), Message("user", "u")]


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    d = tmp_path / "mytarget" / "playbook"
    d.mkdir(parents=True)
    (d / "02-second.md").write_text("reply two")
    (d / "01-first.md").write_text("reply one")
    (d / "02-second.repair.md").write_text("repair two")
    (d / "03-third.md").write_text("reply three")
    (d / "notes.txt").write_text("not an entry")
    return d


def test_offline_replays_in_order(playbook: Path) -> None:
    p = OfflineProvider(playbook)
    assert p.name == "offline" and p.model == "playbook:mytarget"
    assert [e.name for e in p.entries] == ["01-first.md", "02-second.md", "03-third.md"]
    replies = []
    for _ in range(3):
        assert not p.exhausted
        replies.append(p.complete(MSGS, "propose"))
    assert p.exhausted
    assert [r.text for r in replies] == ["reply one", "reply two", "reply three"]
    assert [r.source for r in replies] == ["01-first.md", "02-second.md", "03-third.md"]
    assert all(r.provider == "offline" and r.model == "playbook:mytarget" for r in replies)
    with pytest.raises(ProviderError) as exc:
        p.complete(MSGS, "propose")
    assert exc.value.kind == "exhausted"


def test_offline_start_position(playbook: Path) -> None:
    p = OfflineProvider(playbook, start=2)
    assert p.complete(MSGS, "propose").text == "reply three"
    assert p.exhausted


def test_offline_repair_uses_the_repair_file(playbook: Path) -> None:
    p = OfflineProvider(playbook)
    p.complete(MSGS, "propose")
    with pytest.raises(ProviderError) as exc:                   # 01 has no repair reply
        p.complete(MSGS, "repair")
    assert exc.value.kind == "no_repair" and "01-first.md" in str(exc.value)
    assert p.complete(MSGS, "propose").source == "02-second.md"
    r = p.complete(MSGS, "repair")
    assert (r.text, r.source, r.provider) == ("repair two", "02-second.repair.md", "offline")
    # A repair does not consume an entry.
    assert p.complete(MSGS, "propose").source == "03-third.md"


def test_offline_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "only.repair.md").write_text("x")
    with pytest.raises(FileNotFoundError):
        OfflineProvider(tmp_path)
    with pytest.raises(FileNotFoundError):
        OfflineProvider(tmp_path / "missing")


def test_offline_real_playbook_labels() -> None:
    p = OfflineProvider(ROOT / "targets" / "pq_l2" / "playbook")
    first = p.complete(MSGS, "propose")
    assert first.source == "01-fused-top-k.md" and first.text.startswith("HYPOTHESIS:")
    assert p.model == "playbook:pq_l2"


# -- ScriptedProvider ----------------------------------------------------------------------------

def test_scripted_texts_errors_delays_and_calls() -> None:
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=0.01)
    p = ScriptedProvider(["first",
                          Scripted(error=ProviderError("transient", "overloaded")),
                          Scripted(text="third", delay=0.01, usage=usage)], model="m1")
    assert not p.exhausted
    r = p.complete(MSGS, "propose")
    assert r == Reply("first", "scripted", "m1")
    with pytest.raises(ProviderError, match="overloaded") as exc:
        p.complete(MSGS, "repair")
    assert exc.value.kind == "transient"
    r3 = p.complete([*MSGS, Message("assistant", "x")], "propose")
    assert r3.text == "third" and r3.usage == usage
    assert p.exhausted
    with pytest.raises(ProviderError) as exc:
        p.complete(MSGS, "propose")
    assert exc.value.kind == "exhausted"
    assert [c[0] for c in p.calls] == ["propose", "repair", "propose", "propose"]
    assert p.calls[2][1] == [*MSGS, Message("assistant", "x")]


def test_scripted_records_a_copy_of_messages() -> None:
    p = ScriptedProvider(["a"])
    msgs = list(MSGS)
    p.complete(msgs, "propose")
    msgs.append(Message("user", "later"))
    assert p.calls[0][1] == MSGS


def test_provider_error_defaults() -> None:
    e = ProviderError("auth", "bad key")
    assert e.kind == "auth" and str(e) == "bad key" and e.usage == Usage()


# -- load_script ---------------------------------------------------------------------------------

def test_load_script(tmp_path: Path) -> None:
    path = tmp_path / "steps.yaml"
    path.write_text("- |\n  HYPOTHESIS: one\n  body\n"
                    "- text: two\n  delay: 0.01\n"
                    "- error: {kind: auth, message: bad key}\n"
                    "- error: {kind: transient}\n"
                    "- {}\n")
    p = load_script(path)
    assert p.model == "script:steps.yaml" and len(p.steps) == 5
    assert p.complete(MSGS, "propose").text == "HYPOTHESIS: one\nbody\n"
    assert p.steps[0].delay == 0.01
    assert p.complete(MSGS, "propose").text == "two"
    with pytest.raises(ProviderError, match="bad key") as exc:
        p.complete(MSGS, "propose")
    assert exc.value.kind == "auth"
    with pytest.raises(ProviderError) as exc:
        p.complete(MSGS, "propose")
    assert exc.value.kind == "transient" and str(exc.value) == "transient"
    assert p.complete(MSGS, "propose").text == ""


@pytest.mark.parametrize("text", [
    "",                               # empty document
    "[]\n",                           # empty list
    "text: hi\n",                     # a mapping, not a list
    "just a string\n",
    "- 42\n",                         # a step that is neither text nor mapping
    "- [a, b]\n",
    "- text: hi\n  colour: red\n",    # unknown key in a step
    "- ok\n- replies: x\n",
])
def test_load_script_rejects_bad_shapes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.yaml"):
        load_script(path)


@pytest.mark.parametrize("kind", ["x", "tranisent"])
def test_load_script_rejects_an_unknown_error_kind(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"- error: {{kind: {kind}}}\n")
    with pytest.raises(ValueError, match=f"bad.yaml: step 1 has error kind '{kind}'"):
        load_script(path)


# -- the declared interface ----------------------------------------------------------------------

def test_replays_serve_the_whole_protocol(playbook: Path) -> None:
    for provider in (OfflineProvider(playbook), ScriptedProvider(["a"])):
        assert isinstance(provider, Provider)
        assert provider.spec is None and provider.worst_case_cost(MSGS) == 0.0    # free, not "unknown price"


def test_resume_after_skips_the_consumed_playbook_entries(playbook: Path) -> None:
    p = OfflineProvider(playbook)
    p.resume_after(2)
    assert p.complete(MSGS, "propose").source == "03-third.md" and p.exhausted
    p.resume_after(0)
    assert not p.exhausted and p.complete(MSGS, "propose").source == "01-first.md"
    s = ScriptedProvider(["a", "b"])
    s.resume_after(1)                                         # a script goes on as it is
    assert s.complete(MSGS, "propose").text == "a"


def test_error_kinds_read_as_their_strings() -> None:
    import json

    e = ProviderError("truncated", "cut off")
    assert e.kind is ErrorKind.TRUNCATED and e.kind == "truncated"
    assert json.dumps({"kind": e.kind}) == '{"kind": "truncated"}' and f"{e.kind}: {e}" == "truncated: cut off"
    with pytest.raises(ValueError):
        ProviderError("no_such_kind", "x")


def test_discard_reasons_of_error_kinds() -> None:
    assert {k.value: k.discard_reason for k in ErrorKind} == {
        "auth": "provider_error", "invalid": "provider_error", "context": "provider_error",
        "transient": "provider_error", "truncated": "truncated", "empty": "empty_reply", "refusal": "refusal",
        "no_repair": "edit_failed", "oversized": "oversized_reply", "exhausted": "provider_error"}


def test_from_config_builds_replays_and_names_what_is_wrong(tmp_path: Path, playbook: Path) -> None:
    offline = from_config(RunConfig(model="offline"), playbook.parent)
    assert isinstance(offline, OfflineProvider) and offline.model == "playbook:mytarget"
    with pytest.raises(ModelError, match=r"--model offline needs a playbook, and .*empty.playbook has none"):
        from_config(RunConfig(model="offline"), tmp_path / "empty")
    script = tmp_path / "s.yaml"
    script.write_text("- hello\n")
    scripted = from_config(RunConfig(model=f"script:{script}"), tmp_path)
    assert isinstance(scripted, ScriptedProvider) and scripted.model == "script:s.yaml"
    with pytest.raises(ModelError, match=r"--model script:.*missing.yaml: cannot use this script"):
        from_config(RunConfig(model=f"script:{tmp_path / 'missing.yaml'}"), tmp_path)
    with pytest.raises(ModelError, match="unknown model 'gpt-9'"):
        from_config(RunConfig(model="gpt-9"), tmp_path)
    with pytest.raises(ModelError, match="has no known price and --max-cost-usd is set"):
        from_config(RunConfig(model="openai-compatible:x", base_url="http://127.0.0.1:9/v1", max_cost_usd=1.0),
                    tmp_path)
