"""One feedback validator: the chat and the feedback route accept and reject exactly the same feedback."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from api_support import Api

from llmrec.errors import ConfigError
from llmrec.feedback import validate_feedback

# (kind, value): ratings on both sides of the 0.5-5 scale, a rating that is not a number, kinds that do not exist.
CASES: list[tuple[str, float | None]] = [
    ("rating", 0.2),
    ("rating", 0.5),
    ("rating", 5),
    ("rating", 5.5),
    ("rating", math.nan),
    ("like", None),
    ("bogus", None),
    ("thumbs_up", None),
    ("thumbs_up", 4.0),
]
ACCEPTED = {("rating", 0.5), ("rating", 5), ("thumbs_up", None)}


@pytest.fixture
def chat_api(make_api: Callable[..., Api]) -> Api:
    return make_api(chat_text_search=False)


def _post(api: Api, url: str, body: dict[str, object], key: dict[str, str]) -> object:
    # json.dumps writes NaN as the bare token NaN, which the server's JSON parser reads back as a float.
    headers = key | {"Content-Type": "application/json"}
    return api.client.post(url, content=json.dumps(body).encode(), headers=headers)


def test_chat_and_api_accept_and_reject_the_same_feedback(chat_api: Api) -> None:
    user = str(chat_api.data.user_vocab.ids[3])
    item = str(chat_api.data.items["item_id"].iloc[0])
    key = chat_api.user_key(user)
    chat = chat_api.service.chat()
    session = chat.start(user)
    sid = _post(chat_api, "/v1/chat/sessions", {}, key).json()["session_id"]  # type: ignore[attr-defined]
    outcomes: dict[str, list[bool]] = {"chat": [], "chat route": [], "feedback route": []}
    for kind, value in CASES:
        try:
            chat.feedback(session.id, item, kind, value)  # type: ignore[arg-type]
            outcomes["chat"].append(True)
        except ConfigError as exc:
            assert exc.field in ("kind", "value") and exc.fix, exc
            outcomes["chat"].append(False)
        body: dict[str, object] = {"item_id": item, "kind": kind, "value": value}
        for path, url in (("chat route", f"/v1/chat/sessions/{sid}/feedback"), ("feedback route", "/v1/feedback")):
            response = _post(chat_api, url, body, key)
            status = response.status_code  # type: ignore[attr-defined]
            assert status in (200, 201, 400, 422), response.text  # type: ignore[attr-defined]
            if status == 400:  # the shared validator's answer names the field and the fix
                error = response.json()["error"]  # type: ignore[attr-defined]
                assert error["field"] in ("kind", "value") and error["fix"], error
                assert error["fields"][0]["loc"] == [error["field"]]
            outcomes[path].append(status < 300)
    expected = [(kind, value) in ACCEPTED for kind, value in CASES]
    assert outcomes == {path: expected for path in outcomes}


def test_the_validator_reads_the_dataset_scale() -> None:
    assert validate_feedback("rating", 0.2, (0.0, 1.0)) == 0.2
    assert validate_feedback("seen") == 3.0
    for bad in (1.5, math.inf, "4", True):
        with pytest.raises(ConfigError) as err:
            validate_feedback("rating", bad, (0.0, 1.0))
        assert err.value.field == "value" and "from 0 to 1" in str(err.value)
    with pytest.raises(ConfigError, match="not a kind of feedback. Fix: use one of thumbs_up") as err:
        validate_feedback("like", None)
    assert err.value.field == "kind"
