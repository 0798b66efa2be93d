"""``openai:<id>`` and ``openai-compatible:<id>``: the Chat Completions API through the official
``openai`` SDK, from OpenAI or from a server speaking it (vLLM, Ollama, llama.cpp, LM Studio)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import openai

from orchestrator.provider import Message, ModelError, ModelSpec, Usage, VendorAdapter


class OpenAIChat(VendorAdapter):
    key_env = "OPENAI_API_KEY"
    connection_errors = (openai.APIConnectionError,)
    malformed_errors = (openai.APIResponseValidationError,)
    limit_field = "max_completion_tokens"       # OpenAI's name for the output cap

    def client(self, key: str | None, base_url: str | None, timeout: float) -> openai.OpenAI:
        return openai.OpenAI(api_key=key or "not-needed", base_url=base_url, timeout=timeout, max_retries=0)

    def request(self, client: openai.OpenAI, spec: ModelSpec, messages: Sequence[Message],
                options: dict[str, Any]) -> tuple[str, str, Usage]:
        # Plain dicts, not the SDK's TypedDicts (their roles are Literals), and the output cap's
        # name is the adapter's: the request is checked by tests/test_llm_providers.py instead.
        r = client.chat.completions.create(  # type: ignore[call-overload]
            model=spec.model_id, **{self.limit_field: spec.max_tokens},
            messages=[{"role": m.role, "content": m.content} for m in messages], **options)
        if not r.choices:
            return "", "no_choices", Usage()
        choice = r.choices[0]
        stop = "refusal" if getattr(choice.message, "refusal", None) else str(choice.finish_reason)
        u = r.usage
        cached = (getattr(getattr(u, "prompt_tokens_details", None), "cached_tokens", 0) or 0) if u else 0
        usage = Usage((u.prompt_tokens or 0) - cached, u.completion_tokens or 0, cached, 0) if u else Usage()
        return choice.message.content or "", stop, usage


class OpenAICompatible(OpenAIChat):
    """A local or third-party server: it needs a base URL, a key only if it wants one, and
    ``max_tokens`` (what these servers accept) rather than ``max_completion_tokens``."""

    limit_field = "max_tokens"
    spec_hint = " with --base-url"

    def check(self, spec: ModelSpec, key: str | None, base_url: str | None) -> None:
        if not (base_url or os.environ.get("OPENAI_BASE_URL")):
            raise ModelError("openai-compatible models need --base-url URL (e.g. http://127.0.0.1:8000/v1 for "
                             "vLLM, http://127.0.0.1:11434/v1 for Ollama) or OPENAI_BASE_URL")
