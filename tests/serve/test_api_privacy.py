"""Data subject rights over HTTP, on SQLite and PostgreSQL: delete a user (no row anywhere references them after),
export what is stored about them, and the audit log of both."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from api_support import ADMIN, Api

from llmrec.data.store.subjects import NO_USER_TABLES, USER_TABLES
from llmrec.encode.cache import EMBEDDINGS, text_hash
from llmrec.errors import UnknownIdError


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """An API whose chat reads titles and genres only (no text encoder: a chat turn takes milliseconds)."""
    return make_api(chat_text_search=False)


def _item_ids(api: Api, n: int) -> list[str]:
    return [str(i) for i in api.data.item_vocab.ids[:n]]


def _rows_mentioning(engine: sa.Engine, needles: list[str]) -> dict[str, int]:
    """``table.column`` -> rows whose value, read as text, contains any needle: every column of every table."""
    found: dict[str, int] = {}
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        for table_name in inspector.get_table_names():
            table = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
            for column in table.columns:
                as_text = sa.cast(column, sa.Text)
                if isinstance(column.type, sa.LargeBinary) and engine.dialect.name == "postgresql":
                    as_text = sa.func.encode(column, "escape")  # bytea as text, byte for byte
                hit = sa.or_(*[as_text.contains(n, autoescape=True) for n in needles])
                count = conn.execute(sa.select(sa.func.count()).select_from(table).where(hit)).scalar_one()
                if count:
                    found[f"{table_name}.{column.name}"] = int(count)
    return found


def _populate(api: Api, user: str, marker: str) -> dict[str, str]:
    """Give ``user`` a row in every table that can hold one, through the API; returns their key's header."""
    client = api.client
    profile = f"{marker} likes heists; mail {marker}@example.org or call +44 20 7946 0958"
    assert client.post("/v1/users", json={"user_id": user, "profile": profile}, headers=ADMIN).status_code == 201
    key = api.user_key(user)
    items = _item_ids(api, 3)
    rows = [{"user_id": user, "item_id": items[0], "timestamp": 1_700_000_000, "value": 4.0}]
    assert client.post("/v1/interactions", json={"interactions": rows}, headers=key).status_code == 200
    feedback = client.post("/v1/feedback", json={"item_id": items[1], "kind": "thumbs_up"}, headers=key)
    assert feedback.status_code == 201, feedback.text
    session = client.post("/v1/chat/sessions", json={}, headers=key)
    assert session.status_code == 201, session.text
    sid = session.json()["session_id"]
    reply = client.post(f"/v1/chat/sessions/{sid}/reply", json={"text": f"a {marker} heist movie please"}, headers=key)
    assert reply.status_code == 200, reply.text
    # A cache row derived from the user's text (what the content scorer writes when it embeds a profile), and one
    # that is not theirs, which must survive.
    stored = client.get(f"/v1/users/{user}", headers=key).json()["profile"]
    store = api.service.store
    store.ensure_migrated()
    with store.engine.begin() as conn:
        for text in (stored, f"an unrelated text {marker[::-1]}"):
            conn.execute(
                sa.insert(EMBEDDINGS).values(model_id="test-model", text_hash=text_hash(text), dim=1, vector=b"\0" * 4)
            )
    # A list a batch run precomputed for the user (llmrec batch recommend).
    row = pd.DataFrame({"user_id": [user], "rank": [1], "item_id": [api.data.item_vocab.id(0)], "score": [1.0]})
    store.replace_recommendations(f"run-{marker}", api.service.dataset, [row])
    return key


def test_every_table_is_classified_as_holding_user_rows_or_not(api: Api) -> None:
    api.service.store.ensure_migrated()
    tables = set(sa.inspect(api.service.store.engine).get_table_names())
    # A new table must be added to one of the two lists (and, when it holds user rows, to Store.forget_user).
    assert tables == set(USER_TABLES) | NO_USER_TABLES


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_delete_leaves_no_row_referencing_the_user_in_any_table(api: Api) -> None:
    client, store = api.client, api.service.store
    user = f"subject-{uuid.uuid4().hex[:10]}"
    marker = f"kumquat{uuid.uuid4().hex[:8]}"
    key = _populate(api, user, marker)
    before = _rows_mentioning(store.engine, [user, marker])
    assert {"users.user_id", "interactions.user_id", "chat_sessions.user_id", "api_keys.user_id"} <= set(before)
    assert "chat_sessions.turns" in before  # the message, stored (scrubbed) with the session
    profile = client.get(f"/v1/users/{user}", headers=key).json()["profile"]
    with store.engine.connect() as conn:
        theirs = conn.execute(sa.select(sa.func.count()).where(EMBEDDINGS.c.text_hash == text_hash(profile)))
        assert theirs.scalar_one() == 1

    key_id = client.get("/v1/keys", params={"user_id": user}, headers=ADMIN).json()["keys"][0]["key_id"]
    deleted = client.delete(f"/v1/users/{user}", headers=key)  # the user's own key may delete them
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["deleted"] == user
    assert body["rows"] == {
        "interactions": 2,
        "chat_sessions": 1,
        "api_keys": 1,
        "recommendations": 1,
        "users": 1,
        "embeddings": 1,
    }

    assert _rows_mentioning(store.engine, [user, marker]) == {}
    with store.engine.connect() as conn:
        left = set(
            conn.execute(sa.select(EMBEDDINGS.c.text_hash).where(EMBEDDINGS.c.model_id == "test-model")).scalars()
        )
        # Theirs is gone, the unrelated one of this run is kept (a reused database holds earlier runs' rows too).
        assert text_hash(profile) not in left and text_hash(f"an unrelated text {marker[::-1]}") in left
    assert client.get(f"/v1/users/{user}", headers=ADMIN).status_code == 404
    assert client.get(f"/v1/users/{user}", headers=key).status_code == 401  # their key went with them
    assert client.delete(f"/v1/users/{user}", headers=ADMIN).status_code == 404

    audit = client.get("/v1/audit", headers=ADMIN)
    assert audit.status_code == 200, audit.text
    entry = audit.json()["entries"][0]
    assert entry["action"] == "delete_user" and entry["actor"] == f"key:{key_id}"
    assert entry["detail"]["deleted"]["interactions"] == 2
    mine = client.get("/v1/audit", params={"user_id": user}, headers=ADMIN).json()
    assert [e["action"] for e in mine["entries"]] == ["delete_user"]
    assert client.get("/v1/audit", params={"user_id": "someone-else"}, headers=ADMIN).json()["total"] == 0


