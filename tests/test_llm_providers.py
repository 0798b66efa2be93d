"""Real anthropic/openai SDK clients against a scripted local server: retries, errors, cost."""

from __future__ import annotations

import time

import pytest

from fake_llm import (FakeLLMServer, Step, anthropic_error, anthropic_message, openai_completion,
                      openai_error)
from orchestrator import provider as p

KEY = "sk-test-provider-key-123"
FAST_RETRY = p.RetryPolicy(attempts=3, max_total_wait=5.0, max_wait=0.5, initial=0.01)
MESSAGES = [p.Message("system", "HARNESS.md and program.md: the stable prefix."),
            p.Message("user", "Attempt 1: propose one change.")]
PRICE = p.Price(input=4.0, output=20.0, cache_write=5.0, cache_read=0.4)


@pytest.fixture
def server():
    s = FakeLLMServer()
    yield s
    s.close()


def make(server: FakeLLMServer, kind: str = "anthropic", timeout: float = 10.0, price: p.Price | None = PRICE,
         retry: p.RetryPolicy = FAST_RETRY, log: list | None = None, key: str = KEY) -> p.SDKProvider:
    spec = p.ModelSpec(kind, "test-model", price, max_tokens=1000)
    base = server.url if kind == "anthropic" else server.url + "/v1"
    return p.SDKProvider(spec, key, base, timeout, retry, (log.append if log is not None else lambda _: None))


@pytest.mark.slow
def test_anthropic_success_records_usage_cost_and_caches_the_prefix(server: FakeLLMServer) -> None:
    server.queue(anthropic_message("HYPOTHESIS: x", input_tokens=1000, output_tokens=500, cache_read=8000,
                                   cache_write=2000, thinking=True))
    reply = make(server).complete(MESSAGES, "propose")
    assert reply.text == "HYPOTHESIS: x"                       # the thinking block is ignored
    u = reply.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (1000, 500, 8000, 2000)
    # 1000*4 + 500*20 + 8000*0.4 + 2000*5 = 4000 + 10000 + 3200 + 10000 = 27200 per million
    assert u.cost_usd == pytest.approx(0.0272)
    request = server.requests[0]
    assert request["path"] == "/v1/messages"
    headers = request["headers"]
    assert headers.get("x-api-key") == KEY or headers.get("authorization") == f"Bearer {KEY}"
    assert request["body"]["system"] == [{"type": "text", "text": MESSAGES[0].content,
                                          "cache_control": {"type": "ephemeral"}}]
    assert request["body"]["messages"] == [{"role": "user", "content": MESSAGES[1].content}]
    assert request["body"]["max_tokens"] == 1000


def real_prompt_messages() -> list[p.Message]:
    """An attempt's real conversation: the project's files and a history of three attempts."""
    from conftest import ROOT, history
    from orchestrator import prompt
    files = prompt.PromptFiles(harness=ROOT / "HARNESS.md", program=ROOT / "targets" / "pq_l2" / "program.md",
                               lessons=ROOT / "nonexistent-lessons.md", prompts_dir=ROOT / "prompts")
    records = [{"verdict": "discard", "reason": "not_faster", "hypothesis": f"idea {n}"} for n in range(3)]
    return prompt.build(files, prompt.Context("pq-l2", "R", 4, "KERNEL = 1\n", history(*records), 40, "machine",
                                              "limits")).messages


def test_anthropic_gets_blocks_with_breakpoints_after_the_system_and_the_last_history_row(
        server: FakeLLMServer) -> None:
    server.queue(anthropic_message("HYPOTHESIS: x"))
    messages = real_prompt_messages()
    make(server).complete(messages, "propose")
    body = server.requests[0]["body"]
    assert body["system"] == [{"type": "text", "text": messages[0].content, "cache_control": {"type": "ephemeral"}}]
    [user] = body["messages"]
    blocks = user["content"]
    assert "".join(b["text"] for b in blocks) == messages[1].content       # nothing lost or reordered
    marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
    assert len(marked) == 1 and blocks[marked[0]]["text"].startswith("| 3 | discard")   # the last row
    assert len(blocks) == 1 + 3 + 1                     # up to the table's header, a block per row, the rest
    assert blocks[-1]["text"].lstrip().startswith("# Attempt 4")


def test_openai_gets_the_same_text_as_plain_strings(server: FakeLLMServer) -> None:
    server.queue(openai_completion("HYPOTHESIS: x"))
    messages = real_prompt_messages()
    make(server, kind="openai").complete(messages, "propose")
    assert server.requests[0]["body"]["messages"] == [{"role": m.role, "content": m.content} for m in messages]


