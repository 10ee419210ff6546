"""Single-record store access (items, users, a user's recent interactions, API keys) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.errors import ConfigError, DataValidationError

NameFactory = Callable[[], str]


@pytest.fixture
def stored(store: Store, ml_sample: Dataset, new_name: NameFactory) -> str:
    name = new_name()
    store.ingest(ml_sample, name=name)
    return name


def test_get_page_and_search_items(store: Store, stored: str, ml_sample: Dataset) -> None:
    first = ml_sample.items.iloc[0]
    item = store.get_item(stored, str(first["item_id"]))
    assert item is not None and item.title == first["title"] and item.attributes["year"] == first["year"]
    assert store.get_item(stored, "no-such-item") is None

    page = store.list_items(stored, offset=5, limit=7)
    assert page.total == ml_sample.n_items and len(page.records) == 7 and page.next_offset == 12
    assert [r.item_id for r in page.records] == [str(i) for i in ml_sample.items["item_id"].iloc[5:12]]
    last = store.list_items(stored, offset=page.total - 2, limit=7)
    assert len(last.records) == 2 and last.next_offset is None

    titles = ml_sample.items["title"].astype(str)
    low = titles.str.lower()
    assert (ml_sample.items["text"] == "").all()  # MovieLens items have titles only: the search reads the titles
    expected = set(ml_sample.items.loc[low.str.contains("star") & low.str.contains("wars"), "item_id"])
    found = store.list_items(stored, query="STAR wars", limit=1000)
    assert expected and {r.item_id for r in found.records} == expected and found.total == len(expected)
    # LIKE wildcards in the query are literal characters, not patterns.
    assert store.list_items(stored, query="%").total == titles.str.contains("%", regex=False).sum()
    assert store.list_items(stored, query="_").total == titles.str.contains("_", regex=False).sum()
    with pytest.raises(ConfigError, match="limit"):
        store.list_items(stored, limit=0)


def test_add_update_delete_item(store: Store, stored: str, ml_sample: Dataset) -> None:
    n = store.counts(stored)["items"]
    assert store.add_item(stored, "new-1", "A New Film (2030)", "a film", {"genres": "Drama", "year": 2030})
    assert not store.add_item(stored, "new-1", "again")  # already stored: nothing changes
    assert store.get_item(stored, "new-1").title == "A New Film (2030)"  # type: ignore[union-attr]
    assert store.counts(stored)["items"] == n + 1
    with pytest.raises(DataValidationError, match="item_id"):
        store.add_item(stored, "  ")
    with pytest.raises(ConfigError, match="title"):
        store.add_item(stored, "new-2", attributes={"title": "x"})

    updated = store.update_item(stored, "new-1", text="now with text", attributes={"year": None, "mood": "calm"})
    assert updated is not None and updated.title == "A New Film (2030)" and updated.text == "now with text"
    assert updated.attributes == {"genres": "Drama", "mood": "calm"}
    assert store.get_item(stored, "new-1") == updated
    assert store.update_item(stored, "missing", title="x") is None

    victim = str(ml_sample.interactions["item_id"].iloc[0])
    assert store.delete_item(stored, victim) and not store.delete_item(stored, victim)
    loaded = store.load(stored)
    assert victim not in loaded.item_vocab  # its interactions went with it
    assert len(loaded) == len(ml_sample) - (ml_sample.interactions["item_id"] == victim).sum()
    # The new item is at the end of the catalogue order.
    assert loaded.items["item_id"].iloc[-1] == "new-1"


def test_users_and_recent_interactions(store: Store, stored: str, ml_sample: Dataset) -> None:
    user = str(ml_sample.users["user_id"].iloc[3])
    assert store.get_user(stored, user) is not None and store.get_user(stored, "nobody") is None
    assert store.add_user(stored, "new-user", "likes quiet films", {"country": "NZ"})
    assert not store.add_user(stored, "new-user")
    record = store.get_user(stored, "new-user")
    assert record is not None and record.profile == "likes quiet films" and record.attributes == {"country": "NZ"}
    page = store.list_users(stored, limit=1000)
    assert page.total == ml_sample.n_users + 1 and page.records[-1].user_id == "new-user"

    history = store.user_interactions(stored, user)
    own = ml_sample.interactions[ml_sample.interactions["user_id"] == user]
    assert len(history) == len(own) and history["timestamp"].is_monotonic_increasing
    assert list(history.columns) == ["id", "user_id", "item_id", "timestamp", "value", "event"]
    cut = int(own["timestamp"].median())
    assert len(store.user_interactions(stored, user, since=cut)) == (own["timestamp"] >= cut).sum()

    marker = store.last_interaction_id(stored)
    assert marker > 0 and store.user_interactions(stored, user, after_id=marker).empty
    new = pd.DataFrame({"user_id": [user, "other"], "item_id": ["i-x", "i-y"], "timestamp": [5, 6], "event": "seen"})
    store.ingest_interactions(stored, new)
    fresh = store.user_interactions(stored, user, after_id=marker)
    assert fresh["item_id"].tolist() == ["i-x"] and fresh["event"].tolist() == ["seen"]
    assert store.last_interaction_id(stored) > marker
    assert store.last_interaction_id("no-such-dataset") == 0


def test_api_keys(store: Store, stored: str, new_name: NameFactory) -> None:
    digest = hashlib.sha256(b"secret-1").hexdigest()
    record = store.add_api_key("k1" + stored, digest, stored, "7")
    assert record.active and record.user_id == "7" and record.role == "user"
    assert store.api_key_by_hash(digest) == record
    assert store.api_key_by_hash(hashlib.sha256(b"other").hexdigest()) is None
    other = new_name()  # a dataset that does not exist yet is created for the key
    store.add_api_key("k2" + stored, hashlib.sha256(b"secret-2").hexdigest(), other, "7")
    assert [k.key_id for k in store.api_keys(stored)] == ["k1" + stored]
    assert store.api_keys(stored, "8") == []
    assert store.revoke_api_key(stored, "k1" + stored) and not store.revoke_api_key(stored, "k1" + stored)
    revoked = store.api_key_by_hash(digest)
    assert revoked is not None and not revoked.active
    assert not store.revoke_api_key(other, "k1" + stored)  # keys are revoked within their own dataset
    store.delete_dataset(stored)
    assert store.api_key_by_hash(digest) is None


def test_a_fresh_store_used_from_many_threads_at_once_migrates_once(tmp_path: Path) -> None:
    # A server's request threads all hit a new store at once; alembic's global context made them fail (503).
    from concurrent.futures import ThreadPoolExecutor

    from llmrec.chat import ChatSession, SqlSessionStore

    url = f"sqlite:///{tmp_path / 'threads.db'}"
    stores = [Store(url), Store(url)]
    sessions = [SqlSessionStore(stores[0]), SqlSessionStore(stores[1])]

    def work(i: int) -> str:
        session = ChatSession(id=f"s{i}", dataset="d", user_id=None)
        sessions[i % 2].save(session)
        stores[i % 2].user_events("d", "u", after_id=0)
        return sessions[(i + 1) % 2].load(f"s{i}").id

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(16))) == sorted(f"s{i}" for i in range(16))
