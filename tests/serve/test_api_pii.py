"""Personal data pushed through ingest, the API, chat and explanations never reaches a prompt-facing column, a log
line or a response (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from api_support import ADMIN, Api

from llmrec.privacy import install_log_scrubbing
from llmrec.text import UserTextConfig, user_text

# Personal data of the kinds the scrubber detects, and the fragments of each that must never show up.
PERSONAL = (
    "Jane here. Mail jane.doe42@mailbox-example.org or call +44 20 7946 0958 / (415) 555-2671. "
    "I live at 221B Baker Street, London NW1 6XE. Card 4111 1111 1111 1111, SSN 219-09-9999, "
    "IBAN GB82 WEST 1234 5698 7654 32, server 203.0.113.77."
)
FRAGMENTS = (
    "jane.doe42",
    "mailbox-example",
    "7946 0958",
    "555-2671",
    "Baker Street",
    "NW1 6XE",
    "4111 1111",
    "4111111111111111",
    "219-09-9999",
    "GB82",
    "5698 7654",
    "203.0.113.77",
)


def _leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(chat_text_search=False)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything llmrec logs (INFO and up) during the test, through a handler with the scrubbing filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root, package = logging.getLogger(), logging.getLogger("llmrec")
    root.addHandler(handler)
    level = package.level
    package.setLevel(logging.INFO)
    install_log_scrubbing([root])
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        package.setLevel(level)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_personal_data_reaches_no_prompt_column_log_or_response(
    api: Api, tmp_path: Path, log_output: io.StringIO
) -> None:
    client, service, store = api.client, api.service, api.service.store
    dataset = service.dataset
    items = [str(i) for i in api.data.item_vocab.ids[:6]]
    responses: list[str] = []

    # 1. Ingest: a users file and a data frame, both with profiles full of personal data.
    (tmp_path / "users.csv").write_text(
        "user_id,profile\npii-file," + '"' + PERSONAL.replace('"', '""') + '"\n', encoding="utf-8"
    )
    (tmp_path / "inter.csv").write_text(
        "user_id,item_id,timestamp\n" + "".join(f"pii-file,{i},{1_700_000_000 + n}\n" for n, i in enumerate(items)),
        encoding="utf-8",
    )
    store.ingest_files(dataset, tmp_path / "inter.csv", users_path=tmp_path / "users.csv")
    store.ingest_users(dataset, pd.DataFrame({"user_id": ["pii-frame"], "profile": [PERSONAL]}))

    # 2. The API: a user created with that profile, interactions, then a refit so all three are fitted users.
    created = client.post("/v1/users", json={"user_id": "pii-api", "profile": PERSONAL}, headers=ADMIN)
    assert created.status_code == 201
    responses.append(created.text)
    rows = [
        {"user_id": u, "item_id": i, "timestamp": 1_700_000_000 + n, "value": 4.5}
        for u in ("pii-frame", "pii-api")
        for n, i in enumerate(items)
    ]
    assert client.post("/v1/interactions", json={"interactions": rows}, headers=ADMIN).status_code == 200
    assert client.post("/v1/admin/refit", headers=ADMIN).status_code == 200
    for user in ("pii-file", "pii-frame", "pii-api"):
        got = client.get(f"/v1/users/{user}", headers=ADMIN)
        assert got.status_code == 200 and "[EMAIL]" in got.json()["profile"]
        responses.append(got.text)
        # 3. Explanations.
        listed = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": True}, headers=ADMIN)
        assert listed.status_code == 200 and listed.json()["items"][0]["explanation"] is not None
        responses.append(listed.text)
        # Prompt-facing text: what embeddings and language-model prompts read of the user.
        text = user_text(service.data, user, config=UserTextConfig(include_history=True))
        assert "[EMAIL]" in text and _leaks(text) == [], text
    responses.append(client.get("/v1/users", params={"offset": 0, "limit": 1000}, headers=ADMIN).text)

    # 4. Chat: a message full of personal data, answered, streamed and read back.
    key = api.user_key("pii-api")
    session = client.post("/v1/chat/sessions", json={}, headers=key).json()["session_id"]
    for path in ("reply", "messages"):
        answer = client.post(f"/v1/chat/sessions/{session}/{path}", json={"text": f"a comedy? {PERSONAL}"}, headers=key)
        assert answer.status_code == 200, answer.text
        responses.append(answer.text)
    read = client.get(f"/v1/chat/sessions/{session}", headers=key)
    assert "[EMAIL]" in read.json()["turns"][0]["text"]
    responses.append(read.text)
    responses.append(client.get("/v1/users/pii-api/export", headers=key).text)

    # A positive control: a log record quoting the personal data outright.
    logging.getLogger("llmrec.test").warning("a careless log line: %s", PERSONAL)

    for body in responses:
        assert _leaks(body) == [], body[:2000]
    logs = log_output.getvalue()
    assert "a careless log line: Jane here. Mail [EMAIL]" in logs
    assert _leaks(logs) == [], logs
    store.ensure_migrated()
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for column in sa.Table(table, sa.MetaData(), autoload_with=conn).columns:
                if not isinstance(column.type, sa.String | sa.JSON):  # text and JSON columns hold what people wrote
                    continue
                values = conn.execute(sa.select(sa.cast(column, sa.Text))).scalars()
                leaked = [v for v in values if v and _leaks(v)]
                assert leaked == [], (table, column.name, leaked[:3])
