"""Secrets never leave the daemon: every text that is logged, recorded or sent back to a model
passes through ``scrub``, which removes the values of the environment's credential variables
and anything shaped like an API token (a server may echo a key in an error)."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|^ANTHROPIC_|^OPENAI_|^AWS_", re.I)
_TOKEN_SHAPES = re.compile(
    r"(?i)(bearer\s+|x-api-key[\"']?\s*[:=]\s*[\"']?|api[_-]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,}"
    r"|\bsk-[A-Za-z0-9_\-]{8,}")
REDACTED = "[redacted]"


def secret_values() -> list[str]:
    """The values of credential-like variables in this process's environment, longest first."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return _TOKEN_SHAPES.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def scrub_obj(value: Any) -> Any:
    """``scrub`` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_obj(v) for v in value]
    return value
