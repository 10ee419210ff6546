"""The encoder rerank: the text encoder scores candidates by similarity to the user's recent items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.eval.runner import evaluate_pipeline
from llmrec.llm.encoder_rerank import EncoderReranker
from llmrec.llm.rerank import LMReranker, RerankConfig
from llmrec.models.content import Content
from llmrec.models.registry import get_scorer
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
from llmrec.query import Query

pytestmark = pytest.mark.slow  # the module's fixture embeds the sample's catalogue: outside the fast lane

ENCODER = PipelineConfig(retriever=RetrieverSpec(name="itemknn"), candidates=8, rerank=RerankConfig(method="encoder"))


class _NoLM:
    """A language model that must never be asked: the encoder rerank needs none."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the encoder rerank touched the language model ({name})")


@pytest.fixture(scope="module")
def pipe(ml_sample: Dataset) -> Pipeline:
    return Pipeline(ENCODER, lm=_NoLM()).fit(ml_sample)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reranker(pipe: Pipeline) -> EncoderReranker:
    assert isinstance(pipe.reranker, EncoderReranker)
    return pipe.reranker


def test_the_most_recent_item_pulls_hardest(reranker: EncoderReranker) -> None:
    a, b = 3, 40
    a_last = reranker.score([b, a], [a, b])
    b_last = reranker.score([a, b], [a, b])
    assert a_last[0] > a_last[1]  # with a watched last, a's own vector is closest
    assert b_last[1] > b_last[0]
    assert np.all(np.abs(a_last) <= 1.0 + 1e-9)  # cosines


def test_scores_are_the_content_scorers_with_the_configured_half_life(
    reranker: EncoderReranker, ml_sample: Dataset
) -> None:
    history, candidates = np.array([5, 9, 2, 30]), np.array([1, 7, 11])
    expected = Content(half_life=1.0).fit(ml_sample).score_histories([history])[0, candidates]
    np.testing.assert_allclose(reranker.score(history, candidates), expected)
    assert reranker.score([], candidates).tolist() == [0.0, 0.0, 0.0]  # no history, no opinion
    assert reranker.score(history, []).shape == (0,)


def test_bad_indices_are_a_clear_error(reranker: EncoderReranker) -> None:
    with pytest.raises(ConfigError, match="outside the catalogue") as err:
        reranker.score([0], [reranker.n_items])
    assert err.value.field == "candidates"
    with pytest.raises(ConfigError, match="outside the catalogue"):
        reranker.score([-1], [0])


def test_the_causal_reranker_refuses_the_encoder_method() -> None:
    with pytest.raises(ConfigError, match="does not ask a causal language model"):
        LMReranker(_NoLM(), RerankConfig(method="encoder"))  # type: ignore[arg-type]


def test_the_pipeline_reranks_by_the_whole_recent_history(pipe: Pipeline, ml_sample: Dataset) -> None:
    user = "1"
    batch = pipe.rerank_scores([user])
    real = batch.retrieved.item_idx[0] >= 0
    uidx = int(ml_sample.user_vocab.index([user])[0])
    everything = ml_sample.item_idx[ml_sample.user_idx == uidx]  # every interaction, not only the liked ones
    assert len(everything) > len(pipe.history(uidx))
    expected = Content(half_life=1.0).fit(ml_sample).score_histories([everything])[0]
    np.testing.assert_allclose(batch.lm_scores[0, real], expected[batch.retrieved.item_idx[0, real]])
    top = get_scorer("itemknn").fit(ml_sample).recommend([user], k=8)
    recs = pipe.recommend([user], k=5)
    assert set(recs.item_idx[0]) <= set(top.item_idx[0])  # a permutation of the candidates
    assert pipe.warm([user]) == 0  # nothing to compute ahead


def test_a_new_like_moves_the_scores(pipe: Pipeline, ml_sample: Dataset) -> None:
    user = "2"
    before = pipe.rerank_scores([Query(user=user)])
    candidates = before.retrieved.item_idx[0]
    liked = str(ml_sample.item_vocab.ids[candidates[-1]])
    after = pipe.rerank_scores([Query(user=user, liked=(liked,))])
    # The liked item is now the most recent one: every candidate kept is scored against another history vector.
    was = dict(zip(candidates.tolist(), before.lm_scores[0].tolist(), strict=True))
    now = dict(zip(after.retrieved.item_idx[0].tolist(), after.lm_scores[0].tolist(), strict=True))
    common = sorted(set(was) & set(now))
    assert len(common) >= 3
    assert not np.allclose([was[i] for i in common], [now[i] for i in common])


def test_a_saved_pipeline_reranks_the_same(pipe: Pipeline, tmp_path: Path) -> None:
    loaded = Pipeline.load(pipe.save(tmp_path / "p"), lm=_NoLM())  # type: ignore[arg-type]
    users = ["1", "3"]
    np.testing.assert_array_equal(loaded.recommend(users, k=5).item_idx, pipe.recommend(users, k=5).item_idx)


def test_evaluate_pipeline_with_seeds_averages_each_users_metrics(ml_sample: Dataset) -> None:
    config = ENCODER.model_copy(update={"retriever": RetrieverSpec(name="bpr"), "candidates": 10})
    results = evaluate_pipeline(ml_sample, config, k=5, weights=(0.0, 0.5), seeds=[0, 1], lm=_NoLM())  # type: ignore[arg-type]
    plain, reranked = results.results
    assert reranked.model == "bpr+rerank:encoder"
    assert plain.seeds == reranked.seeds == [0, 1] and len(reranked.per_seed) == 2
    per_seed = [s["ndcg@5"] for s in reranked.per_seed]
    assert reranked.metrics["ndcg@5"] == pytest.approx(np.mean(per_seed))
    row = next(c for c in results.comparisons if c.metric == "ndcg@5")
    assert row.diff == pytest.approx(reranked.metrics["ndcg@5"] - plain.metrics["ndcg@5"], abs=1e-6)
