"""Providers: turn a conversation into one reply. The LLM only ever proposes.

``complete(messages, purpose)`` returns a ``Reply`` (text plus usage) or raises
``ProviderError`` with an ``ErrorKind`` the loop can act on. ``purpose`` is ``"propose"`` for a
new attempt and ``"repair"`` for a turn that fixes an edit which did not apply.

Everything the loop may use is declared on the ``Provider`` protocol, and ``from_config`` builds
the provider a run config names: the offline playbook, a ``script:`` file, or a live model. A live
model is ``SDKProvider`` (the one retry policy, deadline, cost accounting and reply checks) around
a ``VendorAdapter``: one module per vendor API under ``orchestrator/vendors/``, named by its kind
in ``models.yaml`` (``kinds:``). A new vendor is that module plus models.yaml entries.
"""

from __future__ import annotations

import abc
import concurrent.futures
import importlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from orchestrator.redact import scrub

if TYPE_CHECKING:
    from orchestrator.config import RunConfig


@dataclass(frozen=True)
class Message:
    role: str                # "system" | "user" | "assistant"
    content: str
    # Offsets into ``content`` where a stable prefix ends, ascending. A vendor that caches prompt
    # prefixes by block (Anthropic) makes each span a block and marks the last one for caching, so
    # a later request whose prefix grew by appending blocks still hits; others ignore them.
    boundaries: tuple[int, ...] = ()

    def blocks(self) -> list[str]:
        """``content`` cut at the boundaries (the last block is what follows the last boundary)."""
        cuts = [0, *(b for b in self.boundaries if 0 < b < len(self.content)), len(self.content)]
        return [self.content[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


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
    retries: tuple[dict, ...] = ()   # each retried failure: {"kind", "status", "waited_seconds"}


class ErrorKind(StrEnum):
    """Why a call gave no usable reply. A StrEnum, so ``kind == "auth"`` holds and the ledger's JSON
    and f-strings read exactly as the plain strings did."""

    AUTH = "auth"              # the key was refused: stop the daemon
    INVALID = "invalid"        # the request was refused as it is
    CONTEXT = "context"        # the prompt is too long: retry with less history
    TRANSIENT = "transient"    # retries exhausted (rate limits, overload, timeouts, garbled replies)
    TRUNCATED = "truncated"    # cut off by the token limit; billed, never applied
    EMPTY = "empty"            # no text
    REFUSAL = "refusal"        # the model refused
    NO_REPAIR = "no_repair"    # a replay has no answer to a repair turn
    OVERSIZED = "oversized"    # too long to be a kernel edit; not sent back
    EXHAUSTED = "exhausted"    # the replies ran out: the loop ends normally

    @property
    def discard_reason(self) -> str:
        """The ledger ``reason`` of an attempt this error ends (a value of ``gate.Reason``)."""
        return _DISCARD_REASONS.get(self, "provider_error")


# Every kind not named here is recorded as "provider_error" (auth and exhausted too, before they stop).
_DISCARD_REASONS = {ErrorKind.TRUNCATED: "truncated", ErrorKind.EMPTY: "empty_reply", ErrorKind.REFUSAL: "refusal",
                    ErrorKind.NO_REPAIR: "edit_failed", ErrorKind.OVERSIZED: "oversized_reply"}


class ProviderError(Exception):
    """A call that gave no usable reply; ``kind`` (an ``ErrorKind``; a plain string is converted,
    an unknown one is a ValueError) says what the loop should do. ``usage`` carries what a failed
    call still cost."""

    def __init__(self, kind: ErrorKind | str, message: str, usage: Usage | None = None,
                 retries: tuple[dict, ...] = ()) -> None:
        super().__init__(scrub(message))
        self.kind, self.usage, self.retries = ErrorKind(kind), usage or Usage(), retries


@runtime_checkable
class Provider(Protocol):
    """Everything the loop may use of a provider."""

    name: str                  # "offline", "scripted", or the model's kind ("anthropic", ...)
    model: str                 # what the ledger records: "playbook:<target>", "script:<file>", "<kind>:<id>"

    @property
    def spec(self) -> ModelSpec | None:
        """A live model's settings and price; None for replays."""
        ...

    @property
    def exhausted(self) -> bool:
        """No more replies will come (a replay at its end); live models never are."""
        ...

    def worst_case_cost(self, messages: Sequence[Message]) -> float | None:
        """An upper bound in USD on the next call's cost: 0.0 for replays, None when the price is unknown."""
        ...

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        """One reply to ``messages``, or ProviderError."""
        ...

    def resume_after(self, replies_consumed: int) -> None:
        """A resumed run: go on after the ``replies_consumed`` proposals completed attempts used (a
        replay skips them; a live model has nothing to skip)."""
        ...


class OfflineProvider:
    """Replays a target's curated playbook (``targets/<t>/playbook/NN-*.md``) in order.

    Each file is written exactly as an LLM reply would be. ``NN-*.repair.md`` beside an entry is
    its answer to a repair turn; without one, a repair turn fails with ``no_repair``. Labelled
    ``offline`` everywhere: it is never passed off as a model.
    """

    name = "offline"
    spec = None

    def __init__(self, playbook: Path, start: int = 0) -> None:
        entries = sorted(p for p in playbook.glob("*.md") if not p.name.endswith(".repair.md"))
        if not entries:
            raise FileNotFoundError(f"no playbook entries in {playbook}")
        self.entries, self.position = entries, start
        self.model = f"playbook:{playbook.parent.name}"

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.entries)

    def worst_case_cost(self, messages: Sequence[Message]) -> float | None:
        return 0.0

    def resume_after(self, replies_consumed: int) -> None:
        self.position = replies_consumed

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        if purpose == "repair":
            current = self.entries[self.position - 1]
            repair = current.with_name(current.stem + ".repair.md")
            if not repair.is_file():
                raise ProviderError(ErrorKind.NO_REPAIR, f"offline playbook has no repair reply for {current.name}")
            return Reply(repair.read_text(), self.name, self.model, source=repair.name)
        if self.position >= len(self.entries):
            raise ProviderError(ErrorKind.EXHAUSTED, "offline playbook exhausted")
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
    spec = None

    def __init__(self, steps: Sequence[Scripted | str], model: str = "script") -> None:
        self.steps = [s if isinstance(s, Scripted) else Scripted(text=s) for s in steps]
        self.model, self.calls = model, []  # type: ignore[var-annotated]

    @property
    def exhausted(self) -> bool:
        return not self.steps

    def worst_case_cost(self, messages: Sequence[Message]) -> float | None:
        return 0.0

    def resume_after(self, replies_consumed: int) -> None:
        """A script is not positioned on resume: it goes on from where this process's copy is."""

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        self.calls.append((purpose, list(messages)))
        if not self.steps:
            raise ProviderError(ErrorKind.EXHAUSTED, "script exhausted")
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
            if err and err["kind"] not in set(ErrorKind):
                raise ValueError(f"{path}: step {i} has error kind {err['kind']!r}; known: "
                                 f"{', '.join(ErrorKind)}")
            steps.append(Scripted(text=item.get("text"), delay=float(item.get("delay", 0.0)),
                                  error=ProviderError(err["kind"], err.get("message", err["kind"])) if err else None))
        else:
            raise ValueError(f"{path}: step {i} must be a string or a mapping of text/delay/error")
    return ScriptedProvider(steps, model=f"script:{path.name}")


# ---------------------------------------------------------------------------------- real LLM APIs

MODELS_FILE = Path(__file__).with_name("models.yaml")
_MODEL_KEYS = {"price", "max_tokens", "temperature", "extra"}
_PRICE_KEYS = {"input", "output", "cache_write", "cache_read"}
CHARS_PER_TOKEN_WORST = 3.0      # code and English run ~3.5-4 chars/token: 3 over-counts, as a budget should


class ModelError(ValueError):
    """An unknown model, kind or setting, or a missing key; the message names it and the fix."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float | None = None
    cache_read: float | None = None

    def cost(self, usage: Usage) -> float:
        """``input_tokens`` are the uncached input tokens; cache tokens are billed at their rates."""
        return (usage.input_tokens * self.input + usage.output_tokens * self.output
                + usage.cache_write_tokens * (self.cache_write if self.cache_write is not None else self.input)
                + usage.cache_read_tokens * (self.cache_read if self.cache_read is not None else self.input)) / 1e6

    def worst_case(self, input_tokens: int, max_output_tokens: int) -> float:
        dearest_input = max(self.input, self.cache_write or 0.0)
        return (input_tokens * dearest_input + max_output_tokens * self.output) / 1e6


@dataclass(frozen=True)
class ModelSpec:
    kind: str                        # a key of models.yaml kinds: anthropic, openai, openai-compatible
    model_id: str                    # what the API is asked for
    price: Price | None
    max_tokens: int
    temperature: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model_id}"


def load_models(overrides: dict | None = None) -> dict:
    """The project's models.yaml with the run config's ``models:`` mapping merged on top (its
    ``kinds``, which name code to import, are the project's alone)."""
    import yaml

    data = yaml.safe_load(MODELS_FILE.read_text())
    for section, values in (overrides or {}).items():
        if section not in ("aliases", "defaults", "models"):
            raise ModelError(f"models.{section}: unknown section (known: aliases, defaults, models)")
        if not isinstance(values, dict):
            raise ModelError(f"models.{section}: expected a mapping")
        if section == "models":
            for name, settings in values.items():
                data["models"][name] = {**data["models"].get(name, {}), **(settings or {})}
        else:
            data[section] = {**data.get(section, {}), **values}
    return data


RESERVED_REQUEST_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "max_completion_tokens",
                                     "temperature", "stream"})


