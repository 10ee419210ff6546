"""The model-backed options over HTTP: semantic item search (packaged encoder) and the language-model rerank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from api_support import ADMIN, serve_config
from fastapi.testclient import TestClient

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app

ITEMS = {
    "space": "Astronauts fly a rocket to Mars and explore distant planets among the stars",
    "cook": "A chef opens a small restaurant and cooks pasta and bread for her village",
    "horse": "Cowboys ride horses across the desert to drive cattle to market",
    "sea": "A submarine crew dives deep under the ocean waves",
    "court": "Lawyers argue a murder trial before a judge and jury",
}


def test_semantic_search_finds_items_by_meaning(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": list(ITEMS), "title": [k.title() for k in ITEMS], "text": list(ITEMS.values())})
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["space", "sea", "cook"], "timestamp": [1, 2, 3]})
    store = Store(f"sqlite:///{tmp_path / 'sem.db'}")
    store.ingest(Dataset(inter, items, name="tiny"))
    client = TestClient(create_app(RecommenderService(store, serve_config("tiny"))), raise_server_exceptions=False)
    for query, best in (("a trip to outer space", "space"), ("baking and cooking food", "cook"), ("western", "horse")):
        response = client.get("/v1/items", params={"q": query, "mode": "semantic", "limit": 3}, headers=ADMIN)
        assert response.status_code == 200, response.text
        hits = response.json()["items"]
        assert hits[0]["item_id"] == best, (query, hits)
        assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    # The plain text mode matches words, so the same query finds nothing there.
    assert client.get("/v1/items", params={"q": "outer space"}, headers=ADMIN).json()["total"] == 0
    client.delete("/v1/items/space", headers=ADMIN)
    after = client.get("/v1/items", params={"q": "outer space", "mode": "semantic", "limit": 5}, headers=ADMIN).json()
    assert "space" not in [h["item_id"] for h in after["items"]]
    # A huge offset neither allocates offset + limit slots nor reaches the database: empty page or 422.
    far = client.get("/v1/items", params={"q": "ocean", "mode": "semantic", "offset": 10**9}, headers=ADMIN)
    assert far.status_code == 200 and far.json()["items"] == [], far.text
    past = client.get("/v1/items", params={"q": "ocean", "mode": "semantic", "offset": 3, "limit": 1000}, headers=ADMIN)
    assert past.status_code == 200 and len(past.json()["items"]) == 1  # four items left: one after the first three
    for url, params in (("/v1/items", {"offset": 2**63}), ("/v1/users", {"offset": 10**30})):
        assert client.get(url, params=params, headers=ADMIN).status_code == 422, (url, params)
    assert client.get("/v1/users/u1/interactions", params={"since": 10**20}, headers=ADMIN).status_code == 422


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_lm_rerank_reorders_the_retrievers_candidates(tmp_path: Path, ml_sample: Dataset, lm: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lm.db'}")
    store.ingest(ml_sample, name="sample")
    service = RecommenderService(store, serve_config("sample"), lm=lm)
    client = TestClient(create_app(service), raise_server_exceptions=False)
    user = str(ml_sample.user_vocab.ids[0])
    url = f"/v1/users/{user}/recommendations"
    candidates = service.pipeline().config.candidates  # the rerank stage sees this many of the retriever's top
    retrieved = client.get(url, params={"k": 20}, headers=ADMIN).json()
    reranked = client.get(url, params={"k": 10, "rerank": True}, headers=ADMIN)
    assert reranked.status_code == 200, reranked.text
    body = reranked.json()
    ids = [i["item_id"] for i in body["items"]]
    assert body["reranked"] and len(ids) == 10
    assert set(ids) <= {i["item_id"] for i in retrieved["items"][:20]} and candidates >= 20
    assert ids != [i["item_id"] for i in retrieved["items"][:10]]  # the language model changed the order
    too_long = client.get(url, params={"k": 21, "rerank": True}, headers=ADMIN)
    assert too_long.status_code == 400 and too_long.json()["error"]["fields"][0]["loc"] == ["k"]