def test_openai_success_bills_cached_prompt_tokens_at_the_cache_rate(server: FakeLLMServer) -> None:
    server.queue(openai_completion("HYPOTHESIS: y", prompt_tokens=10000, completion_tokens=200, cached_tokens=6000))
    reply = make(server, "openai", price=p.Price(input=5.0, output=30.0, cache_read=0.5)).complete(MESSAGES, "propose")
    assert (reply.usage.input_tokens, reply.usage.cache_read_tokens) == (4000, 6000)
    # 4000*5 + 6000*0.5 + 200*30 = 20000 + 3000 + 6000 = 29000 per million
    assert reply.usage.cost_usd == pytest.approx(0.029)
    body = server.requests[0]["body"]
    assert body["max_completion_tokens"] == 1000 and body["messages"][0]["role"] == "system"
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_openai_compatible_servers_get_max_tokens(server: FakeLLMServer) -> None:
    server.queue(openai_completion("HYPOTHESIS: z"))
    reply = make(server, "openai-compatible", price=None).complete(MESSAGES, "propose")
    assert reply.usage.cost_usd == 0.0 and server.requests[0]["body"]["max_tokens"] == 1000


def test_429_with_retry_after_is_honoured_then_succeeds(server: FakeLLMServer) -> None:
    log: list[str] = []
    server.queue(anthropic_error(429, "rate_limit_error", "slow down", {"retry-after": "0.2"}),
                 anthropic_message("HYPOTHESIS: ok"))
    reply = make(server, log=log).complete(MESSAGES, "propose")
    assert reply.text == "HYPOTHESIS: ok" and len(server.requests) == 2      # exactly one retry: SDK retries off
    assert len(log) == 1 and "in 0.2 s after RateLimitError (429)" in log[0]


def test_retry_after_is_capped_by_the_policy(server: FakeLLMServer) -> None:
    log: list[str] = []
    server.queue(anthropic_error(529, "overloaded_error", "busy", {"retry-after": "3600"}),
                 anthropic_message("HYPOTHESIS: ok"))
    make(server, log=log).complete(MESSAGES, "propose")
    assert "in 0.5 s" in log[0]                                # max_wait, not an hour


@pytest.mark.parametrize("kind, step", [
    ("anthropic", anthropic_error(529, "overloaded_error", "Overloaded")),
    ("openai", openai_error(500, "internal error")),
    ("openai", openai_error(503, "unavailable")),
])
def test_overload_storm_exhausts_bounded_retries(server: FakeLLMServer, kind: str, step: Step) -> None:
    server.queue(*[step] * 10)
    with pytest.raises(p.ProviderError) as err:
        make(server, kind).complete(MESSAGES, "propose")
    assert err.value.kind == "transient" and "retries exhausted" in str(err.value)
    assert len(server.requests) == FAST_RETRY.attempts


def test_401_is_auth_names_the_variable_and_is_not_retried(server: FakeLLMServer) -> None:
    server.queue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(p.ProviderError) as err:
        make(server).complete(MESSAGES, "propose")
    assert err.value.kind == "auth" and "ANTHROPIC_API_KEY" in str(err.value)
    assert KEY not in str(err.value) and len(server.requests) == 1


