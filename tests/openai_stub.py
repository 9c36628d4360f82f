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
    delay_s: float = 0.0


@dataclass
class OpenAIStub:
    """Answers POST /v1/chat/completions with `respond(request_json) -> Reply`."""

    respond: Callable[[dict[str, Any]], Reply] = lambda request: Reply()
    requests: list[dict[str, Any]] = field(default_factory=list)
    most_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
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
                with stub._lock:
                    stub.requests.append(body)
                    stub._in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub._in_flight)
                try:
                    reply = stub.respond(body)
                    time.sleep(reply.delay_s)
                finally:
                    with stub._lock:
                        stub._in_flight -= 1
                if reply.status != 200:
                    payload = {"error": {"message": "stub failure", "type": "server_error"}}
                else:
                    payload = {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "stub"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.content},
                                "finish_reason": "stop",
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