def resolve(spec: str, models: dict) -> ModelSpec:
    """``claude`` / ``<kind>:<id>`` (a kind of models.yaml: anthropic, openai, openai-compatible) -> ModelSpec."""
    name = models.get("aliases", {}).get(spec, spec)
    kind, sep, model_id = name.partition(":")
    kinds = models.get("kinds", {})
    if not sep or kind not in kinds or not model_id:
        aliases = ", ".join(sorted(models.get("aliases", {})))
        forms = "".join(f"{k}:<id>{_spec_hint(k, kinds)}, " for k in kinds)
        raise ModelError(f"unknown model {spec!r}; use an alias ({aliases}), {forms}or offline")
    settings = {**models.get("defaults", {}), **models.get("models", {}).get(name, {})}
    unknown = set(settings) - _MODEL_KEYS
    if unknown:
        raise ModelError(f"models.models.{name}: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_MODEL_KEYS))})")
    price = settings.get("price")
    if price is not None:
        if not isinstance(price, dict) or set(price) - _PRICE_KEYS or not {"input", "output"} <= set(price):
            raise ModelError(f"models.models.{name}.price: give input and output (and optionally cache_write, "
                             "cache_read) in USD per million tokens")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in price.values()):
            raise ModelError(f"models.models.{name}.price: prices must be non-negative numbers")
        price = Price(**{k: float(v) for k, v in price.items()})
    max_tokens = settings.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise ModelError(f"models.models.{name}.max_tokens: must be a positive integer")
    temperature = settings.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)):
        raise ModelError(f"models.models.{name}.temperature: must be a number or null")
    extra = settings.get("extra") or {}
    if not isinstance(extra, dict):
        raise ModelError(f"models.models.{name}.extra: must be a mapping of request fields")
    clash = sorted(set(extra) & RESERVED_REQUEST_FIELDS)
    if clash:
        # Sent twice, the SDK raises TypeError, which would read as a garbled reply and be retried.
        raise ModelError(f"models.models.{name}.extra: {', '.join(clash)} is set by the harness itself; use the "
                         "model's own setting (max_tokens, temperature) or drop it from extra")
    return ModelSpec(kind, model_id, price, max_tokens, None if temperature is None else float(temperature), extra)


