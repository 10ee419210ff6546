"""Fixtures for the encode layer: stores on SQLite and PostgreSQL, a counting fake encoder, the real encoder.

PostgreSQL comes from ``LLMREC_TEST_PG_URL`` (``export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)``), via the
``database_url`` fixture of tests/conftest.py: skipped without it, a failure under CI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from encode_fakes import CountingEncoder

from llmrec.data.store import Store
from llmrec.encode.cache import EmbeddingCache
from llmrec.encode.encoder import TextEncoder


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def cache(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> Iterator[EmbeddingCache]:
    """An embedding cache in a store (SQLite, PostgreSQL) or in memory."""
    if request.param == "memory":
        yield EmbeddingCache(None)
        return
    with Store(database_url(request.param)) as opened:
        yield EmbeddingCache(opened)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as opened:
        yield opened


@pytest.fixture
def fake() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """The real packaged MiniLM (torch backend); loads once per process."""
    return TextEncoder()
