"""Fixtures for the file readers and the store: a store on SQLite and one on PostgreSQL.

PostgreSQL comes from ``LLMREC_TEST_PG_URL`` (``export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)``). Without
it the PostgreSQL cases are skipped, except under CI (``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmrec.data.store import Store


def postgres_url() -> str:
    """The test PostgreSQL URL; skips (or fails under CI) when it is not configured."""
    url = os.environ.get("LLMREC_TEST_PG_URL", "").strip()
    if not url:
        message = (
            "LLMREC_TEST_PG_URL is not set: run `export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)` to start "
            "PostgreSQL on loopback"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a fresh SQLite file, or the shared test PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'llmrec.db'}"
    return postgres_url()


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
