"""Helpers of the API tests: the admin key, a client with its service, the test serve config."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from fastapi.testclient import TestClient

from llmrec.data.dataset import Dataset
from llmrec.pipeline import PipelineConfig, RetrieverSpec
from llmrec.serve import RecommenderService, ServeConfig

ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Api:
    """A test client, its service, and helpers to make user keys."""

    client: TestClient
    service: RecommenderService
    data: Dataset

    def user_key(self, user_id: str) -> dict[str, str]:
        response = self.client.post("/v1/keys", json={"user_id": user_id}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['key']}"}


def serve_config(name: str, **overrides: object) -> ServeConfig:
    values: dict[str, object] = {
        "dataset": name,
        "admin_key": ADMIN_KEY,
        "pipeline": PipelineConfig(retriever=RetrieverSpec(name="popular"), rerank=None, explain_with_lm=False),
        "retrievers": ("popular", "itemknn", "ease"),
        "max_request_bytes": 64 * 1024,
        # A loaded CI machine can take minutes to build the chat's text index: the tests bound it, not the clock.
        "request_timeout_s": 1800.0,
    }
    values.update(overrides)
    return ServeConfig.model_validate(values)


_TITLES = ["Space Trip", "Kitchen Tale", "Desert Ride", "Deep Sea", "Court Room", "Night City", "Jungle Run"]


def tiny_dataset(name: str = "tiny") -> Dataset:
    """Seven items, five users: the text encoder embeds it in a blink, so chat and semantic search stay cheap."""
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, len(_TITLES) + 1)],
            "title": _TITLES,
            "text": [f"{t}: a film about {t.lower()}" for t in _TITLES],
            "genres": [["Comedy"], ["Drama"], ["Western"], ["Adventure"], ["Drama"], ["Crime"], ["Adventure"]],
            "year": [1990, 1995, 1970, 2001, 1985, 2010, 1999],
        }
    )
    pairs = [(u, i) for u in range(1, 6) for i in range(1, 8) if (u + i) % 3]
    inter = pd.DataFrame([(u, i, t) for t, (u, i) in enumerate(pairs)], columns=["user_id", "item_id", "timestamp"])
    return Dataset(inter.astype({"user_id": str, "item_id": str}), items, name=name)
