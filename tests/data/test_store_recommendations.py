"""The store's ``recommendations`` table: batch runs written in one transaction, replaced by name, read back."""

from __future__ import annotations

import pandas as pd
import pytest

from llmrec.data.store import Store
from llmrec.errors import ConfigError, StoreError


def _frame(users: list[str], k: int) -> pd.DataFrame:
    rows = [(u, r, f"i{r * 7 % 11}", 1.0 / r + 1e-17 * r) for u in users for r in range(1, k + 1)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def test_write_read_and_replace_by_run_name(store: Store) -> None:
    first = _frame(["b", "a", "c"], 3)
    assert store.replace_recommendations("test-run-1", "ds", [first.iloc[:4], first.iloc[4:]]) == 9
    got = store.recommendations("test-run-1")
    want = first.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.astype({"user_id": object, "item_id": object}), check_exact=True)
    store.replace_recommendations("test-run-1", "ds", [_frame(["z"], 2)])
    assert list(store.recommendations("test-run-1")["user_id"]) == ["z", "z"]
    store.replace_recommendations("test-run-1", "ds", [])  # an empty run leaves nothing behind
    with pytest.raises(ConfigError, match="no recommendations of run 'test-run-1'"):
        store.recommendations("test-run-1")


def test_a_failed_write_keeps_the_earlier_run(store: Store) -> None:
    store.replace_recommendations("test-run-2", "ds", [_frame(["a"], 2)])
    bad = _frame(["b"], 2)
    duplicate = pd.concat([bad, bad])  # the same (run, user, rank) twice: the primary key refuses it
    with pytest.raises(StoreError, match="rolled back"):
        store.replace_recommendations("test-run-2", "ds", [duplicate])
    assert list(store.recommendations("test-run-2")["user_id"]) == ["a", "a"]
    store.replace_recommendations("test-run-2", "ds", [])
