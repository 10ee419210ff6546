"""Users and batch interaction ingest over HTTP (transactional, row- and field-level errors), on both databases."""

from __future__ import annotations

import pytest
from api_support import ADMIN, Api


def test_users_create_read_list(api: Api) -> None:
    client = api.client
    created = client.post("/v1/users", json={"user_id": "u-new", "profile": "likes noir"}, headers=ADMIN)
    assert created.status_code == 201 and created.json() == {
        "user_id": "u-new",
        "profile": "likes noir",
        "attributes": {},
    }
    assert client.post("/v1/users", json={"user_id": "u-new"}, headers=ADMIN).status_code == 409
    assert client.get("/v1/users/u-new", headers=ADMIN).json()["profile"] == "likes noir"
    assert client.get("/v1/users/nobody", headers=ADMIN).status_code == 404
    page = client.get("/v1/users", params={"offset": api.data.n_users, "limit": 5}, headers=ADMIN).json()
    assert page["total"] == api.data.n_users + 1 and [u["user_id"] for u in page["users"]] == ["u-new"]
    bad = client.post("/v1/users", json={"user_id": "", "extra": 1}, headers=ADMIN)
    assert bad.status_code == 422
    assert {tuple(f["loc"]) for f in bad.json()["error"]["fields"]} == {("body", "user_id"), ("body", "extra")}
    for odd in (" pad-1 ", "a\u0000b", "tab\tend\n"):  # stored-but-unreadable or not storable on PostgreSQL
        answer = client.post("/v1/users", json={"user_id": odd}, headers=ADMIN)
        assert answer.status_code == 422, (odd, answer.text)
        assert (
            client.get("/v1/users", params={"offset": api.data.n_users, "limit": 5}, headers=ADMIN).json()["total"]
            == api.data.n_users + 1
        )  # nothing stored
    assert client.post("/v1/users", json={"user_id": "two words"}, headers=ADMIN).status_code == 201


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_batch_ingest_is_all_or_nothing_and_names_row_and_field(api: Api) -> None:
    client = api.client
    rows = [
        {"user_id": "u-a", "item_id": "1", "timestamp": 1_700_000_000, "value": 4.0},
        {"user_id": "u-a", "item_id": "2", "timestamp": "2024-01-02T03:04:05", "event": "click"},
        {"user_id": "u-b", "item_id": "3", "timestamp": "not a time"},
    ]
    bad = client.post("/v1/interactions", json={"interactions": rows}, headers=ADMIN)
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["type"] == "validation_error"  # the spec's timestamp: seconds, or ISO-8601 text from 1970 on
    assert {tuple(f["loc"]) for f in error["fields"]} == {("body", "interactions", 2, "timestamp")}
    assert any("ISO-8601" in f["msg"] for f in error["fields"]), error
    assert client.get("/v1/users/u-a/interactions", headers=ADMIN).status_code == 404  # nothing was stored

    typed = client.post("/v1/interactions", json={"interactions": [{"user_id": "u-a", "item_id": "1"}]}, headers=ADMIN)
    assert typed.status_code == 422 and typed.json()["error"]["fields"][0]["loc"] == [
        "body",
        "interactions",
        0,
        "timestamp",
    ]

    good = client.post("/v1/interactions", json={"interactions": rows[:2]}, headers=ADMIN)
    assert good.status_code == 200 and good.json() == {"inserted": 2, "skipped": 0}
    assert client.post("/v1/interactions", json={"interactions": rows[:2]}, headers=ADMIN).json() == {
        "inserted": 0,
        "skipped": 2,
    }
    history = client.get("/v1/users/u-a/interactions", headers=ADMIN).json()["interactions"]
    assert [(h["item_id"], h["value"], h["event"]) for h in history] == [("1", 4.0, "interaction"), ("2", 1.0, "click")]
    assert history[1]["timestamp"] == 1_704_164_645
    since = client.get("/v1/users/u-a/interactions", params={"since": 1_704_000_000}, headers=ADMIN).json()
    assert [h["item_id"] for h in since["interactions"]] == ["2"]


def test_user_keys_ingest_and_read_only_their_own(api: Api) -> None:
    client = api.client
    me, other = (str(u) for u in api.data.user_vocab.ids[:2])
    key = api.user_key(me)
    assert client.get(f"/v1/users/{me}", headers=key).status_code == 200
    assert client.get(f"/v1/users/{me}/interactions", headers=key).status_code == 200
    denied = client.get(f"/v1/users/{other}/interactions", headers=key)
    assert denied.status_code == 403 and denied.json()["error"]["fields"][0]["loc"] == ["path", "user_id"]
    assert client.get(f"/v1/users/{other}", headers=key).status_code == 403
    assert client.get("/v1/users", headers=key).status_code == 403
    assert client.post("/v1/users", json={"user_id": "z"}, headers=key).status_code == 403

    rows = [
        {"user_id": me, "item_id": "1", "timestamp": 5},
        {"user_id": other, "item_id": "1", "timestamp": 5},
    ]
    mixed = client.post("/v1/interactions", json={"interactions": rows}, headers=key)
    assert mixed.status_code == 403 and mixed.json()["error"]["fields"][0]["loc"] == [
        "body",
        "interactions",
        1,
        "user_id",
    ]
    assert (
        client.get(f"/v1/users/{me}/interactions", params={"since": 0}, headers=key).json()["interactions"][0][
            "timestamp"
        ]
        != 5
    )  # nothing of the refused batch was stored
    own = client.post("/v1/interactions", json={"interactions": rows[:1]}, headers=key)
    assert own.status_code == 200 and own.json()["inserted"] == 1
