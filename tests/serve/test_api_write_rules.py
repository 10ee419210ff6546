"""Every write route follows the feedback rules: catalogue items only, values in range, no user created by feedback
(SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import ADMIN, Api


def test_admin_feedback_for_an_unknown_user_creates_nobody(api: Api) -> None:
    body = {"user_id": "nobody-yet", "item_id": str(api.data.item_vocab.ids[0]), "kind": "thumbs_up"}
    response = api.client.post("/v1/feedback", json=body, headers=ADMIN)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["fields"][0]["loc"][-1] == "user_id"
    assert api.client.get("/v1/users/nobody-yet", headers=ADMIN).status_code == 404
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"item_id": "no-such-item"}, "item_id"),
        ({"value": 1000}, "value"),
        ({"value": 9.5}, "value"),
        ({"value": -1}, "value"),
        ({"event": "thumbs_up", "value": 3}, "value"),  # feedback other than a rating takes no value
        ({"event": "rating"}, "value"),  # a rating needs one
    ],
)
def test_interactions_outside_the_rules_are_refused_whole(api: Api, row: dict[str, Any], field: str) -> None:
    item = str(api.data.item_vocab.ids[0])
    good = {"user_id": "1", "item_id": item, "timestamp": 1_700_000_000}
    rows = [good, {**good, "timestamp": 1_700_000_001, **row}]
    response = api.client.post("/v1/interactions", json={"interactions": rows}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["loc"] == ["body", "interactions", 1, field]
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)  # nothing stored


def test_a_nan_value_is_refused_not_stored_as_one(api: Api) -> None:
    item = str(api.data.item_vocab.ids[0])
    raw = f'{{"interactions": [{{"user_id": "1", "item_id": "{item}", "timestamp": 5, "value": NaN}}]}}'
    response = api.client.post(
        "/v1/interactions", content=raw.encode(), headers=ADMIN | {"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)


def test_feedback_events_sent_as_interactions_get_the_feedback_values(api: Api) -> None:
    items = [str(i) for i in api.data.item_vocab.ids[:4]]
    rows = [
        {"user_id": "1", "item_id": items[0], "timestamp": 10, "event": "thumbs_up"},
        {"user_id": "1", "item_id": items[1], "timestamp": 11, "event": "rating", "value": 2.5},
        {"user_id": "1", "item_id": items[2], "timestamp": 12, "event": "click"},
        {"user_id": "1", "item_id": items[3], "timestamp": 13, "value": 4},
    ]
    response = api.client.post("/v1/interactions", json={"interactions": rows}, headers=ADMIN)
    assert response.status_code == 200 and response.json()["inserted"] == 4, response.text
    stored = api.service.store.user_interactions(api.service.dataset, "1", since=0)
    got = {(r.item_id, r.event): r.value for r in stored[stored["timestamp"] < 100].itertuples()}
    assert got == {
        (items[0], "thumbs_up"): 5.0,  # as the feedback route stores it
        (items[1], "rating"): 2.5,
        (items[2], "click"): 1.0,
        (items[3], "interaction"): 4.0,
    }


@pytest.mark.parametrize(
    ("row", "field"),
    [({"item_id": "not-in-the-catalogue"}, "item_id"), ({"value": 1000}, "value"), ({"value": -3}, "value")],
)
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_user_key_cannot_grow_the_catalogue_or_store_any_value(api: Api, row: dict[str, Any], field: str) -> None:
    """Issue 17: with a mere user key an unknown id was stored, and became a catalogue item at the next refit."""
    me = str(api.data.user_vocab.ids[0])
    key = api.user_key(me)
    item = str(api.data.item_vocab.ids[0])
    rows = [{"user_id": me, "item_id": item, "timestamp": 1_700_000_000, **row}]
    response = api.client.post("/v1/interactions", json={"interactions": rows}, headers=key)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["loc"] == ["body", "interactions", 0, field]
    feedback = {"item_id": rows[0]["item_id"], "kind": "rating", "value": rows[0].get("value", 4)}
    assert api.client.post("/v1/feedback", json=feedback, headers=key).status_code in {400, 404, 422}
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)  # nothing stored
    assert api.client.get("/v1/items/not-in-the-catalogue", headers=key).status_code == 404
