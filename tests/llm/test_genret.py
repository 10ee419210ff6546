"""Generative retrieval: semantic ids, the identifier trie (property tests), and constrained beam search with the
packaged SmolLM2 on a small MovieLens catalogue (real model, real encoder, no mocks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, NotFittedError, UnknownIdError
from llmrec.llm.genret import (
    GenerativeRetriever,
    GenerativeRetrieverConfig,
    IdTrie,
    SemanticIdConfig,
    SemanticIds,
    title_identifiers,
)
from llmrec.llm.openai_http import OpenAIChatLM, OpenAIConfig

END = 0

# -- the trie ----------------------------------------------------------------------------------------------------

sequences = st.lists(
    st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), min_size=1, max_size=14, unique=True
)


def completions(trie: IdTrie, exclusion: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every path the trie lets a decoder finish from ``prefix``; asserts each offered token leads somewhere."""
    out = []
    for token in trie.allowed(prefix, exclusion):
        path = (*prefix, token)
        if token == END:
            out.append(path)
            continue
        below = completions(trie, exclusion, path)
        assert below, f"token {token} after {prefix} was offered but every leaf below it is excluded"
        out.extend(below)
    return out


@settings(max_examples=150, deadline=None)
@given(seqs=sequences, data=st.data())
def test_trie_offers_exactly_the_identifiers_not_excluded(seqs: list[tuple[int, ...]], data: st.DataObject) -> None:
    trie = IdTrie(seqs, END)
    # Two different exclusions on the same trie: nothing is rebuilt between requests.
    for _ in range(2):
        banned = data.draw(st.sets(st.integers(0, len(seqs) - 1)))
        exclusion = trie.exclude(banned)
        done = completions(trie, exclusion)
        assert sorted(done) == sorted((*seqs[i], END) for i in range(len(seqs)) if i not in banned)
        assert all(trie.item(path) == seqs.index(path[:-1]) for path in done)
        assert trie.available(exclusion) == len(seqs) - len(banned)
        if len(banned) == len(seqs):
            assert trie.allowed((), exclusion) == []
        # An arbitrary prefix: offered tokens are exactly the next tokens of identifiers still allowed.
        prefix = tuple(data.draw(st.lists(st.integers(1, 4), max_size=3)))
        expected = {
            (*seqs[i], END)[len(prefix)]
            for i in range(len(seqs))
            if i not in banned and (*seqs[i], END)[: len(prefix)] == prefix and len(seqs[i]) + 1 > len(prefix)
        }
        assert trie.allowed(prefix, exclusion) == sorted(expected)
        assert all(trie.is_excluded(i, exclusion) == (i in banned) for i in range(len(seqs)))


def test_trie_rejects_ambiguous_identifiers() -> None:
    with pytest.raises(ConfigError):
        IdTrie([(1, 2), (1, 2)], END)
    with pytest.raises(ConfigError):
        IdTrie([(1, END, 2)], END)
    trie = IdTrie([(1, 2), (1,)], END)  # "Alien" and "Aliens": the shorter one ends cleanly
    assert trie.item((1, END)) == 1 and trie.item((1, 2, END)) == 0 and trie.item((1,)) is None
    with pytest.raises(ConfigError):
        trie.exclude([5])


