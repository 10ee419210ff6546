"""Datasets by name: the CLI sees the store's copy (what the server serves); evaluation keeps the bundled one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.registry import load_named
from llmrec.data.store import Store
from llmrec.errors import ConfigError


def test_the_stores_copy_of_a_builtin_name_wins_unless_evaluation_asks_for_the_bundled_one(
    ml_sample: Dataset, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.ingest(ml_sample, name="movielens-small")
    # A user added through the API after the ingest.
    late = pd.DataFrame([{"user_id": "api-user", "item_id": ml_sample.item_vocab.id(0), "timestamp": 2_000_000_000}])
    store.ingest_interactions("movielens-small", late)
    served = load_named("movielens-small", url)
    assert "api-user" in served.user_vocab and served.n_users == ml_sample.n_users + 1
    bundled = load_named("movielens-small", url, prefer_store=False)
    assert "api-user" not in bundled.user_vocab and bundled.n_users == 610
    # A built-in name never ingested loads the bundled copy; an unknown name says what is known.
    assert load_named("movielens-small", f"sqlite:///{tmp_path / 'empty.db'}").n_users == 610
    with pytest.raises(ConfigError, match="movielens-small"):
        load_named("no-such-data", url)
