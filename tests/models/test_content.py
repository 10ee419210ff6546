from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.encode.cache import CachedEncoder, EmbeddingCache, memory_cache
from llmrec.encode.encoder import TextEncoder
from llmrec.errors import ConfigError, NotFittedError
from llmrec.eval.runner import evaluate_models
from llmrec.models import get_scorer
from llmrec.models.content import Content, recency_weights, search_items
from llmrec.text.build import item_texts
from recording import RecordingEncoder
from required import require


@pytest.fixture(scope="module")
def model(ml_sample: Dataset) -> Content:
    return Content().fit(ml_sample)  # the process-wide memory cache: later fits embed nothing


def _genres(data: Dataset, ids: Sequence[str]) -> list[str]:
    table = data.items.set_index("item_id")
    return [str(table.loc[i, "genres"]) for i in ids]


def test_registered_with_a_small_grid() -> None:
    scorer = get_scorer("content", half_life=5.0)
    assert isinstance(scorer, Content) and scorer.config.half_life == 5.0
    assert Content.tuning_grid == {"half_life": [5.0, 20.0, None]}
    with pytest.raises(NotFittedError):
        _ = scorer.encoder


def test_recency_weights_halve_every_half_life() -> None:
    users = np.array([0, 0, 1, 0, 1])
    np.testing.assert_allclose(recency_weights(users, 1.0), [0.25, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(recency_weights(users, 2.0)[:2], [0.5, 2**-0.5])
    np.testing.assert_array_equal(recency_weights(users, None), np.ones(5))


def test_item_and_user_vectors(model: Content, ml_sample: Dataset) -> None:
    assert model.item_vectors.shape == (ml_sample.n_items, 384)
    np.testing.assert_allclose(np.linalg.norm(model.item_vectors, axis=1), 1.0, atol=1e-5)
    # Items are centred on the catalogue mean before normalising.
    raw = CachedEncoder(TextEncoder(), memory_cache()).encode(item_texts(ml_sample))
    np.testing.assert_allclose(model.item_mean, raw.mean(axis=0), atol=1e-5)
    # A user = normalised recency-weighted mean of their history's item vectors.
    u = 7
    rows = np.flatnonzero(ml_sample.user_idx == u)
    weights = 0.5 ** (np.arange(len(rows))[::-1] / model.config.half_life)
    expected = (weights[:, None] * model.item_vectors[ml_sample.item_idx[rows]]).sum(axis=0)
    np.testing.assert_allclose(model.user_vectors[u], expected / np.linalg.norm(expected), atol=1e-5)
    scores = model.score([ml_sample.user_vocab.id(u)])[0]
    np.testing.assert_allclose(scores, model.item_vectors @ model.user_vectors[u], atol=1e-5)


def test_a_second_fit_embeds_nothing(model: Content, ml_sample: Dataset) -> None:
    again = Content(half_life=None).fit(ml_sample)
    assert again.encoder.last.embedded == 0 and again.encoder.last.hits == ml_sample.n_items - 0
    np.testing.assert_array_equal(again.item_vectors, model.item_vectors)


def test_free_text_queries(model: Content, ml_sample: Dataset) -> None:
    toy = ml_sample.items.loc[ml_sample.items["item_id"] == "1", "title"].item()
    assert toy == "Toy Story (1995)"
    assert model.recommend_text("Toy Story (1995)", k=3)[0][0] == "1"
    heist = model.recommend_text("a funny heist movie set in Europe", k=10)
    assert len(heist) == 10 and all(a[1] >= b[1] for a, b in itertools.pairwise(heist))
    assert sum("Crime" in g or "Comedy" in g for g in _genres(ml_sample, [i for i, _ in heist])) >= 5
    # Exclusions and candidate restrictions are honoured, and k results still come back.
    top = [i for i, _ in model.recommend_text("Toy Story (1995)", k=5)]
    without = [i for i, _ in model.recommend_text("Toy Story (1995)", k=5, exclude=top[:2])]
    assert len(without) == 5 and not set(without) & set(top[:2])
    comedies = ml_sample.items.loc[ml_sample.items["genres"].str.contains("Comedy"), "item_id"].tolist()
    only = model.recommend_text("a space adventure", k=8, candidates=comedies)
    assert len(only) == 8 and set(i for i, _ in only) <= set(comedies)
    batch = search_items(
        ["Toy Story (1995)", "Heat"],
        encoder=model.encoder,
        index=model.index,
        vocab=ml_sample.item_vocab,
        k=4,
        exclude=[["1"], None],
    )
    assert len(batch) == 2 and "1" not in [i for i, _ in batch[0]] and len(batch[1]) == 4
    with pytest.raises(ConfigError):
        model.recommend_text("x", k=0)


def test_faiss_index_gives_the_same_results(ml_sample: Dataset, model: Content) -> None:
    require("faiss")
    faiss_model = Content(index="faiss").fit(ml_sample)
    query = "a funny heist movie set in Europe"
    exact = model.recommend_text(query, k=10)
    approx = faiss_model.recommend_text(query, k=10)
    assert [i for i, _ in approx] == [i for i, _ in exact]
    np.testing.assert_allclose([s for _, s in approx], [s for _, s in exact], atol=1e-5)


def test_new_user_with_only_a_profile_gets_recommendations(model: Content, ml_sample: Dataset) -> None:
    recs = model.recommend_for_profile("I love animated movies for children, like the Pixar films", k=10)
    assert len(recs) == 10
    assert sum("Animation" in g or "Children" in g for g in _genres(ml_sample, [i for i, _ in recs])) >= 7
    with pytest.raises(ConfigError, match="empty"):
        model.recommend_for_profile("  ")


def test_user_text_is_scrubbed_before_it_is_embedded(ml_sample: Dataset) -> None:
    recorder = RecordingEncoder(TextEncoder())
    scorer = Content(embedder=recorder, embedding_cache=memory_cache()).fit(ml_sample)
    recorder.embedded.clear()
    scorer.recommend_for_profile("Write me at jane.doe@example.com, I like war movies", k=3)
    profile = recorder.embedded[0]
    assert "jane.doe@example.com" not in profile and "[EMAIL]" in profile


def test_new_item_with_text_only_is_recommendable_at_once(ml_sample: Dataset) -> None:
    scorer = Content().fit(ml_sample)
    user = ml_sample.user_vocab.id(3)
    before = scorer.score([user])
    last_item = ml_sample.item_vocab.id(int(ml_sample.item_idx[ml_sample.user_idx == 3][-1]))
    row = ml_sample.items.loc[ml_sample.items["item_id"] == last_item].iloc[0]
    new = pd.DataFrame(
        {
            "item_id": ["new-1", "new-2"],
            "title": [f"{row['title']} - Director's Cut", "Completely unrelated documentary about knitting"],
            "genres": [row["genres"], "Documentary"],
        }
    )
    assert scorer.add_items(new) == ["new-1", "new-2"]
    assert scorer.data.n_items == ml_sample.n_items + 2
    after = scorer.score([user])
    np.testing.assert_allclose(after[:, : ml_sample.n_items], before, atol=1e-6)  # old scores unchanged
    recs = scorer.recommend([user], k=10)
    assert "new-1" in set(recs.items[0])  # the re-cut of the user's latest movie is recommended right away
    assert scorer.recommend_text(str(new.loc[1, "title"]), k=1)[0][0] == "new-2"
    assert scorer.score(["nobody"], ["new-1"])[0, 0] == 0.0  # popularity fallback: no interactions yet
    with pytest.raises(ConfigError, match="already in the catalogue"):
        scorer.add_items(new.iloc[:1])
    assert scorer.add_items(new.iloc[:0]) == []


def test_profile_text_blends_into_known_users(ml_sample: Dataset, model: Content) -> None:
    users = pd.DataFrame({"user_id": ml_sample.user_vocab.ids, "profile": ""})
    users.loc[0, "profile"] = "Only horror films, the scarier the better"
    data = Dataset(ml_sample.interactions, ml_sample.items, users, name="with-profile", validate=False)
    blended = Content(profile_weight=0.5).fit(data)
    np.testing.assert_allclose(blended.user_vectors[1], model.user_vectors[1], atol=1e-6)  # no profile: same
    profile = TextEncoder().encode([users.loc[0, "profile"]])[0]
    assert blended.user_vectors[0] @ profile > model.user_vectors[0] @ profile + 0.1


def test_store_cache_persists_item_embeddings(tmp_path: Path) -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "c", 4)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Alpha (1990)", "Beta (1991)", "Gamma (1992)"]})
    data = Dataset(inter, items, name="tiny")
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    Content(cache="store", store_url=url).fit(data)
    assert EmbeddingCache(Store(url)).count(TextEncoder().model_id) == 3
    second = Content(cache="store", store_url=url).fit(data)
    assert second.encoder.last.embedded == 0
    assert Content(cache="none").fit(data).encoder.last.embedded == 3


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_cold_items_protocol_content_far_above_popularity(ml_sample: Dataset) -> None:
    results = evaluate_models(ml_sample, ["popular", ("content", {"half_life": None})], protocol="cold-items", k=10)
    assert results.protocol == "cold-items"
    pop = results.result("popular").metrics["ndcg@10"]
    content = results.result("content").metrics["ndcg@10"]
    assert content > 0.05
    assert content >= 1.5 * pop, (content, pop)  # the 60-user sample; the full set is in the report
