"""Shared pieces of the language-model tests: settings and a tiny scripted HTTP server (a real socket)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-3f9a7c1e5b"
# One torch thread by default: on a shared machine two spinning OpenMP threads are several times slower than one.
THREADS = int(os.environ.get("LLMREC_TEST_LM_THREADS", "1"))


@dataclass
class Script:
    """What the scripted server answers: ``fail`` times ``status``, then a chat completion (or ``final_status``).

    ``completions``, when set, answers ``/completions`` (not chat) instead: request body -> (status, JSON payload).
    """

    fail: int = 0
    status: int = 503
    retry_after: str | None = None
    final_status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    completions: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None = None


class ScriptedServer:
    """A real HTTP server on loopback whose answers follow a :class:`Script` (reset per test)."""

    def __init__(self) -> None:
        self.script = Script()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                script = outer.script
                script.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                failed = sum(1 for r in script.requests if r["path"] == self.path) - 1
                if script.completions is not None and self.path.endswith("/completions") and "chat" not in self.path:
                    self._send(*script.completions(body))
                elif failed < script.fail:
                    self._send(script.status, {"error": {"message": "busy, try later"}}, script.retry_after)
                elif script.final_status != 200:
                    self._send(script.final_status, {"error": {"message": "no such route here"}})
                else:
                    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok after retry"}}]}
                    self._send(200, answer)

            def _send(self, status: int, payload: dict[str, Any], retry_after: str | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
