"""Text at rest: profiles and chat messages stored scrubbed, raw text only encrypted (Fernet), the log filter."""

from __future__ import annotations

import io
import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from llmrec.chat import ConversationalRecommender
from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.errors import ConfigError
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
from llmrec.privacy import KEY_ENV, PiiLogFilter, TextProtection, export_user, install_log_scrubbing
from llmrec.text import CleanConfig, UserTextConfig, user_text
from required import require

require("cryptography")

RAW = "I'm at 221B Baker Street, London NW1 6XE; mail jane.doe@example.com, card 4111 1111 1111 1111"
SCRUBBED = "I'm at [ADDRESS]; mail [EMAIL], card [CARD]"


@pytest.fixture(scope="module")
def pipe(ml_sample: Dataset) -> Pipeline:
    config = PipelineConfig(retriever=RetrieverSpec(name="itemknn"), candidates=20, rerank=None)
    return Pipeline(config).fit(ml_sample)


def test_default_stores_only_the_scrubbed_text() -> None:
    stored = TextProtection().protect(RAW)
    assert stored.text == SCRUBBED and stored.raw is None
    assert stored.counts["email"] == 1 and stored.counts["card"] == 1 and stored.counts["address"] == 1
    assert TextProtection().protect("likes noir").text == "likes noir"


def test_raw_text_needs_a_key_and_is_encrypted_with_it() -> None:
    with pytest.raises(ConfigError) as info:
        TextProtection(keep_raw=True)
    assert info.value.field == KEY_ENV
    with pytest.raises(ConfigError):
        TextProtection(keep_raw=True, key="not-a-fernet-key")
    key = TextProtection.generate_key()
    protection = TextProtection(keep_raw=True, key=key)
    stored = protection.protect(RAW)
    assert stored.text == SCRUBBED and stored.raw is not None
    assert "jane" not in stored.raw and "4111" not in stored.raw and "Baker" not in stored.raw
    assert protection.decrypt(stored.raw) == RAW
    assert protection.protect("likes noir").raw is None  # nothing scrubbed: nothing raw to keep
    other = TextProtection(key=TextProtection.generate_key())
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        other.decrypt(stored.raw)
    rotated = TextProtection(key=f"{TextProtection.generate_key()},{key}")  # a new key first, the old one after
    assert rotated.decrypt(stored.raw) == RAW


def test_settings_choose_raw_text_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmrec.config import Settings

    key = TextProtection.generate_key()
    monkeypatch.setenv("LLMREC_KEEP_RAW_TEXT", "1")
    monkeypatch.setenv(KEY_ENV, key)
    protection = TextProtection.from_settings(Settings())
    assert protection.keep_raw and protection.decrypt(protection.protect(RAW).raw or "") == RAW
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError):
        TextProtection.from_settings(Settings())


@pytest.mark.parametrize("keep_raw", [False, True])
def test_store_keeps_profiles_scrubbed_and_raw_only_encrypted(tmp_path: object, keep_raw: bool) -> None:
    key = TextProtection.generate_key()
    protection = TextProtection(keep_raw=keep_raw, key=key if keep_raw else None)
    store = Store(f"sqlite:///{tmp_path}/s.db", protection=protection)
    store.ingest_interactions("d", pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "timestamp": [1]}))
    store.add_user("d", "u1", RAW)
    store.ingest_users("d", pd.DataFrame({"user_id": ["u2"], "profile": [RAW]}))
    assert store.get_user("d", "u1").profile == SCRUBBED  # type: ignore[union-attr]
    assert list(store.load("d").users["profile"]) == [SCRUBBED, SCRUBBED]
    with store.engine.connect() as conn:
        raws = conn.execute(sa.text("SELECT profile_raw FROM users ORDER BY user_id")).scalars().all()
        dump = "\n".join(conn.execute(sa.text("SELECT profile || coalesce(profile_raw, '') FROM users")).scalars())
    assert "jane.doe" not in dump and "4111" not in dump and "Baker Street" not in dump
    assert all(r is not None for r in raws) if keep_raw else raws == [None, None]
    exported = export_user(store, "d", "u1", actor="cli")["profile"]
    assert exported["profile"] == SCRUBBED
    assert exported["profile_raw"] == (RAW if keep_raw else None)
    assert exported["raw_stored_encrypted"] is keep_raw
    if keep_raw:  # a server without the key still exports, and says the raw text exists
        keyless = Store(f"sqlite:///{tmp_path}/s.db", protection=TextProtection())
        again = export_user(keyless, "d", "u1", actor="cli")["profile"]
        assert again["profile_raw"] is None and again["raw_stored_encrypted"] is True


