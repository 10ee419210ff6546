"""Fixtures for the file readers and the store: a store on SQLite and one on PostgreSQL.

PostgreSQL comes from ``LLMREC_TEST_PG_URL`` (``export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)``). Without
it the PostgreSQL cases are skipped, except under CI (``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from llmrec.data.store import Store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on each database."""
    with Store(store_url) as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def new_name(store: Store) -> Iterator[Callable[[], str]]:
    """Makes dataset names no other test uses, and deletes those datasets afterwards (PostgreSQL is shared)."""
    made: list[str] = []

    def make() -> str:
        made.append(f"test-{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    for name in made:
        store.delete_dataset(name)
