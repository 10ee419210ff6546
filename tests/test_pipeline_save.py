"""Saving and loading: a fitted pipeline (and scorer folders) read back recommend as before, without a refit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError, ConfigError, NotFittedError
from llmrec.llm.rerank import RerankConfig
from llmrec.models.base import Scorer
from llmrec.models.registry import get_scorer
from llmrec.pipeline import LMSpec, Pipeline, PipelineConfig, RetrieverSpec, saved_pipeline_info
from llmrec.query import Query

CONFIG = PipelineConfig(
    retriever=RetrieverSpec(name="itemknn", config={"k_neighbors": 30}),
    candidates=15,
    rerank=None,
    explain_with_lm=False,
    lm=LMSpec(backend="openai", openai={"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret", "model": "m"}),
)


@pytest.fixture(scope="module")
def pipe(ml_sample: Dataset) -> Pipeline:
    return Pipeline(CONFIG).fit(ml_sample)


@pytest.fixture(scope="module")
def saved(pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipe.save(tmp_path_factory.mktemp("pipe") / "model", metadata={"source": "test"})


def test_pipeline_round_trip_recommends_the_same_without_fitting(
    pipe: Pipeline, saved: Path, ml_sample: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("load must not fit")

    monkeypatch.setattr(Scorer, "fit", no_fit)
    loaded = Pipeline.load(saved)
    assert loaded.loaded_from == saved
    assert loaded.metadata == {"source": "test"}
    assert loaded.fitted_at == pipe.fitted_at is not None
    assert loaded.config.retriever == CONFIG.retriever and loaded.config.candidates == 15
    users = ["1", "7", "42", "no-such-user"]
    before, after = pipe.recommend(users, k=10), loaded.recommend(users, k=10)
    np.testing.assert_array_equal(after.items, before.items)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    news = Query(user="3", liked=(ml_sample.item_vocab.id(5),))
    assert loaded.liked_history(news) == pipe.liked_history(news)
    np.testing.assert_array_equal(loaded.recommend([news], k=5).items, pipe.recommend([news], k=5).items)
    assert loaded.titles == pipe.titles
    items = list(before.items[0, :3])
    assert [e.text for e in loaded.explain("1", items)] == [e.text for e in pipe.explain("1", items)]


def test_saved_pipeline_keeps_the_lm_reference_but_no_secret(saved: Path) -> None:
    info = saved_pipeline_info(saved)
    assert info["format_version"] == 1 and info["llmrec_version"]
    assert info["lm"] == {"backend": "openai", "settings": info["config"]["lm"]["openai"], "adapter": None}
    assert info["lm"]["settings"]["base_url"] == "http://127.0.0.1:9/v1"
    assert "sk-secret" not in (saved / "pipeline.json").read_text(encoding="utf-8")
    assert (saved / "retriever" / "scorer.json").is_file()
    assert not list(saved.parent.glob(".*tmp")), "the temporary folder is gone"


def test_reconfigured_keeps_the_fitted_retriever(pipe: Pipeline) -> None:
    wider = pipe.reconfigured(CONFIG.model_copy(update={"candidates": 50}))
    assert wider.retriever is pipe.retriever
    assert wider.recommend(["1"], k=40).items.shape == (1, 40)
    with pytest.raises(ConfigError, match="reconfigured"):
        pipe.reconfigured(CONFIG.model_copy(update={"retriever": RetrieverSpec(name="ease")}))


def test_rerank_settings_and_adapter_reference_survive(ml_sample: Dataset, tmp_path: Path) -> None:
    config = PipelineConfig(
        retriever=RetrieverSpec(name="popular"),
        rerank=RerankConfig(method="yesno", weight=0.5),
        lm=LMSpec(local={"adapter": "/adapters/my-lora"}),
    )
    fake_lm = object()
    pipe = Pipeline(config, lm=fake_lm).fit(ml_sample)  # type: ignore[arg-type]
    folder = pipe.save(tmp_path / "reranking")
    assert saved_pipeline_info(folder)["lm"]["adapter"] == "/adapters/my-lora"
    loaded = Pipeline.load(folder, lm=fake_lm)  # type: ignore[arg-type]
    assert loaded.config == config
    assert loaded.reranker is not None and loaded.lm is fake_lm


def test_errors_name_the_folder_and_the_fix(pipe: Pipeline, saved: Path, tmp_path: Path, ml_sample: Dataset) -> None:
    with pytest.raises(NotFittedError):
        Pipeline(CONFIG).save(tmp_path / "unfitted")
    with pytest.raises(NotFittedError):
        get_scorer("ease").save(tmp_path / "unfitted")
    missing = tmp_path / "nothing-here"
    with pytest.raises(ArtifactError, match="nothing-here: no such folder.*Fix"):
        Pipeline.load(missing)
    with pytest.raises(ArtifactError, match="scorer.json is missing"):
        Scorer.load(saved)  # a pipeline folder is not a scorer folder
    # a newer format is refused with the versions named
    newer = tmp_path / "newer"
    scorer = get_scorer("popular").fit(ml_sample)
    scorer.save(newer)
    meta = json.loads((newer / "scorer.json").read_text())
    (newer / "scorer.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format version 99.*upgrade llmrec"):
        Scorer.load(newer)
    # corrupt arrays, a wrong shape, a corrupt JSON
    (newer / "scorer.json").write_text(json.dumps(meta))
    (newer / "arrays.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="arrays.npz is corrupt"):
        Scorer.load(newer)
    np.savez(newer / "arrays.npz", popularity=np.zeros(3))
    with pytest.raises(ArtifactError, match="does not fit its data"):
        Scorer.load(newer)
    (newer / "scorer.json").write_text("{")
    with pytest.raises(ArtifactError, match="corrupt"):
        Scorer.load(newer)
    # the wrong class, a fusion member on its own
    scorer.save(newer)
    with pytest.raises(ArtifactError, match="popular scorer, not a EASE"):
        get_scorer("ease").__class__.load(newer)
    fusion = get_scorer("fusion", components=[{"name": "popular"}, {"name": "itemknn"}]).fit(ml_sample)
    fusion.save(tmp_path / "fusion")
    with pytest.raises(ArtifactError, match="member of a saved fusion"):
        Scorer.load(tmp_path / "fusion" / "members" / "0-popular")
    # saving never clobbers a folder that is not a saved model
    other = tmp_path / "my-files"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        scorer.save(other)
    assert (other / "notes.txt").read_text() == "keep me"