def test_chat_scrubs_the_message_as_typed_before_parsing(pipe: Pipeline) -> None:
    key = TextProtection.generate_key()
    chat = ConversationalRecommender(pipe, protection=TextProtection(keep_raw=True, key=key))
    session = chat.start()
    message = "something funny, mail me at jane.doe@example.com or ring 415-555-2671, I live at 10 Downing Street"
    reply = chat.turn(session.id, message)
    assert reply.intent == "recommend" and reply.state.genres_include == ["Comedy"]
    # Before the fix the parser split the address into words: "jane", "doe", "example", "com" became the query.
    query = (reply.state.query or "").lower()
    for fragment in ("jane", "doe", "example", "555", "2671", "downing", "email", "address", "phone"):
        assert fragment not in query
    assert reply.state.liked == []
    # Unscrubbed, "SW1A 2AA" was read as a title the person liked (and then cited in every explanation).
    postcode = chat.turn(session.id, "a thriller please, I live at 10 Downing Street, London SW1A 2AA")
    assert postcode.state.liked == [] and "SW" not in (postcode.state.query or "")
    stored = chat.session(session.id).turns[0]
    assert stored.text == "something funny, mail me at [EMAIL] or ring [PHONE], I live at [ADDRESS]"
    assert stored.raw is not None and chat.protection.decrypt(stored.raw) == message
    plain = ConversationalRecommender(pipe)  # no store, no key: scrubbed only
    session = plain.start()
    plain.turn(session.id, message)
    assert plain.session(session.id).turns[0].raw is None


def test_user_text_scrubs_before_cleaning(ml_sample: Dataset) -> None:
    users = pd.DataFrame({"user_id": ["1"], "profile": ["write to jane&#64;example.com <b>or</b> call 415-555-2671"]})
    data = Dataset(ml_sample.interactions, ml_sample.items, users, validate=False)
    config = UserTextConfig(include_history=False, clean=CleanConfig())
    text = user_text(data, "1", config=config)
    assert "jane" not in text and "example.com" not in text and "555" not in text and "[PHONE]" in text


def test_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("llmrec.test_privacy_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        installed = install_log_scrubbing([logger])
        assert install_log_scrubbing([logger]) is installed and handler.filters == [installed]
        logger.info("profile of %s: %s", "u1", RAW)
        try:
            raise ValueError(f"bad row: {RAW}")
        except ValueError:
            logger.exception("ingest failed for card %s", "4111-1111-1111-1111")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out = stream.getvalue()
    assert "profile of u1: " + SCRUBBED in out and "ValueError: bad row: " + SCRUBBED in out
    for fragment in ("jane.doe", "4111", "Baker Street", "NW1 6XE"):
        assert fragment not in out
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "mail %s", ("a@b.io",), None)
    assert PiiLogFilter().filter(record) and record.getMessage() == "mail [EMAIL]"


def test_server_log_config_scrubs_access_lines_and_keeps_their_arguments() -> None:
    import logging.config

    from llmrec.privacy.logs import uvicorn_log_config

    config = uvicorn_log_config()
    assert all("pii" in h["filters"] for h in config["handlers"].values())
    stream = io.StringIO()
    config["handlers"]["access"]["stream"] = stream
    saved = {name: logging.getLogger(name).handlers[:] for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    try:
        logging.config.dictConfig(config)
        access = logging.getLogger("uvicorn.access")
        path = "/v1/users/jane.doe@example.com/export"
        access.info('%s - "%s %s HTTP/%s" %d', "198.51.100.7:5123", "GET", path, "1.1", 200)
    finally:
        for name, handlers in saved.items():
            logging.getLogger(name).handlers[:] = handlers
    line = stream.getvalue()
    assert '"GET [EMAIL]' in line and " 200" in line and "[IP]:5123" in line  # uvicorn's formatter still ran
    assert "jane" not in line and "198.51.100.7" not in line


def test_a_deletion_can_drop_every_kept_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from collections import OrderedDict
    from types import SimpleNamespace

    from llmrec.llm import local
    from llmrec.llm.local import loading

    kept = OrderedDict({(1, 2, 3): "prompt of a user", (4, 5): "another"})
    fake = SimpleNamespace(lock=threading.RLock(), prompt_cache=kept)
    monkeypatch.setattr(loading, "_LOADED", {("m", "cpu", None, "fp32"): fake})
    assert local.clear_prompt_caches() == 2 and not kept
