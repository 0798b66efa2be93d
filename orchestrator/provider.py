"""Providers: turn a conversation into one reply. The LLM only ever proposes.

``complete(messages, purpose)`` returns a ``Reply`` (text plus usage) or raises
``ProviderError`` with a kind the loop can act on. ``purpose`` is ``"propose"`` for a new
attempt and ``"repair"`` for a turn that fixes an edit which did not apply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Message:
    role: str                # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_seconds: float = 0.0


@dataclass(frozen=True)
class Reply:
    text: str
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = "end_turn"
    source: str = ""          # where the text came from, when it is not a live model (playbook file)


class ProviderError(Exception):
    """kind: auth (stop the daemon), invalid, context, transient, truncated, empty, refusal,
    no_repair, exhausted (the offline playbook ran out: the loop ends normally)."""

    def __init__(self, kind: str, message: str, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.kind, self.usage = kind, usage or Usage()


class Provider(Protocol):
    name: str
    model: str

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply: ...


class OfflineProvider:
    """Replays a target's curated playbook (``targets/<t>/playbook/NN-*.md``) in order.

    Each file is written exactly as an LLM reply would be. ``NN-*.repair.md`` beside an entry is
    its answer to a repair turn; without one, a repair turn fails with ``no_repair``. Labelled
    ``offline`` everywhere: it is never passed off as a model.
    """

    name = "offline"

    def __init__(self, playbook: Path, start: int = 0) -> None:
        entries = sorted(p for p in playbook.glob("*.md") if not p.name.endswith(".repair.md"))
        if not entries:
            raise FileNotFoundError(f"no playbook entries in {playbook}")
        self.entries, self.position = entries, start
        self.model = f"playbook:{playbook.parent.name}"

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.entries)

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        if purpose == "repair":
            current = self.entries[self.position - 1]
            repair = current.with_name(current.stem + ".repair.md")
            if not repair.is_file():
                raise ProviderError("no_repair", f"offline playbook has no repair reply for {current.name}")
            return Reply(repair.read_text(), self.name, self.model, source=repair.name)
        if self.position >= len(self.entries):
            raise ProviderError("exhausted", "offline playbook exhausted")
        entry = self.entries[self.position]
        self.position += 1
        return Reply(entry.read_text(), self.name, self.model, source=entry.name)


@dataclass
class Scripted:
    """One scripted step: a reply text, or an error to raise, after an optional delay."""

    text: str | None = None
    error: ProviderError | None = None
    delay: float = 0.0
    usage: Usage = field(default_factory=Usage)


class ScriptedProvider:
    """Replies from a list, for tests: texts, errors and delays, in order; records every call."""

    name = "scripted"

    def __init__(self, steps: Sequence[Scripted | str], model: str = "script") -> None:
        self.steps = [s if isinstance(s, Scripted) else Scripted(text=s) for s in steps]
        self.model, self.calls = model, []  # type: ignore[var-annotated]

    @property
    def exhausted(self) -> bool:
        return not self.steps

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        self.calls.append((purpose, list(messages)))
        if not self.steps:
            raise ProviderError("exhausted", "script exhausted")
        step = self.steps.pop(0)
        if step.delay:
            time.sleep(step.delay)
        if step.error is not None:
            raise step.error
        return Reply(step.text or "", self.name, self.model, usage=step.usage)


def load_script(path: Path) -> ScriptedProvider:
    """``--model script:FILE``: a YAML list of steps, each a reply text or a mapping with
    ``text``, ``delay`` (seconds) and/or ``error: {kind, message}``. For tests and replays."""
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty YAML list of replies")
    steps: list[Scripted | str] = []
    for i, item in enumerate(data, 1):
        if isinstance(item, str):
            steps.append(item)
        elif isinstance(item, dict) and set(item) <= {"text", "delay", "error"}:
            err = item.get("error")
            steps.append(Scripted(text=item.get("text"), delay=float(item.get("delay", 0.0)),
                                  error=ProviderError(err["kind"], err.get("message", err["kind"])) if err else None))
        else:
            raise ValueError(f"{path}: step {i} must be a string or a mapping of text/delay/error")
    return ScriptedProvider(steps, model=f"script:{path.name}")