def adapter_class(kind: str, kinds: dict | None = None) -> type[VendorAdapter]:
    """The adapter models.yaml ``kinds:`` names for ``kind`` (``<module>:<class>``), imported only
    now: a vendor's SDK is loaded when one of its models is used."""
    kinds = load_models().get("kinds", {}) if kinds is None else kinds
    target = kinds.get(kind)
    module_name, sep, class_name = str(target).partition(":")
    if not isinstance(target, str) or not sep:
        raise ModelError(f"models.kinds.{kind}: expected <module>:<class> naming a VendorAdapter")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"models.kinds.{kind}: cannot load {target} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, VendorAdapter)):
        raise ModelError(f"models.kinds.{kind}: {target} is not a VendorAdapter")
    return cls


def _spec_hint(kind: str, kinds: dict) -> str:
    try:
        return adapter_class(kind, kinds).spec_hint
    except ModelError:
        return ""


class VendorAdapter(abc.ABC):
    """One vendor's API behind ``SDKProvider``, and nothing else: how its client is built, how a
    conversation becomes its request and its response becomes (text, stop reason, usage), which
    of its SDK's errors mean a broken connection or an unreadable response, and where its key lives.
    Retries, the deadline, cost, reply checks and error classification are ``SDKProvider``'s.

    A new vendor subclasses this in one module under ``orchestrator/vendors/`` and is named in
    models.yaml ``kinds:`` (``<kind>: <module>:<class>``); its models then resolve as
    ``<kind>:<id>``. An SDK error that carries an HTTP status exposes it as ``status_code`` (and
    ``response.headers`` for retry-after), as the official SDKs' errors do.
    """

    key_env: ClassVar[str]                                   # the environment variable holding the API key
    spec_hint: ClassVar[str] = ""                            # after "<kind>:<id>" in the unknown-model message
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()   # no answer (timeouts too): retried
    malformed_errors: ClassVar[tuple[type[BaseException], ...]] = ()    # an answer the SDK could not read: retried

    def check(self, spec: ModelSpec, key: str | None, base_url: str | None) -> None:
        """ModelError if ``spec`` cannot be used as configured; by default the key must be set."""
        if not key:
            raise ModelError(f"{self.key_env} is not set: export it to use {spec.name}, or run with --model offline")

    @abc.abstractmethod
    def client(self, key: str | None, base_url: str | None, timeout: float) -> Any:
        """The SDK client with its own retries off (``max_retries=0``): the retry policy is SDKProvider's."""

    @abc.abstractmethod
    def request(self, client: Any, spec: ModelSpec, messages: Sequence[Message],
                options: dict[str, Any]) -> tuple[str, str, Usage]:
        """One call: (reply text, stop reason, usage with ``input_tokens`` uncached). ``options``
        are the model's extra request fields and temperature, sent as given. The stop reason is the
        API's own; one of ``TRUNCATED_STOPS`` / ``REFUSAL_STOPS`` means cut off / refused."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6                  # calls in all, the first included
    max_total_wait: float = 600.0      # seconds of sleeping across one call's retries (not the calls)
    max_wait: float = 120.0            # cap on one sleep, retry-after included
    initial: float = 1.0


# A reply this long is no kernel edit (the kernel itself is capped at 64 KiB): refused without a
# repair turn, which would send it back in full.
MAX_REPLY_CHARS = 256 * 1024
# Stop reasons, across the APIs, of a reply cut off by a limit and of a refusal.
TRUNCATED_STOPS = frozenset({"max_tokens", "length", "model_context_window_exceeded"})
REFUSAL_STOPS = frozenset({"refusal", "content_filter"})


class DeadlineExceeded(Exception):
    """A call that did not complete within its wall-clock deadline (a stalled or dripping server)."""


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            from email.utils import parsedate_to_datetime
            from datetime import datetime, timezone
            try:
                return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                return None
    return None


def _status(exc: BaseException | None) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException, adapter: VendorAdapter) -> bool:
    """Worth retrying: rate limits, overload, other 5xx, timeouts, broken connections and
    unparseable responses. Never auth, invalid or context errors."""
    if isinstance(exc, (*adapter.connection_errors, *adapter.malformed_errors,      # timeouts included
                        json.JSONDecodeError, DeadlineExceeded, _Garbled)):           # a garbled body
        return True
    status = _status(exc)
    return status is not None and (status in (408, 409, 429) or status >= 500)


class _Garbled(Exception):
    """A 200 response whose body is not the API's reply shape (not JSON, or missing fields)."""