@pytest.mark.parametrize("kind, step", [
    ("anthropic", anthropic_error(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")),
    ("openai", openai_error(400, "This model's maximum context length is 128000 tokens", "context_length_exceeded")),
])
def test_context_too_long_is_classified(server: FakeLLMServer, kind: str, step: Step) -> None:
    server.queue(step)
    with pytest.raises(p.ProviderError) as err:
        make(server, kind).complete(MESSAGES, "propose")
    assert err.value.kind == "context" and len(server.requests) == 1


def test_other_400_is_invalid_and_not_retried(server: FakeLLMServer) -> None:
    server.queue(anthropic_error(400, "invalid_request_error", "temperature: must be <= 1"))
    with pytest.raises(p.ProviderError) as err:
        make(server).complete(MESSAGES, "propose")
    assert err.value.kind == "invalid" and len(server.requests) == 1


@pytest.mark.parametrize("kind, step, expected", [
    ("anthropic", anthropic_message("HYPOTHESIS: half a fi", stop_reason="max_tokens"), "truncated"),
    ("openai", openai_completion("HYPOTHESIS: half", finish_reason="length"), "truncated"),
    ("anthropic", anthropic_message("", stop_reason="end_turn", thinking=True), "empty"),
    ("openai", openai_completion(None), "empty"),
    ("anthropic", anthropic_message("", stop_reason="refusal"), "refusal"),
    ("openai", openai_completion(None, refusal="I can't help with that."), "refusal"),
])
def test_unusable_replies_are_classified_and_still_billed(server: FakeLLMServer, kind: str, step: Step,
                                                          expected: str) -> None:
    server.queue(step)
    with pytest.raises(p.ProviderError) as err:
        make(server, kind).complete(MESSAGES, "propose")
    assert err.value.kind == expected
    assert err.value.usage.output_tokens == 300 and err.value.usage.cost_usd > 0    # tokens were used


def test_malformed_json_is_retried_then_reported(server: FakeLLMServer) -> None:
    server.queue(*[Step(200, "{not json")] * 5)
    with pytest.raises(p.ProviderError) as err:
        make(server).complete(MESSAGES, "propose")
    assert err.value.kind == "transient" and "JSONDecodeError" in str(err.value)
    assert len(server.requests) == FAST_RETRY.attempts


@pytest.mark.slow
def test_a_hanging_server_hits_the_per_call_timeout(server: FakeLLMServer) -> None:
    server.queue(*[Step(body={}, delay=3.0)] * 3)
    retry = p.RetryPolicy(attempts=2, max_total_wait=1.0, max_wait=0.1, initial=0.01)
    with pytest.raises(p.ProviderError) as err:
        make(server, timeout=0.5, retry=retry).complete(MESSAGES, "propose")
    assert err.value.kind == "transient" and ("Timeout" in str(err.value) or "within 0.5 s" in str(err.value))
    assert len(server.requests) == 2


@pytest.mark.slow
def test_a_dripping_server_is_cut_off_at_the_wall_clock_deadline(server: FakeLLMServer) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the call's deadline must."""
    server.queue(*[Step(body={"padding": "x" * 200}, drip=0.2)] * 2)
    retry = p.RetryPolicy(attempts=2, max_total_wait=1.0, max_wait=0.1, initial=0.01)
    started = time.monotonic()
    with pytest.raises(p.ProviderError) as err:
        make(server, timeout=1.5, retry=retry).complete(MESSAGES, "propose")
    assert time.monotonic() - started < 6.0                   # 2 calls x 1.5 s, not 2 x 40 s of drip
    assert err.value.kind == "transient" and "within 1.5 s" in str(err.value)
    assert [r["kind"] for r in err.value.retries] == ["DeadlineExceeded"]


@pytest.mark.slow
def test_the_retry_budget_counts_calls_and_sleep_not_call_time(server: FakeLLMServer) -> None:
    """Slow failing calls must not eat the retries: six calls, as documented, however long each takes."""
    server.queue(*[Step(body={}, delay=0.4)] * 6)
    retry = p.RetryPolicy(attempts=6, max_total_wait=1.0, max_wait=0.01, initial=0.01)
    with pytest.raises(p.ProviderError) as err:
        make(server, timeout=0.2, retry=retry).complete(MESSAGES, "propose")
    assert len(server.requests) == 6 and len(err.value.retries) == 5
    assert all(r["waited_seconds"] <= 0.01 for r in err.value.retries)


def test_a_garbled_200_is_retried_then_reported(server: FakeLLMServer) -> None:
    server.queue(Step(body="<html>proxy error</html>"), anthropic_message("HYPOTHESIS: fine"))
    reply = make(server).complete(MESSAGES, "propose")
    assert reply.text.startswith("HYPOTHESIS") and [r["kind"] for r in reply.retries] == ["_Garbled"]


def test_an_oversized_reply_is_refused_without_a_repair_turn(server: FakeLLMServer) -> None:
    server.queue(anthropic_message("x" * (p.MAX_REPLY_CHARS + 1)))
    with pytest.raises(p.ProviderError) as err:
        make(server).complete(MESSAGES, "propose")
    assert err.value.kind == "oversized" and len(server.requests) == 1


def test_an_echoed_key_never_leaves_the_provider(server: FakeLLMServer, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-echo-0123456789abcdef")
    server.queue(anthropic_error(400, "invalid_request_error", "bad request for key {KEY}"),
                 anthropic_message("HYPOTHESIS: your key is {KEY}"))
    with pytest.raises(p.ProviderError) as err:
        make(server, key="sk-ant-echo-0123456789abcdef").complete(MESSAGES, "propose")
    assert "0123456789abcdef" not in str(err.value) and "[redacted]" in str(err.value)
    reply = make(server, key="sk-ant-echo-0123456789abcdef").complete(MESSAGES, "propose")
    assert "0123456789abcdef" not in reply.text


def test_a_refused_connection_names_the_host() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                             # closed again: nothing listens there
    spec = p.resolve("claude", p.load_models())
    provider = p.SDKProvider(spec, "k", f"http://127.0.0.1:{port}", 2.0, p.RetryPolicy(attempts=1))
    with pytest.raises(p.ProviderError) as err:
        provider.complete(MESSAGES, "propose")
    assert f"127.0.0.1:{port}" in str(err.value)


def test_worst_case_cost_bounds_the_actual_cost(server: FakeLLMServer) -> None:
    provider = make(server)
    worst = provider.worst_case_cost(MESSAGES)
    # Every input token at the dearest input rate (cache write, $5) plus max_tokens of output.
    chars = sum(len(m.content) + 16 for m in MESSAGES)
    assert worst == pytest.approx((int(chars / 3.0) + 1) * 5.0 / 1e6 + 1000 * 20.0 / 1e6)
    assert make(server, price=None).worst_case_cost(MESSAGES) is None


def test_models_yaml_resolves_aliases_and_validates_overrides() -> None:
    models = p.load_models({"models": {"openai-compatible:qwen3": {"price": {"input": 0, "output": 0}}}})
    assert p.resolve("claude", models).kind == "anthropic"
    assert p.resolve("gpt", models).kind == "openai"
    assert p.resolve("openai-compatible:qwen3", models).price == p.Price(0.0, 0.0)
    assert p.resolve("anthropic:some-new-model", models).price is None
    for bad, message in [({"models": {"openai:x": {"colour": 1}}}, "unknown setting"),
                         ({"models": {"openai:x": {"price": {"input": 1}}}}, "give input and output"),
                         ({"models": {"openai:x": {"max_tokens": 0}}}, "max_tokens"),
                         ({"models": {"openai:x": {"extra": {"max_tokens": 5, "top_p": 1}}}}, "max_tokens is set by the harness"),
                         ({"flavours": {}}, "unknown section")]:
        with pytest.raises(p.ModelError, match=message):
            p.resolve("openai:x", p.load_models(bad))


def test_missing_key_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    spec = p.resolve("claude", p.load_models())
    with pytest.raises(p.ModelError, match="ANTHROPIC_API_KEY is not set.*--model offline"):
        p.make_sdk_provider(spec, None, 10, FAST_RETRY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(p.ModelError, match="--base-url"):
        p.make_sdk_provider(p.resolve("openai-compatible:x", p.load_models()), None, 10, FAST_RETRY)


# -- one adapter per vendor, named in models.yaml ------------------------------------------------

def test_every_kind_in_models_yaml_has_an_adapter_that_serves_the_protocol(server: FakeLLMServer) -> None:
    kinds = p.load_models()["kinds"]
    assert {"anthropic", "openai", "openai-compatible"} <= set(kinds)
    for kind in kinds:
        cls = p.adapter_class(kind)
        assert issubclass(cls, p.VendorAdapter)
        adapter = cls()                                        # abstract methods left out fail here
        assert adapter.key_env and adapter.connection_errors, kind
        provider = p.SDKProvider(p.resolve(f"{kind}:m", p.load_models()), KEY, server.url, 5.0, FAST_RETRY,
                                 adapter=adapter)
        assert isinstance(provider, p.Provider) and provider.name == kind and not provider.exhausted
        assert provider.spec is not None and provider.spec.kind == kind


def test_shared_provider_code_names_no_vendor() -> None:
    """No ``kind == "anthropic"`` outside the adapters: the shared code holds no vendor's name."""
    import ast

    kinds = set(p.load_models()["kinds"])
    tree = ast.parse(open(p.__file__).read())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    literals = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    assert not [s for s in literals if any(s == k or s.startswith(f"{k}:") for k in kinds)]
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"anthropic", "openai"}


class PlainStatusError(Exception):
    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode(errors='replace')[:200]}")
        self.status_code, self.response = status, type("Response", (), {"headers": headers})()


class PlainClient:
    """A made-up vendor's client on the standard library: POST <base>/generate with a bearer key."""

    def __init__(self, key: str | None, base_url: str | None, timeout: float) -> None:
        self.key, self.base_url, self.timeout = key, base_url, timeout

    def generate(self, body: dict) -> dict:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.base_url}/generate", data=json.dumps(body).encode(), method="POST",
                                         headers={"authorization": f"Bearer {self.key}",
                                                  "content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise PlainStatusError(exc.code, dict(exc.headers), exc.read()) from None

    def close(self) -> None:
        pass


class PlainVendor(p.VendorAdapter):
    """A new vendor as a module would add it: client, request/response mapping, key; nothing else."""

    key_env = "PLAIN_API_KEY"
    connection_errors = (OSError,)                              # urllib's URLError and timeouts

    def client(self, key: str | None, base_url: str | None, timeout: float) -> PlainClient:
        return PlainClient(key, base_url, timeout)

    def request(self, client: PlainClient, spec: p.ModelSpec, messages, options: dict) -> tuple[str, str, p.Usage]:
        body = client.generate({"model": spec.model_id, "limit": spec.max_tokens, **options,
                                "prompt": [[m.role, m.content] for m in messages]})
        return body["text"], body["stop"], p.Usage(body["tokens_in"], body["tokens_out"])


def plain(text: str, stop: str = "end_turn") -> Step:
    return Step(body={"text": text, "stop": stop, "tokens_in": 1000, "tokens_out": 100})


@pytest.fixture
def plain_models(tmp_path, monkeypatch):
    """The project's models.yaml plus the entries a new vendor adds: its kind, an alias, a price."""
    import yaml

    models = yaml.safe_load(p.MODELS_FILE.read_text())
    models["kinds"]["plain"] = f"{__name__}:PlainVendor"
    models["aliases"]["plainy"] = "plain:m1"
    models["models"]["plain:m1"] = {"price": {"input": 2.0, "output": 10.0}, "temperature": 0.5}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(models, sort_keys=False))
    monkeypatch.setattr(p, "MODELS_FILE", path)
    monkeypatch.setenv("PLAIN_API_KEY", KEY)


def test_a_new_vendor_is_one_adapter_plus_models_yaml(server: FakeLLMServer, plain_models, tmp_path,
                                                      monkeypatch) -> None:
    from orchestrator.config import RunConfig

    log: list[str] = []
    config = RunConfig(model="plainy", base_url=server.url, provider_retries=2, provider_retry_wait_seconds=5.0,
                       max_cost_usd=1.0)
    provider = p.from_config(config, tmp_path, log.append)
    assert isinstance(provider, p.Provider) and (provider.name, provider.model) == ("plain", "plain:m1")
    provider.retry = FAST_RETRY
    # The shared plumbing serves it unchanged: retries, cost, reply checks, classification.
    server.queue(Step(503, {"error": "busy"}), plain("HYPOTHESIS: plain"))
    reply = provider.complete(MESSAGES, "propose")
    assert reply.text == "HYPOTHESIS: plain" and reply.usage.cost_usd == pytest.approx((1000 * 2 + 100 * 10) / 1e6)
    assert [(r["kind"], r["status"]) for r in reply.retries] == [("PlainStatusError", 503)] and len(log) == 1
    request = server.requests[-1]
    assert request["path"] == "/generate" and request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["body"]["temperature"] == 0.5 and request["body"]["limit"] == 16000
    assert provider.worst_case_cost(MESSAGES) > 0
    server.queue(plain("HYPOTHESIS: half", stop="max_tokens"))
    with pytest.raises(p.ProviderError) as err:
        provider.complete(MESSAGES, "propose")
    assert err.value.kind == p.ErrorKind.TRUNCATED and err.value.usage.cost_usd > 0
    server.queue(Step(401, {"error": "bad key"}))
    with pytest.raises(p.ProviderError) as err:
        provider.complete(MESSAGES, "propose")
    assert err.value.kind == "auth" and "PLAIN_API_KEY" in str(err.value)
    # Its key and its name in the unknown-model message come from the adapter and models.yaml.
    monkeypatch.delenv("PLAIN_API_KEY")
    with pytest.raises(p.ModelError, match="PLAIN_API_KEY is not set"):
        p.from_config(config, tmp_path)
    with pytest.raises(p.ModelError, match=r"openai-compatible:<id> with --base-url, plain:<id>, or offline"):
        p.resolve("plain", p.load_models())


@pytest.mark.parametrize("target, message", [
    ("no_colon", "expected <module>:<class>"),
    ("orchestrator.no_such_module:X", "cannot load"),
    ("orchestrator.provider:NoSuchClass", "cannot load"),
    ("orchestrator.provider:Usage", "is not a VendorAdapter"),
])
def test_a_bad_kinds_entry_is_a_model_error(target: str, message: str) -> None:
    with pytest.raises(p.ModelError, match=message):
        p.adapter_class("x", {"x": target})


def test_a_run_config_cannot_name_adapters() -> None:
    with pytest.raises(p.ModelError, match="unknown section"):
        p.load_models({"kinds": {"evil": "os:system"}})


def test_unknown_model_message_is_unchanged() -> None:
    with pytest.raises(p.ModelError) as err:
        p.resolve("gpt-9", p.load_models())
    assert str(err.value) == ("unknown model 'gpt-9'; use an alias (claude, gpt), anthropic:<id>, openai:<id>, "
                              "openai-compatible:<id> with --base-url, or offline")
