"""``anthropic:<id>``: Anthropic's Messages API through the official SDK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anthropic

from orchestrator.provider import Message, ModelSpec, Usage, VendorAdapter


class AnthropicMessages(VendorAdapter):
    key_env = "ANTHROPIC_API_KEY"
    connection_errors = (anthropic.APIConnectionError,)
    malformed_errors = (anthropic.APIResponseValidationError,)

    def client(self, key: str | None, base_url: str | None, timeout: float) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)

    def request(self, client: anthropic.Anthropic, spec: ModelSpec, messages: Sequence[Message],
                options: dict[str, Any]) -> tuple[str, str, Usage]:
        # The system message is the stable prefix: cached whole unless it says where to cut.
        system = [block for m in messages if m.role == "system"
                  for block in _blocks(m if m.boundaries else Message(m.role, m.content, (len(m.content),)))]
        turns = [{"role": m.role, "content": _blocks(m) if m.boundaries else m.content}
                 for m in messages if m.role != "system"]
        # Plain dicts, not the SDK's TypedDicts (their roles are Literals): the shape is checked by
        # tests/test_llm_providers.py against a fake server; so is reading `.text` off text blocks.
        r = client.messages.create(model=spec.model_id, max_tokens=spec.max_tokens,
                                   system=system, messages=turns, **options)  # type: ignore[arg-type]
        text = "".join(b.text for b in r.content  # type: ignore[union-attr]
                       if getattr(b, "type", None) == "text")   # thinking etc. ignored
        u = r.usage
        return text, str(r.stop_reason), Usage(u.input_tokens or 0, u.output_tokens or 0,
                                               u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0)


def _blocks(message: Message) -> list[dict[str, Any]]:
    """The message as text blocks cut at its boundaries; the block ending at the last boundary
    carries the cache breakpoint (the API reads a stored prefix ending at any of up to 20 earlier
    block boundaries, so a prefix that grew by whole blocks still hits)."""
    blocks: list[dict[str, Any]] = []
    end, last = 0, max(message.boundaries, default=-1)
    for text in message.blocks():
        end += len(text)
        blocks.append({"type": "text", "text": text, **({"cache_control": {"type": "ephemeral"}} if end == last else {})})
    return blocks