_CONTEXT_HINTS = ("context", "too long", "too many tokens", "maximum", "prompt is too long")


def classify(exc: BaseException, adapter: VendorAdapter, host: str = "") -> ProviderError:
    """The error the loop acts on, with the API's own message (scrubbed: a server may echo a key)."""
    status = _status(exc)
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, adapter.connection_errors) and host:
        cause = exc.__cause__ or exc.__context__
        message += f" (to {host}{f': {cause}' if cause else ''})"
    if status in (401, 403):
        return ProviderError(ErrorKind.AUTH, f"{message} — check {adapter.key_env}")
    if status in (400, 413) and any(h in str(exc).lower() for h in _CONTEXT_HINTS):
        return ProviderError(ErrorKind.CONTEXT, message)
    if is_transient(exc, adapter):
        return ProviderError(ErrorKind.TRANSIENT, f"{message} (retries exhausted)")
    return ProviderError(ErrorKind.INVALID, message)


class SDKProvider:
    """One model behind its vendor's official SDK (a ``VendorAdapter``), with exactly one retry
    policy (tenacity's; the SDK's own retries are off), a wall-clock deadline on every call, cost
    accounting and the checks every reply passes (truncated, refused, empty, oversized)."""

    exhausted = False               # a live model always has another reply

    def __init__(self, spec: ModelSpec, api_key: str | None, base_url: str | None, timeout: float,
                 retry: RetryPolicy, log: Callable[[str], None] = print, adapter: VendorAdapter | None = None) -> None:
        self.spec, self.retry, self.log, self.timeout = spec, retry, log, timeout
        self.name, self.model = spec.kind, spec.name
        self.adapter = adapter if adapter is not None else adapter_class(spec.kind)()
        self._key, self._base_url = api_key, base_url
        self.client = self._client()

    def _client(self) -> Any:
        return self.adapter.client(self._key, self._base_url, self.timeout)

    @property
    def host(self) -> str:
        return str(getattr(self.client, "base_url", self._base_url or "?"))

    def worst_case_cost(self, messages: Sequence[Message]) -> float | None:
        """An upper bound on one call's cost (None: the price is unknown)."""
        if self.spec.price is None:
            return None
        chars = sum(len(m.content) + 16 for m in messages)
        return self.spec.price.worst_case(int(chars / CHARS_PER_TOKEN_WORST) + 1, self.spec.max_tokens)

    def resume_after(self, replies_consumed: int) -> None:
        """Nothing to skip: a live model answers each prompt afresh."""

    def complete(self, messages: Sequence[Message], purpose: str) -> Reply:
        import tenacity

        retries: list[dict] = []

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = _retry_after(exc) if exc else None
            backoff = tenacity.wait_exponential_jitter(multiplier=self.retry.initial, max=self.retry.max_wait,
                                                       jitter=self.retry.initial)(state)
            left = max(0.0, self.retry.max_total_wait - state.idle_for)
            return min(self.retry.max_wait, left, hinted if hinted is not None else backoff)

        def stop(state: tenacity.RetryCallState) -> bool:
            # The budget is the documented one: this many calls, this much sleeping between them.
            return state.attempt_number >= self.retry.attempts or state.idle_for >= self.retry.max_total_wait

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            retries.append({"kind": type(exc).__name__, "status": _status(exc), "waited_seconds": round(sleep, 3)})
            self.log(scrub(f"[{self.model}] retry {state.attempt_number}/{self.retry.attempts - 1} in {sleep:.1f} s "
                           f"after {type(exc).__name__}{f' ({_status(exc)})' if _status(exc) else ''}"))

        started = time.monotonic()
        try:
            for attempt in tenacity.Retrying(stop=stop, wait=wait,
                                             retry=tenacity.retry_if_exception(lambda e: is_transient(e, self.adapter)),
                                             before_sleep=before_sleep, reraise=True):
                with attempt:
                    text, stop_reason, usage = self._call_within_deadline(messages)
        except Exception as exc:  # every SDK failure becomes a classified ProviderError
            error = classify(exc, self.adapter, self.host)
            error.retries = tuple(retries)
            raise error from exc
        usage = Usage(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
                      round(self.spec.price.cost(usage), 6) if self.spec.price else 0.0,
                      round(time.monotonic() - started, 3))
        done = tuple(retries)
        if stop_reason in TRUNCATED_STOPS:
            raise ProviderError(ErrorKind.TRUNCATED, f"reply cut off by the token limit (stop reason {stop_reason}); "
                                "not applied", usage, done)
        if stop_reason in REFUSAL_STOPS:
            raise ProviderError(ErrorKind.REFUSAL, f"the model refused (stop reason {stop_reason})", usage, done)
        if not text.strip():
            raise ProviderError(ErrorKind.EMPTY, f"the reply has no text (stop reason {stop_reason})", usage, done)
        if len(text) > MAX_REPLY_CHARS:
            raise ProviderError(ErrorKind.OVERSIZED, f"the reply is {len(text):,} characters, over the "
                                f"{MAX_REPLY_CHARS:,} a kernel edit can need; not applied and not sent back", usage, done)
        return Reply(scrub(text), self.name, self.model, usage, stop_reason, retries=done)

    def _call_within_deadline(self, messages: Sequence[Message]) -> tuple[str, str, Usage]:
        """``_call`` bounded in wall-clock time: the SDK's timeout bounds each wait for bytes, not
        the call, so a server dripping a byte a second would hold it for as long as it liked. Past
        the deadline the client is closed (ending the abandoned request) and a new one is made."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(self._call, messages)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self.client.close()
            self.client = self._client()
            raise DeadlineExceeded(f"no complete reply from {self.host} within {self.timeout:g} s") from None
        finally:
            pool.shutdown(wait=False)

    def _call(self, messages: Sequence[Message]) -> tuple[str, str, Usage]:
        options: dict[str, Any] = dict(self.spec.extra)
        if self.spec.temperature is not None:
            options["temperature"] = self.spec.temperature
        try:
            return self.adapter.request(self.client, self.spec, messages, options)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            # A 200 whose body is not a reply (HTML, plain text, a different shape): the SDK hands
            # back a string or a half-built object. Garbled, so worth a retry.
            raise _Garbled(f"the response from {self.host} is not a {self.spec.kind} reply ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from exc


def make_sdk_provider(spec: ModelSpec, base_url: str | None, timeout: float, retry: RetryPolicy,
                      log: Callable[[str], None] = print, kinds: dict | None = None) -> SDKProvider:
    """The provider for ``spec`` with its key from the environment; ModelError names what is missing."""
    import os

    adapter = adapter_class(spec.kind, kinds)()
    key = os.environ.get(adapter.key_env)
    adapter.check(spec, key, base_url)
    return SDKProvider(spec, key, base_url, timeout, retry, log, adapter)


# ---------------------------------------------------------------------------------- from a run config

def from_config(config: RunConfig, target_folder: Path, log: Callable[[str], None] = print) -> Provider:
    """The provider ``config.model`` names: ``offline`` (the playbook in ``target_folder``),
    ``script:FILE``, or a model of models.yaml with its key from the environment. Anything that
    cannot be used raises ModelError naming it and the fix, before anything is written."""
    model = config.model
    if model == "offline":
        playbook = target_folder / "playbook"
        try:
            return OfflineProvider(playbook)
        except FileNotFoundError:
            raise ModelError(f"--model offline needs a playbook, and {playbook} has none") from None
    if model.startswith("script:"):
        path = Path(model.split(":", 1)[1])
        try:
            return load_script(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"--model {model}: cannot use this script: {exc}") from None
    models = load_models(config.models)
    spec = resolve(model, models)
    if spec.price is None and config.max_cost_usd is not None:
        raise ModelError(f"{spec.name} has no known price and --max-cost-usd is set; add its price under "
                         f"models: {{models: {{'{spec.name}': {{price: {{input: ..., output: ...}}}}}}}} in the run config")
    retry = RetryPolicy(attempts=config.provider_retries + 1, max_total_wait=config.provider_retry_wait_seconds)
    return make_sdk_provider(spec, config.base_url, config.provider_timeout_seconds, retry, log, models.get("kinds"))
