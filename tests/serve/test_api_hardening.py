"""What every response carries and what none may show: request ids, security headers, no paths or database URLs;
key expiry and per-key rate limits."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from api_support import ADMIN, Api, serve_config
from fastapi.testclient import TestClient

from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app
from llmrec.serve.ratelimit import RateLimiter


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_every_response_has_a_request_id_and_security_headers(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    client = api.client
    with caplog.at_level(logging.INFO, logger="llmrec.serve.access"):
        ok = client.get("/v1/health")
        mine = client.get("/v1/items/none", headers=ADMIN | {"X-Request-ID": "client-trace-42"})
        junk = client.get("/v1/health", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 80})
    for response in (ok, mine, junk):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert len(response.headers["x-request-id"]) >= 8
    assert ok.headers["x-request-id"] != junk.headers["x-request-id"]
    assert mine.status_code == 404 and mine.headers["x-request-id"] == "client-trace-42"
    assert mine.json()["error"]["request_id"] == "client-trace-42"  # a client's report finds the log line
    assert junk.headers["x-request-id"] != "bad id\twith spaces" + "x" * 80  # not echoed: a fresh one
    logged = [r.getMessage() for r in caplog.records if r.name == "llmrec.serve.access"]
    assert any("GET /v1/items/none 404" in line and "client-trace-42" in line for line in logged), logged
    page = client.get("/")
    assert page.headers["x-request-id"] and "Content-Security-Policy" in page.headers  # the page keeps its CSP


def test_a_crash_is_a_500_in_the_error_model_with_headers(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom at /srv/llmrec/app.py")

    monkeypatch.setattr(api.service, "list_users", explode)
    response = api.client.get("/v1/users", headers=ADMIN)
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff" and "/srv" not in response.text


def test_a_store_outage_is_a_503_that_shows_no_url_or_path(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql+psycopg://llmrec:s3cret@127.0.0.1:{port}/secret_db"
    service = RecommenderService(Store(url), serve_config("gone"))
    client = TestClient(create_app(service), raise_server_exceptions=False)
    for path in ("/v1/items", "/v1/users/1", "/v1/keys"):
        response = client.get(path, headers=ADMIN)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        body = response.text
        assert "127.0.0.1" not in body and "secret_db" not in body and "postgresql" not in body, body
        assert response.json()["error"]["type"] == "store_unavailable"
    sqlite = RecommenderService(Store(f"sqlite:///{tmp_path / 'deep' / 'secret-name.db'}"), serve_config("none"))
    missing = TestClient(create_app(sqlite), raise_server_exceptions=False).get(
        "/v1/users/1/recommendations", headers=ADMIN
    )
    assert missing.status_code >= 400 and "secret-name" not in missing.text and str(tmp_path) not in missing.text


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_keys_expire(api: Api) -> None:
    made = api.client.post("/v1/keys", json={"user_id": "1", "expires_in_s": 1}, headers=ADMIN)
    assert made.status_code == 201 and made.json()["expires_at"].endswith("Z"), made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert api.client.get("/v1/users/1", headers=key).status_code == 200
    time.sleep(1.2)
    expired = api.client.get("/v1/users/1", headers=key)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    listed = {k["key_id"]: k for k in api.client.get("/v1/keys", headers=ADMIN).json()["keys"]}
    assert listed[made.json()["key_id"]]["active"] is False
    forever = api.client.post("/v1/keys", json={"user_id": "1"}, headers=ADMIN).json()
    assert forever["expires_at"] is None and forever["active"]
    too_long = api.client.post("/v1/keys", json={"user_id": "1", "expires_in_s": 0}, headers=ADMIN)
    assert too_long.status_code == 422


def test_rate_limits_are_per_key_with_retry_after(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_per_minute=60, rate_limit_burst=3)
    first, second = api.user_key("1"), api.user_key("2")
    statuses = [api.client.get("/v1/users/1", headers=first).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = api.client.get("/v1/users/1", headers=first)
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    assert api.client.get("/v1/users/2", headers=second).status_code == 200  # another key has its own budget
    # Guessing keys is limited per client address too.
    guesses = [api.client.get("/v1/me", headers={"X-API-Key": f"lrk_x_{i}"}).status_code for i in range(5)]
    assert guesses[:3] == [401] * 3 and guesses[-1] == 429


def test_no_limit_by_default(api: Api) -> None:
    key = api.user_key("1")
    assert {api.client.get("/v1/users/1", headers=key).status_code for _ in range(30)} == {200}


def test_the_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=30, burst=2, clock=lambda: now[0], max_keys=2)
    assert [limiter.acquire("a"), limiter.acquire("a")] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(2.0)  # one request per 2 s
    now[0] = 2.0
    assert limiter.acquire("a") == 0.0
    limiter.acquire("b")
    limiter.acquire("c")  # over max_keys: "a", the least recently used, is dropped
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/items/a%00b", None),
        ("PATCH", "/v1/items/a%00b", {"title": "x"}),
        ("DELETE", "/v1/items/a%00b", None),
        ("GET", "/v1/users/a%00b", None),
        ("GET", "/v1/users/a%00b/interactions", None),
        ("GET", "/v1/users/a%00b/recommendations", None),
        ("POST", "/v1/users/a%00b/recommendations", {}),
        ("GET", "/v1/chat/sessions/a%00b", None),
        ("DELETE", "/v1/keys/a%00b", None),
        ("GET", "/v1/keys?user_id=a%00b", None),
        ("POST", "/v1/users", {"user_id": "a\x00b"}),
        ("POST", "/v1/items", {"item_id": "a\x00b"}),
        ("POST", "/v1/keys", {"user_id": "a\x00b"}),
        ("POST", "/v1/feedback", {"user_id": "a\x00b", "item_id": "1", "kind": "seen"}),
        ("POST", "/v1/chat/sessions", {"user_id": "a\x00b"}),
        ("POST", "/v1/interactions", {"interactions": [{"user_id": "a\x00b", "item_id": "1", "timestamp": 1}]}),
    ],
)
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_nul_character_in_an_id_is_refused_on_every_route(api: Api, method: str, path: str, body: object) -> None:
    response = api.client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "validation_error"


def test_attributes_nested_too_deep_are_refused_not_stored(api: Api) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(300):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    for method, path, body in (
        ("POST", "/v1/items", {"item_id": "deep", "attributes": deep}),
        ("PATCH", "/v1/items/1", {"attributes": deep}),
        ("POST", "/v1/users", {"user_id": "deep", "attributes": deep}),
    ):
        response = api.client.request(method, path, json=body, headers=ADMIN)
        assert response.status_code == 422 and "nest deeper" in response.text, response.text
    assert api.client.get("/v1/items/deep", headers=ADMIN).status_code == 404
    assert api.client.get("/v1/items/1", headers=ADMIN).status_code == 200
