"""Fixtures for the encode layer: stores on SQLite and PostgreSQL, a counting fake encoder, the real encoder.

PostgreSQL comes from ``LLMREC_TEST_PG_URL`` (``export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)``), as in
``tests/data/conftest.py``: skipped without it, a failure under CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from encode_fakes import CountingEncoder

from llmrec.data.store import Store
from llmrec.encode.cache import EmbeddingCache
from llmrec.encode.encoder import TextEncoder


def postgres_url() -> str:
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


def _url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'llmrec.db'}" if kind == "sqlite" else postgres_url()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a fresh SQLite file, or the shared test PostgreSQL database."""
    return _url(request.param, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddingCache]:
    """An embedding cache in a store (SQLite, PostgreSQL) or in memory."""
    if request.param == "memory":
        yield EmbeddingCache(None)
        return
    with Store(_url(request.param, tmp_path)) as opened:
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
