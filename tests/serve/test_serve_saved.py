"""The API started from a saved pipeline (``llmrec serve --model DIR``): it answers without fitting anything."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from api_support import ADMIN, ADMIN_KEY
from fastapi.testclient import TestClient

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.errors import ConfigError
from llmrec.models.base import Scorer
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
from llmrec.serve import RecommenderService, ServeConfig, create_app

NAME = "saved-sample"


def test_service_from_a_saved_dir_answers_without_fitting(
    ml_sample: Dataset, database_url: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(database_url("sqlite"))
    store.ingest(ml_sample, name=NAME)
    config = PipelineConfig(retriever=RetrieverSpec(name="itemknn", config={"k_neighbors": 20}), rerank=None)
    pipe = Pipeline(config).fit(store.load(NAME))
    folder = pipe.save(tmp_path / "model", metadata={"store_marker": store.last_interaction_id(NAME)})
    user = str(ml_sample.user_vocab.ids[0])
    expected = [item for item, _ in pipe.reconfigured(config.model_copy(update={"candidates": 100})).recommend(
        [user], k=7).for_user(user)]  # fmt: skip

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a service started from a saved model must not fit")

    monkeypatch.setattr(Scorer, "fit", no_fit)
    settings = ServeConfig.for_model(folder, admin_key=ADMIN_KEY)
    assert settings.dataset == NAME and settings.pipeline.retriever == config.retriever and settings.model
    service = RecommenderService(store, settings)
    client = TestClient(create_app(service, warm=True), raise_server_exceptions=False)
    with client:  # runs the startup (warm) hook, which loads the saved pipeline
        status = service.status()
        assert status.loaded and status.pipelines == ["itemknn"]
        assert status.fitted_at is not None and status.fitted_at.isoformat() == pipe.fitted_at
        response = client.get(f"/v1/users/{user}/recommendations", params={"k": 7}, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["retriever"] == "itemknn" and body["known_user"]
        assert [item["item_id"] for item in body["items"]] == expected
        # Feedback after the save is recent to the loaded snapshot: the very next list reflects it.
        given = {"user_id": user, "item_id": expected[0], "kind": "thumbs_down"}
        assert client.post("/v1/feedback", json=given, headers=ADMIN).status_code in (200, 201)
        again = client.get(f"/v1/users/{user}/recommendations", params={"k": 7}, headers=ADMIN).json()
        assert expected[0] not in [item["item_id"] for item in again["items"]]
    store.close()


def test_a_saved_dir_for_another_dataset_is_refused(
    ml_sample: Dataset, database_url: Callable[[str], str], tmp_path: Path
) -> None:
    store = Store(database_url("sqlite"))
    folder = Pipeline(PipelineConfig(retriever=RetrieverSpec(name="popular"), rerank=None)).fit(ml_sample).save(
        tmp_path / "model")  # fmt: skip
    service = RecommenderService(store, ServeConfig.for_model(folder, dataset="something-else"))
    with pytest.raises(ConfigError, match="was fitted on dataset 'movielens-sample'.*Fix"):
        service.snapshot()
    mismatched = ServeConfig(dataset="movielens-sample", model=str(folder))  # default retriever: ease, not popular
    with pytest.raises(ConfigError, match="ServeConfig.for_model"):
        RecommenderService(store, mismatched).snapshot()
    store.close()
