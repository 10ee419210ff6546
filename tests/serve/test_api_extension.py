"""The service's seams: lazy fits happen once under concurrent requests, and more routers plug into /v1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from api_support import ADMIN, serve_config
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.serve import RecommendationOptions, RecommenderService, create_app
from llmrec.serve.deps import Caller, ServiceDep


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_concurrent_first_requests_fit_once(tmp_path: Path, ml_sample: Dataset) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    store.ingest(ml_sample, name="sample")
    service = RecommenderService(store, serve_config("sample"))
    fits: list[str] = []
    real_fit = service._fit

    def counting_fit(*args: object) -> object:
        fits.append(str(args[1]))
        time.sleep(0.3)  # a slow fit: every other request arrives while it runs
        return real_fit(*args)  # type: ignore[arg-type]

    service._fit = counting_fit  # type: ignore[method-assign]
    users = [str(u) for u in ml_sample.user_vocab.ids[:6]]
    results: dict[str, list[str]] = {}
    start = threading.Barrier(len(users))

    def ask(user: str) -> None:
        start.wait()
        result = service.recommend(user, RecommendationOptions(k=5, retriever="itemknn"))
        results[user] = [item.item_id for item in result.items]

    threads = [threading.Thread(target=ask, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fits == ["itemknn"] and sorted(results) == sorted(users)
    assert all(len(ids) == 5 for ids in results.values())
    assert service.status().pipelines == ["itemknn"]


class Echo(BaseModel):
    dataset: str
    caller: str | None
    top: list[str]


def test_more_routers_plug_in_under_v1(tmp_path: Path, ml_sample: Dataset) -> None:
    router = APIRouter(prefix="/chat", tags=["chat"])

    @router.get("/echo", response_model=Echo)
    def echo(service: ServiceDep, caller: Caller) -> Echo:
        user = str(ml_sample.user_vocab.ids[0])
        top = [i.item_id for i in service.recommend(user, RecommendationOptions(k=3)).items]
        return Echo(dataset=service.dataset, caller=caller.user_id, top=top)

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.ingest(ml_sample, name="sample")
    app = create_app(RecommenderService(store, serve_config("sample")), routers=[router])
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/v1/chat/echo", headers=ADMIN)
    assert response.status_code == 200 and response.json()["dataset"] == "sample" and len(response.json()["top"]) == 3
    assert client.get("/v1/chat/echo").status_code == 401  # the shared auth applies
    assert "/v1/chat/echo" in client.get("/openapi.json").json()["paths"]
