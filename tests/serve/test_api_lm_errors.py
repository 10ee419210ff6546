"""A language model behind an OpenAI-compatible server that fails: the API says 503 (with Retry-After) when it is
down or overloaded, 502 when it answered with an error or garbage. The upstream is a real HTTP server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from api_support import ADMIN, Api

pytest.importorskip("httpx")


class Upstream:
    """A loopback HTTP server whose every POST answers as ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "503"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.mode == "close":  # hang up without answering
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, body, extra = {
                    "503": (503, b'{"error": {"message": "overloaded"}}', {"Retry-After": "7"}),
                    "429": (429, b'{"error": {"message": "rate limited"}}', {}),
                    "500": (500, b"<html>Internal Server Error</html>", {}),
                    "garbage": (200, b"data: this is not json\n\n", {"Content-Type": "text/event-stream"}),
                }[outer.mode]
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def _lm_api(make_api: Callable[..., Api], base_url: str) -> Api:
    openai = {"base_url": base_url, "api_key": None, "max_retries": 0, "connect_timeout_s": 1.0, "timeout_s": 5.0}
    pipeline = {"retriever": {"name": "popular"}, "rerank": None, "explain_with_lm": True}
    return make_api(pipeline={**pipeline, "lm": {"backend": "openai", "openai": openai}})


def _explain(api: Api) -> Any:
    user = str(api.data.user_vocab.ids[0])
    return api.client.get(f"/v1/users/{user}/recommendations", params={"k": 1, "explain": True}, headers=ADMIN)


@pytest.mark.parametrize(
    ("mode", "status", "kind", "retry_after"),
    [
        ("503", 503, "lm_unavailable", "7"),  # the upstream's Retry-After is passed on
        ("429", 503, "lm_unavailable", "10"),  # none sent: the default
        ("close", 503, "lm_unavailable", "10"),
        ("500", 502, "lm_bad_gateway", None),
        ("garbage", 502, "lm_bad_gateway", None),
    ],
)
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_lm_failures_through_the_explain_route(
    make_api: Callable[..., Api], upstream: Upstream, mode: str, status: int, kind: str, retry_after: str | None
) -> None:
    upstream.mode = mode
    response = _explain(_lm_api(make_api, upstream.url + "/v1"))
    assert response.status_code == status, response.text
    assert response.headers.get("retry-after") == retry_after
    error = response.json()["error"]
    assert error["type"] == kind and "Traceback" not in response.text
    # The LM server's address is the operator's business: the body says "<url>", the log has it.
    assert "127.0.0.1" not in response.text and "<url>" in error["message"], error
    if status == 503:
        assert error["fix"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_lm_server_down_is_503(make_api: Callable[..., Api]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    response = _explain(_lm_api(make_api, f"http://127.0.0.1:{port}/v1"))
    assert response.status_code == 503 and response.headers["retry-after"] == "10", response.text
    error = response.json()["error"]
    assert error["type"] == "lm_unavailable" and "server is running" in error["fix"]
