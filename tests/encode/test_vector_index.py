from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.encode.cache import CachedEncoder, memory_cache
from llmrec.encode.encoder import TextEncoder
from llmrec.encode.index import ExactIndex, FaissIndex, VectorIndex, load_index, make_index
from llmrec.errors import ConfigError
from llmrec.text.build import item_texts
from required import require

require("faiss")

N_ITEMS = 300


@pytest.fixture(scope="module")
def item_vectors(ml_sample: Dataset, text_encoder: TextEncoder) -> np.ndarray:
    """Real MiniLM embeddings of the first items of the MovieLens sample (through the process-wide cache)."""
    return CachedEncoder(text_encoder, memory_cache()).encode(item_texts(ml_sample)[:N_ITEMS])


@pytest.fixture(scope="module")
def queries(item_vectors: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    # Users are means of item vectors: query with normalised means of random item groups.
    groups = rng.integers(0, len(item_vectors), size=(25, 8))
    q = item_vectors[groups].mean(axis=1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _filled(kind: str, vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    index = ExactIndex() if kind == "exact" else FaissIndex(kind)
    half = len(ids) // 2
    index.add(ids[:half], vectors[:half])  # two adds: growth and id bookkeeping across adds
    index.add(ids[half:], vectors[half:])
    return index


def _brute(q: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, ok: np.ndarray) -> tuple:
    scores = q @ vectors.T
    scores[~np.broadcast_to(ok, scores.shape)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(scores, order, axis=1)


def test_exact_and_faiss_agree_on_movielens_item_embeddings(item_vectors: np.ndarray, queries: np.ndarray) -> None:
    ids = np.arange(len(item_vectors))
    exact = _filled("exact", item_vectors, ids)
    _, expected_scores = _brute(queries, item_vectors, ids, 20, np.ones((1, len(ids)), dtype=bool))
    got_ids, got_scores = exact.search(queries, 20)
    np.testing.assert_allclose(got_scores, expected_scores, atol=1e-5)
    flat_ids, flat_scores = _filled("flat", item_vectors, ids).search(queries, 20)
    np.testing.assert_allclose(flat_scores, got_scores, atol=1e-5)
    assert (flat_ids == got_ids).mean() > 0.98  # equal up to the order of exact ties
    hnsw_ids, _ = _filled("hnsw", item_vectors, ids).search(queries, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(hnsw_ids, got_ids, strict=True)])
    assert recall > 0.95
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    assert (np.diff(got_scores, axis=1) <= 0).all()


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_filters_keep_exactly_k_qualifying_results(kind: str, item_vectors: np.ndarray, queries: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(len(item_vectors)) * 5 + 3  # sparse, non-zero-based ids
    index = _filled(kind, item_vectors, ids)
    allowed = np.zeros(ids.max() + 1, dtype=bool)
    allowed[rng.choice(ids, size=40, replace=False)] = True  # a selective attribute filter: 10% of items
    exact_ids, _ = _filled("exact", item_vectors, ids).search(queries, 10)
    exclude = [set(row[:5].tolist()) | {int(ids[0]), 99_999} for row in exact_ids]  # seen items + unknown id
    got, scores = index.search(queries, 10, exclude=exclude, allowed=allowed)
    ok = allowed[ids][None, :].repeat(len(queries), axis=0)
    for r, ex in enumerate(exclude):
        ok[r, np.isin(ids, list(ex))] = False
    _, expected_scores = _brute(queries, item_vectors, ids, 10, ok)
    assert (got >= 0).all(), "fewer than k results although enough items qualify"
    for r in range(len(queries)):
        assert allowed[got[r]].all()
        assert not set(got[r].tolist()) & exclude[r]
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    # Per-query masks (2-d) too.
    per_query = np.zeros((len(queries), ids.max() + 1), dtype=bool)
    per_query[:, ids[::2]] = True
    got2, _ = index.search(queries, 10, allowed=per_query)
    assert np.isin(got2, ids[::2]).all()


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_k_larger_than_what_qualifies_pads(kind: str, item_vectors: np.ndarray, queries: np.ndarray) -> None:
    ids = np.arange(50)
    index = _filled(kind, item_vectors[:50], ids)
    got, scores = index.search(queries[:3], 60)
    assert got.shape == scores.shape == (3, 60)
    assert (got[:, :50] >= 0).all() and (got[:, 50:] == -1).all()
    assert np.isneginf(scores[:, 50:]).all()
    assert sorted(got[0, :50].tolist()) == list(range(50))
    allowed = np.zeros(50, dtype=bool)
    allowed[[3, 7]] = True
    got, _ = index.search(queries[:2], 5, allowed=allowed, exclude=[{7}, None])
    assert got[0].tolist() == [3, -1, -1, -1, -1]
    assert sorted(got[1, :2].tolist()) == [3, 7] and (got[1, 2:] == -1).all()


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_save_and_load_round_trip_without_pickle(
    kind: str, item_vectors: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    ids = np.arange(len(item_vectors)) + 1000
    index = _filled(kind, item_vectors, ids)
    folder = index.save(tmp_path / "idx")
    loaded = load_index(folder)
    assert type(loaded) is type(index) and len(loaded) == len(index) and loaded.dim == index.dim
    np.testing.assert_array_equal(loaded.ids, index.ids)
    a, sa_ = index.search(queries, 10)
    b, sb = loaded.search(queries, 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa_, sb)
    if kind == "exact":
        with np.load(folder / "index.npz", allow_pickle=False) as raw:  # plain arrays only
            assert set(raw.files) == {"ids", "vectors"}
    else:
        assert (folder / "index.faiss").is_file()


def test_empty_index_errors_and_factory(item_vectors: np.ndarray) -> None:
    index = make_index("exact")
    assert isinstance(index, VectorIndex) and isinstance(make_index("faiss", structure="flat"), VectorIndex)
    ids, scores = index.search(item_vectors[:2], 3)
    assert (ids == -1).all() and np.isneginf(scores).all()
    index.add([1, 2], item_vectors[:2])
    with pytest.raises(ConfigError, match="already in the index"):
        index.add([2], item_vectors[:1])
    with pytest.raises(ConfigError, match="dimension"):
        index.add([3], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(ConfigError, match="dimension"):
        index.search(np.ones((1, 5)), 2)
    with pytest.raises(ConfigError, match="k must be"):
        index.search(item_vectors[:1], 0)
    with pytest.raises(ConfigError, match="one set per query"):
        index.search(item_vectors[:2], 2, exclude=[set()])
    with pytest.raises(ConfigError, match="boolean"):
        index.search(item_vectors[:1], 2, allowed=np.array([1, 0, 1]))
    with pytest.raises(ConfigError, match="unknown index kind"):
        make_index("annoy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="meta.json"):
        load_index("/nonexistent/folder")