# -- semantic ids ------------------------------------------------------------------------------------------------


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """40 vectors in 4 tight, far-apart groups (and the group of each)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16)) * 10
    groups = np.repeat(np.arange(4), 10)
    return centres[groups] + rng.normal(scale=0.1, size=(40, 16)), groups


def test_semantic_ids_are_unique_deterministic_and_similar_items_share_prefixes() -> None:
    x, groups = clustered()
    ids = SemanticIds(levels=2, codebook_size=4).fit(x, seed=3)
    again = SemanticIds(levels=2, codebook_size=4).fit(x, seed=3)
    assert np.array_equal(ids.codes, again.codes)
    strings = ids.strings()
    assert len(set(strings)) == len(strings) == 40
    assert all(re.fullmatch(r"a\d+ b\d+ c\d+", s) for s in strings)
    first = ids.codes[:, 0]
    for g in range(4):  # one first-level code per group, a different one for each group
        assert len(set(first[groups == g])) == 1
    assert len({first[groups == g][0] for g in range(4)}) == 4
    assert [len(b) for b in ids.codebooks] == [4, 4]


def test_semantic_ids_disambiguate_identical_vectors() -> None:
    x = np.ones((5, 3))
    ids = SemanticIds(levels=2, codebook_size=8).fit(x)
    assert ids.codes[:, -1].tolist() == [0, 1, 2, 3, 4]
    assert len(set(ids.strings())) == 5


def test_semantic_ids_round_trip_through_save_and_load(tmp_path: Path) -> None:
    x, _ = clustered(1)
    ids = SemanticIds(SemanticIdConfig(levels=3, codebook_size=5)).fit(x, seed=7)
    folder = ids.save(tmp_path / "sid")
    with np.load(folder / "semantic_ids.npz", allow_pickle=False) as arrays:  # plain arrays, no pickle
        assert set(arrays.files) == {"codes", "codebook_0", "codebook_1", "codebook_2"}
    loaded = SemanticIds.load(folder)
    assert loaded.config == ids.config
    assert np.array_equal(loaded.codes, ids.codes) and loaded.strings() == ids.strings()
    assert all(np.array_equal(a, b) for a, b in zip(loaded.codebooks, ids.codebooks, strict=True))
    with pytest.raises(ConfigError):
        SemanticIds.load(tmp_path / "nowhere")


def test_semantic_render_parse_and_config() -> None:
    assert SemanticIds.render([12, 3, 7, 0]) == "a12 b3 c7 d0"
    assert SemanticIds.parse("a12 b3 c7 d0") == (12, 3, 7, 0)
    for text in ("Heat", "a12 c3", "a01", "a1  b2", ""):
        assert SemanticIds.parse(text) is None
    with pytest.raises(ConfigError):
        SemanticIds(levels=2, codebok_size=4)
    with pytest.raises(NotFittedError):
        SemanticIds().codes  # noqa: B018


def test_title_identifiers_are_unique_and_readable() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "title": ["Usual Suspects, The (1995)", "Hamlet (1990)", "Hamlet (1996)", "Hamlet (1996)", ""],
        }
    )
    inter = pd.DataFrame({"user_id": ["u"] * 5, "item_id": items["item_id"], "value": 1.0, "timestamp": range(5)})
    names = title_identifiers(Dataset(inter, items))
    assert names == ["The Usual Suspects", "Hamlet (1990)", "Hamlet (1996)", "Hamlet (1996) #2", "item 5"]


def test_openai_backend_is_refused_with_a_config_error() -> None:
    lm = OpenAIChatLM(OpenAIConfig(base_url="http://127.0.0.1:9/v1", api_key=None))
    with pytest.raises(ConfigError, match="local model"):
        GenerativeRetriever(lm)


# -- with the packaged model -------------------------------------------------------------------------------------

K = 4


@pytest.fixture(scope="module")
def small(ml: Dataset) -> Dataset:
    """The 80 most rated movies and the ratings of the first 30 users on them."""
    inter = ml.interactions
    top = set(inter["item_id"].value_counts().index[:80])
    sub = inter[inter["item_id"].isin(top) & (inter["user_id"].astype(int) <= 30)]
    items = ml.items[ml.items["item_id"].isin(set(sub["item_id"]))]
    return Dataset(sub, items, name="ml-genret", validate=False)


@pytest.fixture(scope="module")
def users(small: Dataset) -> list[str]:
    active = np.flatnonzero(small.user_activity >= 5)
    return [small.user_vocab.id(int(u)) for u in active[:2]]


@pytest.fixture(scope="module")
def titles(lm: Any, small: Dataset) -> GenerativeRetriever:
    return GenerativeRetriever(lm, num_beams=K, history=5).fit(small)


@pytest.fixture(scope="module")
def semantic(lm: Any, small: Dataset) -> GenerativeRetriever:
    config = GenerativeRetrieverConfig(
        identifier="semantic", semantic=SemanticIdConfig(levels=2, codebook_size=8), num_beams=K, history=5
    )
    return GenerativeRetriever(lm, config).fit(small)


def check_recommendations(model: GenerativeRetriever, data: Dataset, users: list[str]) -> Any:
    model.reset_stats()
    recs = model.recommend(users, k=K)
    seen = data.matrix("binary")
    for row, user in enumerate(users):
        idx = recs.item_idx[row]
        assert (idx >= 0).all() and len(set(idx.tolist())) == K  # k distinct real items
        assert set(recs.items[row]) <= set(data.item_vocab.ids)
        assert seen[data.user_vocab.index([user])[0]][:, idx].nnz == 0  # none seen
        assert np.isfinite(recs.scores[row]).all() and (recs.scores[row] <= 0).all()
        assert (np.diff(recs.scores[row]) <= 0).all()
    # Measured by decoding every generated sequence and looking its text up, not assumed.
    assert model.stats.generated >= K * len(users)
    assert model.valid_ratio == 1.0 and model.stats.excluded == 0
    return recs


def test_identifiers_decode_to_themselves(titles: GenerativeRetriever, lm: Any) -> None:
    ids = titles.identifiers
    assert len(ids) == titles.data.n_items == len(set(ids.strings))
    for i, (text, tokens) in enumerate(zip(ids.strings, ids.token_ids, strict=True)):
        assert lm.decode(tokens) == text and ids.index_of(text) == i
    assert ids.index_of("Not A Movie In This Catalogue") is None


@pytest.fixture(scope="module")
def title_recs(titles: GenerativeRetriever, small: Dataset, users: list[str]) -> Any:
    return check_recommendations(titles, small, users)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_title_generation_returns_k_unseen_catalogue_items(
    titles: GenerativeRetriever, title_recs: Any, users: list[str]
) -> None:
    again = titles.recommend(users[:1], k=K)  # deterministic
    assert np.array_equal(again.item_idx[0], title_recs.item_idx[0])
    assert np.allclose(again.scores[0], title_recs.scores[0])


def test_scores_are_the_replies_log_likelihoods(
    titles: GenerativeRetriever, title_recs: Any, lm: Any, users: list[str]
) -> None:
    best = [titles.identifiers.strings[i] for i in title_recs.item_idx[0]]
    expected = lm.loglik(titles.prompt(users[0]), best).total  # end-of-turn token scored, like the search
    assert np.allclose(title_recs.scores[0], expected, atol=2e-3)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_excluded_items_never_come_out_even_when_few_are_left(titles: GenerativeRetriever) -> None:
    n = titles.data.n_items
    keep = {3, 11}
    idx, scores = titles.generate([0, 1, 2], k=5, exclude=[i for i in range(n) if i not in keep])
    assert set(idx.tolist()) == keep and np.isfinite(scores).all()


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_semantic_generation(semantic: GenerativeRetriever, small: Dataset, users: list[str], lm: Any) -> None:
    ids = semantic.identifiers
    assert semantic.semantic_ids is not None and ids.strings == semantic.semantic_ids.strings()
    assert len(set(ids.strings)) == small.n_items
    assert all(SemanticIds.parse(s) is not None for s in ids.strings)
    again = GenerativeRetriever(lm, semantic.config).fit(small)  # embeddings and k-means are deterministic
    assert again.identifiers.strings == ids.strings
    check_recommendations(semantic, small, users[:1])


def test_unknown_users_get_popular_items_and_unfitted_models_say_so(
    titles: GenerativeRetriever, small: Dataset, lm: Any
) -> None:
    recs = titles.recommend(["no-such-user"], k=3)
    assert recs.item_idx[0].tolist() == np.argsort(-small.item_popularity, kind="stable")[:3].tolist()
    with pytest.raises(UnknownIdError):
        titles.prompt("no-such-user")
    with pytest.raises(NotFittedError):
        GenerativeRetriever(lm).recommend(["1"])
    with pytest.raises(ConfigError):
        GenerativeRetriever(lm, num_beams=0)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_genret_is_a_registered_retriever_a_pipeline_serves_and_saves(
    titles: GenerativeRetriever, title_recs: Any, small: Dataset, users: list[str], tmp_path: Path
) -> None:
    from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
    from llmrec.query import Query

    spec = RetrieverSpec(name="genret", config={"num_beams": K, "width": K, "history": 5})
    pipe = Pipeline(PipelineConfig(retriever=spec, rerank=None, candidates=K)).fit(small)
    # The same generation as the retriever used directly: the generated items come first, best first.
    recs = pipe.recommend(users, k=K)
    np.testing.assert_array_equal(recs.item_idx, title_recs.item_idx)
    # A history it never saw is generated from too, and nothing of it comes back.
    history = tuple(small.item_vocab.ids[:3])
    folded = pipe.recommend([Query(liked=history)], k=K)
    assert (folded.item_idx[0] >= 0).all() and not set(folded.items[0]) & set(history)
    # Saved and loaded without a refit, it generates the same lists.
    loaded = Pipeline.load(pipe.save(tmp_path / "genret"))
    np.testing.assert_array_equal(loaded.recommend(users, k=K).item_idx, recs.item_idx)
