"""The contract: one error model everywhere (never a traceback), size limits, and a typed OpenAPI spec."""

from __future__ import annotations

import json

import pytest
from api_support import ADMIN, Api

from llmrec.serve.routes import ROUTERS


def _assert_error_model(response: object, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "field", "fix", "fields", "request_id"}
    assert body["error"]["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert body["error"]["type"] == kind and body["error"]["message"]
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    return body["error"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_errors_share_one_model(api: Api) -> None:
    client = api.client
    _assert_error_model(client.get("/v1/nowhere", headers=ADMIN), 404, "not_found")
    _assert_error_model(client.put("/v1/items", headers=ADMIN), 405, "method_not_allowed")
    _assert_error_model(client.get("/v1/items/none", headers=ADMIN), 404, "not_found")
    _assert_error_model(client.get("/v1/users/1"), 401, "unauthorized")
    broken = client.post("/v1/items", content=b"{not json", headers=ADMIN | {"Content-Type": "application/json"})
    assert _assert_error_model(broken, 422, "validation_error")["fields"][0]["loc"][0] == "body"


def test_unexpected_failures_are_500_without_a_traceback(api: Api, monkeypatch: object) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/app.py line 12")

    monkeypatch.setattr(api.service, "list_items", explode)  # type: ignore[attr-defined]
    error = _assert_error_model(api.client.get("/v1/items", headers=ADMIN), 500, "internal_error")
    assert "secret" not in error["message"]


def test_bodies_over_the_limit_get_413(api: Api) -> None:
    limit = api.service.config.max_request_bytes
    rows = [{"user_id": "u", "item_id": str(i), "timestamp": i} for i in range(limit // 40)]
    payload = json.dumps({"interactions": rows}).encode()
    assert len(payload) > limit
    too_big = api.client.post("/v1/interactions", content=payload, headers=ADMIN | {"Content-Type": "application/json"})
    _assert_error_model(too_big, 413, "payload_too_large")

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    streamed = api.client.post(
        "/v1/interactions", content=chunks(), headers=ADMIN | {"Content-Type": "application/json"}
    )
    _assert_error_model(streamed, 413, "payload_too_large")
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)
    catalogue = [str(i) for i in api.data.item_vocab.ids[:10]]  # only catalogue items may be sent
    small = json.dumps({"interactions": [{**r, "item_id": i} for r, i in zip(rows, catalogue, strict=False)]}).encode()
    json_headers = ADMIN | {"Content-Type": "application/json"}
    assert api.client.post("/v1/interactions", content=small, headers=json_headers).status_code == 200


def test_openapi_lists_every_route_with_typed_responses(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/health": {"get"},
        "/v1/me": {"get"},
        "/v1/admin/refit": {"post"},
        "/v1/items": {"get", "post"},
        "/v1/items/{item_id}": {"get", "patch", "delete"},
        "/v1/users": {"get", "post"},
        "/v1/users/{user_id}": {"get", "delete"},
        "/v1/users/{user_id}/export": {"get"},
        "/v1/audit": {"get"},
        "/v1/users/{user_id}/interactions": {"get"},
        "/v1/interactions": {"post"},
        "/v1/users/{user_id}/recommendations": {"get", "post"},
        "/v1/feedback": {"post"},
        "/v1/chat/sessions": {"post"},
        "/v1/chat/sessions/{session_id}": {"get", "delete"},
        "/v1/chat/sessions/{session_id}/state": {"put"},
        "/v1/chat/sessions/{session_id}/reply": {"post"},
        "/v1/chat/sessions/{session_id}/messages": {"post"},
        "/v1/chat/sessions/{session_id}/feedback": {"post"},
        "/v1/keys": {"get", "post"},
        "/v1/keys/{key_id}": {"delete"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    declared = {f"/v1{route.path}" for router in ROUTERS for route in router.routes}  # type: ignore[attr-defined]
    assert declared == set(expected)  # every route the code declares is in the spec
    for path, ops in paths.items():
        for method, op in ops.items():
            success = [code for code in op["responses"] if code.startswith("2")]
            assert len(success) == 1, (path, method)
            content = op["responses"][success[0]]["content"]
            if path.endswith("/messages"):  # the streamed chat answer: server-sent events
                assert "text/event-stream" in content, (path, content)
            else:
                assert "$ref" in content["application/json"]["schema"], (path, method, content)  # a named model
            if path != "/v1/health":
                errors = op["responses"].get("401") or op["responses"].get("422")
                assert errors["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (path, method)
    assert "RecommendationsOut" in spec["components"]["schemas"]
    assert api.client.get("/docs").status_code == 200
