"""An API over a fresh store dataset (the MovieLens sample) on SQLite and PostgreSQL, with an admin key."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from api_support import Api, serve_config
from fastapi.testclient import TestClient

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app


@pytest.fixture
def make_api(store_url: str, ml_sample: Dataset) -> Iterator[Callable[..., Api]]:
    """Builds APIs over fresh copies of the sample (deleted afterwards: the PostgreSQL database is shared)."""
    names: list[str] = []
    store = Store(store_url)

    def make(**overrides: object) -> Api:
        names.append(f"api-{uuid.uuid4().hex[:12]}")
        store.ingest(ml_sample, name=names[-1])
        service = RecommenderService(store, serve_config(names[-1], **overrides))
        client = TestClient(create_app(service), raise_server_exceptions=False)
        return Api(client, service, ml_sample)

    yield make
    for name in names:
        store.delete_dataset(name)
    store.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
