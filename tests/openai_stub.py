"""A minimal OpenAI-compatible chat endpoint on loopback, for tests that need to see the
requests compllm sends and to make an endpoint misbehave (slow, failing, empty, gone).
The real engine (llama.cpp's server) is tested in `test_remote_engine.py`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = "ok"
    status: int = 200
    error: str = "stub failure"  # the error message of a reply whose status is not 200
    # True: the server never sends this reply (a stuck engine); the client's timeout ends it.
    stuck: bool = False
    # [(name, arguments)]: the reply asks for these tool calls (what a ReAct agent's model does)
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for index, (name, arguments) in enumerate(self.tool_calls)
            ]
        return message


@dataclass
class OpenAIStub:
    """Answers POST /v1/chat/completions with `respond(request_json) -> Reply`.

    `hold_until_in_flight = n` holds every request until n requests have been in flight at
    once (then all go), so a test sees concurrency without timing it; a request still held
    after 10 s fails with status 503 and says why."""

    respond: Callable[[dict[str, Any]], Reply] = lambda request: Reply()
    requests: list[dict[str, Any]] = field(default_factory=list)
    hold_until_in_flight: int | None = None
    most_in_flight: int = 0
    _in_flight: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._changed:
                    stub.requests.append(body)
                    stub._in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub._in_flight)
                    stub._changed.notify_all()
                try:
                    if stub._held_until_enough():
                        reply = stub.respond(body)
                    else:
                        wanted = stub.hold_until_in_flight
                        reply = Reply(status=503, error=f"never {wanted} requests in flight")
                    if reply.stuck:
                        stub._stopped.wait()  # no reply while the server runs
                finally:
                    with stub._changed:
                        stub._in_flight -= 1
                if reply.status == 200 and body.get("stream"):
                    self._stream(body, reply)
                    return
                if reply.status != 200:
                    payload = {"error": {"message": reply.error, "type": "server_error"}}
                else:
                    payload = {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "stub"),
                        "choices": [
                            {
                                "index": 0,
                                "message": reply.message(),
                                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 10,
                            "completion_tokens": len(reply.content.split()),
                            "total_tokens": 10 + len(reply.content.split()),
                        },
                    }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _stream(self, body: dict[str, Any], reply: Reply) -> None:
                """Server-sent events, one word per chunk, as OpenAI streams."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = reply.content.split(" ")
                deltas: list[dict[str, Any]] = [
                    {"content": (" " if i else "") + w} for i, w in enumerate(words)
                ]
                if reply.tool_calls:
                    deltas = [
                        {
                            "tool_calls": [
                                {"index": i, **c}
                                for i, c in enumerate(reply.message()["tool_calls"])
                            ]
                        }
                    ]
                finish = "tool_calls" if reply.tool_calls else "stop"
                chunks = [(delta, None) for delta in deltas] + [({}, finish)]
                for delta, reason in chunks:
                    event = {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model", "stub"),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                    }
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _held_until_enough(self) -> bool:
        """Wait (at most 10 s) until `hold_until_in_flight` requests have been in flight
        together; whether they were."""
        wanted = self.hold_until_in_flight
        if wanted is None:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: self.most_in_flight >= wanted, timeout=10)

    def stop(self) -> None:
        self._stopped.set()  # stuck replies end (their clients have given up)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
