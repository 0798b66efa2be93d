"""The daemon with real SDK providers (`--model claude`, `gpt`, ...) against a local fake API."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BASELINE, CANARY, KEEP, finished, run_daemon, the_run, write_config
from fake_llm import FakeLLMServer, anthropic_error, anthropic_message, openai_completion

PLAYBOOK = Path(__file__).resolve().parent.parent / "targets" / "pq_l2" / "playbook"
NUMBA_LOOP = KEEP
FUSED = (PLAYBOOK / "01-fused-top-k.md").read_text()        # slower than NUMBA_LOOP once that is kept
WRONG = ("HYPOTHESIS: Start the accumulators at one.\n\n```python\n"
         + BASELINE.read_text().replace("dists[:] = 0.0", "dists[:] = 1.0") + "```\n")


@pytest.fixture
def server():
    s = FakeLLMServer()
    yield s
    s.close()


def claude_env(server: FakeLLMServer) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": CANARY}


def no_canary_anywhere(run_dir: Path, *outputs: str) -> None:
    assert all(CANARY not in o for o in outputs)
    assert [p for p in run_dir.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()] == []


@pytest.mark.slow
def test_claude_loop_records_tokens_cost_and_verdicts(repo: Path, server: FakeLLMServer) -> None:
    server.queue(anthropic_message(NUMBA_LOOP, input_tokens=900, output_tokens=700, cache_write=5000),
                 anthropic_message(FUSED, input_tokens=950, output_tokens=650, cache_read=5000),
                 anthropic_message(WRONG, input_tokens=1000, output_tokens=600, cache_read=5000))
    # Tokens and cost are tested, not the worst-combo guard (one combo of the keep read 0.86x once
    # on a busy machine; the guard has its own tests in test_gate).
    config = write_config(repo, cumulative=False, gate={"worst_combo_min": 0.5})
    proc = run_daemon(repo, None, "--model", "claude", "--max-attempts", "3", config=config, env=claude_env(server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = the_run(repo)
    got = finished(run_dir)
    assert [got[n]["reason"] for n in (1, 2, 3)] == ["keep", "not_faster", "incorrect"]
    first = got[1]
    assert first["provider"] == "anthropic" and first["model"] == "anthropic:claude-opus-5-5"
    assert first["tokens"]["input_tokens"] == 900 and first["tokens"]["cache_write_tokens"] == 5000
    # 900*4 + 700*20 + 5000*5 = 3600 + 14000 + 25000 = 42600 per million
    assert first["cost_usd"] == pytest.approx(0.0426)
    assert got[2]["tokens"]["cache_read_tokens"] == 5000 and got[2]["cost_usd"] < first["cost_usd"]
    assert first["price"] == {"input": 4.0, "output": 20.0, "cache_write": 5.0, "cache_read": 0.4}
    assert "cost:     $" in proc.stdout and f"{sum(r['cost_usd'] for r in got.values()):.4f}" in proc.stdout
    # Every prompt carried the stable prefix marked for caching, and the history grew.
    assert len(server.requests) == 3
    for req in server.requests:
        assert req["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert "HARNESS.md" in req["body"]["system"][0]["text"]
    # The third prompt's attempt table has the keep, as a block of its own carrying the second breakpoint.
    blocks = server.requests[2]["body"]["messages"][0]["content"]
    rows = [b for b in blocks if b["text"].startswith("| ")]
    assert rows[0]["text"].startswith("| 1 | keep |") and "cache_control" in rows[-1]
    no_canary_anywhere(run_dir, proc.stdout, proc.stderr)


@pytest.mark.slow
def test_401_stops_the_daemon_naming_the_variable(repo: Path, server: FakeLLMServer) -> None:
    server.queue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    proc = run_daemon(repo, None, "--model", "claude", config=write_config(repo), env=claude_env(server))
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in proc.stdout + proc.stderr
    run_dir = the_run(repo)
    assert finished(run_dir)[1]["reason"] == "provider_error"
    assert len(server.requests) == 1
    no_canary_anywhere(run_dir, proc.stdout, proc.stderr)


@pytest.mark.slow
def test_overload_storm_and_context_errors_are_recorded_and_the_loop_goes_on(repo: Path, server: FakeLLMServer) -> None:
    overloaded = anthropic_error(529, "overloaded_error", "Overloaded")
    server.queue(overloaded, overloaded,                                                   # retries exhausted
                 anthropic_error(400, "invalid_request_error", "prompt is too long: 300000 tokens > 200000 maximum"),
                 anthropic_message(WRONG))                 # judged, and cheaply: no timing phase
    config = write_config(repo, provider_retries=1, provider_retry_wait_seconds=5, max_attempts=3)
    proc = run_daemon(repo, None, "--model", "claude", config=config, env=claude_env(server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = finished(the_run(repo))
    assert [got[n]["reason"] for n in (1, 2, 3)] == ["provider_error", "provider_error", "incorrect"]
    assert "retries exhausted" in got[1]["reason_detail"] and "too long" in got[2]["reason_detail"]
    assert "retry 1/1" in proc.stdout                                            # the retry was logged
    assert "next attempts show 20 earlier attempts" in proc.stdout               # smaller history after context error


@pytest.mark.slow
def test_truncated_reply_is_not_applied(repo: Path, server: FakeLLMServer) -> None:
    server.queue(anthropic_message(NUMBA_LOOP[: len(NUMBA_LOOP) // 2], stop_reason="max_tokens"))
    proc = run_daemon(repo, None, "--model", "claude", "--max-attempts", "1", config=write_config(repo),
                      env=claude_env(server))
    assert proc.returncode == 0, proc.stderr
    record = finished(the_run(repo))[1]
    assert record["reason"] == "truncated" and record["cost_usd"] > 0 and record["diff"] == ""


@pytest.mark.slow
def test_cost_budget_refuses_a_call_it_cannot_afford(repo: Path, server: FakeLLMServer) -> None:
    # Worst case of one call: 16,000 output tokens at $20/M alone is $0.32.
    proc = run_daemon(repo, None, "--model", "claude", "--max-cost-usd", "0.10", config=write_config(repo),
                      env=claude_env(server))
    assert proc.returncode == 0, proc.stderr
    record = finished(the_run(repo))[1]
    assert record["verdict"] == "not_run" and record["reason"] == "cost_budget"
    worst = float(proc.stdout.split("could cost up to $")[1].split()[0])
    assert worst >= 0.32                                          # at least the output tokens' share
    assert server.requests == []                                 # no call was made


@pytest.mark.slow
def test_gpt_alias_talks_to_openai(repo: Path, server: FakeLLMServer) -> None:
    # A wrong kernel: the reply is applied and judged (and cheaply, without a timing phase).
    server.queue(openai_completion(WRONG, prompt_tokens=2000, completion_tokens=700, cached_tokens=1000))
    proc = run_daemon(repo, None, "--model", "gpt", "--max-attempts", "1", config=write_config(repo),
                      env={"OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": "sk-openai-test"})
    assert proc.returncode == 0, proc.stderr
    record = finished(the_run(repo))[1]
    assert record["model"] == "openai:gpt-5.5" and record["reason"] == "incorrect" and record["diff"]
    # 1000*5 + 1000*0.5 + 700*30 = 5000 + 500 + 21000 = 26500 per million
    assert record["cost_usd"] == pytest.approx(0.0265)


@pytest.mark.slow
def test_openai_compatible_local_server_with_base_url(repo: Path, server: FakeLLMServer) -> None:
    server.queue(openai_completion(WRONG))
    proc = run_daemon(repo, None, "--model", "openai-compatible:qwen3-coder", "--base-url", server.url + "/v1",
                      "--max-attempts", "1", config=write_config(repo), env={"OPENAI_API_KEY": ""})
    assert proc.returncode == 0, proc.stderr
    record = finished(the_run(repo))[1]
    assert record["provider"] == "openai-compatible" and record["reason"] == "incorrect" and record["price"] is None
    assert server.requests[0]["body"]["model"] == "qwen3-coder"


@pytest.mark.slow
@pytest.mark.parametrize("args, env, message", [
    (["--model", "claude"], {"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY is not set"),
    (["--model", "gpt"], {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY is not set"),
    (["--model", "openai-compatible:x", "--base-url", "http://127.0.0.1:9/v1", "--max-cost-usd", "1"], {},
     "has no known price and --max-cost-usd is set"),
    (["--model", "openai-compatible:x"], {"OPENAI_BASE_URL": ""}, "need --base-url"),
])
def test_provider_bad_input_exits_2(repo: Path, args: list[str], env: dict[str, str], message: str) -> None:
    proc = run_daemon(repo, None, *args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "--model offline" in proc.stderr or message in proc.stderr
    assert not (repo / "runs" / "pq-l2").exists()
