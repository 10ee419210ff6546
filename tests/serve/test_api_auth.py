"""API keys: 401 without a valid key, 403 for another user's data or admin routes, keys stored hashed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from api_support import ADMIN, ADMIN_KEY, Api


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_requests_without_a_valid_key_get_401(api: Api) -> None:
    client = api.client
    user = str(api.data.user_vocab.ids[0])
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "lrk_0_fake"}, {"Authorization": "Basic x"}):
        response = client.get(f"/v1/users/{user}/recommendations", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/v1/users/{user}/recommendations", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert client.get("/v1/health").status_code == 200  # health needs no key


def test_user_keys_reach_only_their_own_user(api: Api) -> None:
    client = api.client
    me, other = (str(u) for u in api.data.user_vocab.ids[:2])
    key = api.user_key(me)
    assert client.get(f"/v1/users/{me}/recommendations", headers=key).status_code == 200
    for path in (f"/v1/users/{other}/recommendations", f"/v1/users/{other}", f"/v1/users/{other}/interactions"):
        response = client.get(path, headers=key)
        assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden", path
    whoami = client.get("/v1/me", headers=key).json()
    assert (whoami["role"], whoami["user_id"], whoami["dataset"]) == ("user", me, api.service.dataset)
    assert whoami["default_retriever"] in whoami["retrievers"] and "thumbs_down" in whoami["feedback_kinds"]
    assert client.get("/v1/me", headers=ADMIN).json()["user_id"] is None
    assert client.get("/v1/me").status_code == 401
    for method, path, body in [
        ("post", "/v1/keys", {"user_id": me}),
        ("get", "/v1/keys", None),
        ("post", "/v1/admin/refit", None),
        ("get", "/v1/users", None),
    ]:
        assert client.request(method, path, json=body, headers=key).status_code == 403, path


def test_keys_are_stored_hashed_listed_and_revocable(api: Api) -> None:
    client = api.client
    me = str(api.data.user_vocab.ids[0])
    made = client.post("/v1/keys", json={"user_id": me}, headers=ADMIN).json()
    key = made["key"]
    assert made["active"] and made["user_id"] == me
    with api.service.store.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.text("SELECT key_id, key_hash FROM api_keys")).all()]
    assert any(key_id == made["key_id"] for key_id, _ in stored)
    assert all(key not in value for row in stored for value in row)  # only a hash is kept
    listed = client.get("/v1/keys", params={"user_id": me}, headers=ADMIN).json()["keys"]
    assert [k["key_id"] for k in listed] == [made["key_id"]] and "key" not in listed[0]
    assert client.post("/v1/keys", json={"user_id": "nobody"}, headers=ADMIN).status_code == 404

    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"/v1/users/{me}", headers=headers).status_code == 200
    revoked = client.delete(f"/v1/keys/{made['key_id']}", headers=ADMIN)
    assert revoked.status_code == 200 and not revoked.json()["active"]
    refused = client.get(f"/v1/users/{me}", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert client.delete(f"/v1/keys/{made['key_id']}", headers=ADMIN).status_code == 404


def test_keys_of_another_dataset_do_not_work(make_api: object, api: Api) -> None:
    other = make_api()  # type: ignore[operator]
    user = str(api.data.user_vocab.ids[0])
    key = other.user_key(user)
    assert other.client.get(f"/v1/users/{user}", headers=key).status_code == 200
    assert api.client.get(f"/v1/users/{user}", headers=key).status_code == 401


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_without_an_admin_key_admin_routes_are_closed(make_api: object) -> None:
    api = make_api(admin_key=None)  # type: ignore[operator]
    response = api.client.get("/v1/users", headers={"Authorization": "Bearer "})
    assert response.status_code == 401
    assert api.client.get("/v1/users", headers=ADMIN).status_code == 401