def test_export_returns_everything_stored_and_is_audited(api: Api) -> None:
    client = api.client
    user = f"subject-{uuid.uuid4().hex[:10]}"
    marker = f"quince{uuid.uuid4().hex[:8]}"
    key = _populate(api, user, marker)
    other = api.user_key("1")

    assert client.get(f"/v1/users/{user}/export", headers=other).status_code == 403
    assert client.delete(f"/v1/users/{user}", headers=other).status_code == 403
    assert client.get("/v1/audit", headers=key).status_code == 403
    assert client.get("/v1/users/nobody-at-all/export", headers=ADMIN).status_code == 404

    answer = client.get(f"/v1/users/{user}/export", headers=key)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    assert data["user_id"] == user and data["dataset"] == api.service.dataset
    assert data["profile"]["profile"].startswith(f"{marker} likes heists; mail [EMAIL] or call [PHONE]")
    assert data["profile"]["profile_raw"] is None and data["profile"]["raw_stored_encrypted"] is False
    assert sorted(i["event"] for i in data["interactions"]) == ["interaction", "thumbs_up"]
    assert len(data["chat_sessions"]) == 1
    turns = data["chat_sessions"][0]["turns"]
    assert turns[0]["role"] == "user" and marker in turns[0]["text"] and turns[1]["role"] == "assistant"
    assert [k["key_id"] for k in data["api_keys"]] and "key_hash" not in data["api_keys"][0]
    assert data["in_fitted_model"] is (user in api.service.data.user_vocab)
    assert data["audit"] == []  # no earlier export
    key_id = data["api_keys"][0]["key_id"]
    again = client.get(f"/v1/users/{user}/export", headers=ADMIN).json()
    assert [(a["action"], a["actor"]) for a in again["audit"]] == [("export_user", f"key:{key_id}")]
    log = client.get("/v1/audit", params={"user_id": user}, headers=ADMIN).json()
    assert [(e["action"], e["actor"]) for e in log["entries"]] == [
        ("export_user", "admin"),
        ("export_user", f"key:{key_id}"),
    ]
    for entry in log["entries"]:
        assert user not in str(entry)  # the log names the user by a salted digest only

    paths = client.get("/openapi.json").json()["paths"]
    assert "delete" in paths["/v1/users/{user_id}"] and "get" in paths["/v1/users/{user_id}/export"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_deleted_user_is_unknown_at_once_cold_when_created_again_and_gone_after_refit(api: Api) -> None:
    client, service = api.client, api.service
    fitted = client.get("/v1/users/5/recommendations", params={"k": 10}, headers=ADMIN)
    assert fitted.status_code == 200 and fitted.json()["known_user"] is True
    assert client.delete("/v1/users/5", headers=ADMIN).status_code == 200
    assert "5" in service.data.user_vocab  # still in the fitted snapshot...
    assert client.get("/v1/users/5/recommendations", headers=ADMIN).status_code == 404  # ...but never used
    assert client.get("/v1/users/5", headers=ADMIN).status_code == 404
    with pytest.raises(UnknownIdError):
        service.explain("5", ["1"])
    assert client.post("/v1/chat/sessions", json={"user_id": "5"}, headers=ADMIN).status_code == 404

    assert client.post("/v1/users", json={"user_id": "5"}, headers=ADMIN).status_code == 201
    assert client.post("/v1/users", json={"user_id": "fresh-user"}, headers=ADMIN).status_code == 201
    again = client.get("/v1/users/5/recommendations", params={"k": 10}, headers=ADMIN).json()
    cold = client.get("/v1/users/fresh-user/recommendations", params={"k": 10}, headers=ADMIN).json()
    assert again["known_user"] is False
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in cold["items"]]
    assert [i["item_id"] for i in again["items"]] != [i["item_id"] for i in fitted.json()["items"]]

    assert client.post("/v1/admin/refit", headers=ADMIN).status_code == 200
    data = service.data
    assert "5" not in set(data.interactions["user_id"].astype(str))
    after = client.get("/v1/users/5/recommendations", params={"k": 10}, headers=ADMIN).json()
    assert after["known_user"] is True and service._forgotten == {}
    assert [i["item_id"] for i in after["items"]] == [i["item_id"] for i in cold["items"]]  # no history: cold
