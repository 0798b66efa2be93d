"""A scripted HTTP server on 127.0.0.1 speaking the subset of the Anthropic Messages API and the
OpenAI Chat Completions API that the providers use. Tests queue one response per request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    status: int = 200
    body: dict | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0          # seconds between bytes of the body: a server that never quite stops


def anthropic_message(text: str, stop_reason: str = "end_turn", input_tokens: int = 1200, output_tokens: int = 300,
                      cache_read: int = 0, cache_write: int = 0, thinking: bool = False) -> Step:
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": "Let me think about the gather...", "signature": "sig"})
    if text:
        content.append({"type": "text", "text": text})
    return Step(body={"id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test",
                      "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                      "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                                "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read}})


def openai_completion(text: str | None, finish_reason: str = "stop", prompt_tokens: int = 1200,
                      completion_tokens: int = 300, cached_tokens: int = 0, refusal: str | None = None) -> Step:
    return Step(body={"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-test",
                      "choices": [{"index": 0, "finish_reason": finish_reason,
                                   "message": {"role": "assistant", "content": text, "refusal": refusal}}],
                      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens,
                                "prompt_tokens_details": {"cached_tokens": cached_tokens}}})


def anthropic_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Step:
    return Step(status, {"type": "error", "error": {"type": kind, "message": message}}, headers or {})


def openai_error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> Step:
    return Step(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}, headers or {})


class FakeLLMServer:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:       # keep test output clean
                pass

            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                            "body": json.loads(raw or b"{}")})
                    step = server.steps.pop(0) if server.steps else Step(500, {"error": {"message": "script exhausted"}})
                if step.delay:
                    time.sleep(step.delay)
                payload = step.body if isinstance(step.body, str) else json.dumps(step.body)
                # "{KEY}" in a body stands for the key the request carried: a server that echoes it.
                key = self.headers.get("x-api-key") or self.headers.get("authorization", "").removeprefix("Bearer ")
                data = payload.replace("{KEY}", key).encode()
                try:
                    self.send_response(step.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in step.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if step.drip:
                        for i in range(len(data)):
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(step.drip)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass                                       # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def queue(self, *steps: Step) -> None:
        with self._lock:
            self.steps.extend(steps)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
