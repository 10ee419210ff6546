"""Per-model checks of the classical baselines: the maths each one promises, and that they learn something."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import llmrec.models.itemknn as itemknn_module
from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.models import ALS, BPR, EASE, ItemKNN, Popular, TrainOptions, get_scorer
from llmrec.models.ease import _spd_inverse


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    """5 users, 6 items; item "z" is in the catalogue but nobody interacted with it (cold)."""
    pairs = [
        ("u1", "a"),
        ("u1", "b"),
        ("u1", "c"),
        ("u2", "a"),
        ("u2", "b"),
        ("u3", "b"),
        ("u3", "c"),
        ("u3", "d"),
        ("u4", "d"),
        ("u4", "e"),
        ("u5", "a"),
        ("u5", "e"),
    ]
    inter = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    inter["timestamp"] = np.arange(len(inter))
    items = pd.DataFrame({"item_id": list("abcdez"), "title": list("ABCDEZ")})
    return Dataset(inter, items, name="tiny")


def dense_binary(data: Dataset) -> np.ndarray:
    return data.matrix("binary").toarray().astype(np.float64)


# -- Popular ---------------------------------------------------------------------------------------------
def test_popular_scores_are_user_counts_with_deterministic_ties(tiny: Dataset) -> None:
    model = Popular().fit(tiny)
    np.testing.assert_array_equal(model.score(["u1"])[0], [3, 3, 2, 2, 2, 0])  # a b c d e z
    rec = model.recommend(["u4", "u4"], k=6, exclude_seen=False)
    assert list(rec.items[0]) == ["a", "b", "c", "d", "e", "z"]  # ties in catalogue order
    np.testing.assert_array_equal(rec.items[0], rec.items[1])
    assert list(model.recommend(["u4"], k=3).items[0]) == ["a", "b", "c"]


# -- ItemKNN ---------------------------------------------------------------------------------------------
def brute_force_cosine(data: Dataset, shrinkage: float = 0.0) -> np.ndarray:
    x = dense_binary(data)
    dots = x.T @ x
    norms = np.sqrt(np.diag(dots))
    denom = np.outer(norms, norms) + shrinkage
    sim = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def test_itemknn_matches_brute_force_cosine_when_unpruned(tiny: Dataset) -> None:
    model = ItemKNN(k_neighbors=100).fit(tiny)
    np.testing.assert_allclose(model.similarity.toarray(), brute_force_cosine(tiny), rtol=1e-6)
    x = dense_binary(tiny)
    np.testing.assert_allclose(model.score(["u1", "u4"]), x[[0, 3]] @ brute_force_cosine(tiny).T, rtol=1e-6)
    assert model.score(["u1"])[0, -1] == 0.0  # the cold item has no neighbours


def test_itemknn_keeps_at_most_k_strongest_neighbours(ml_sample: Dataset) -> None:
    k = 7
    model = ItemKNN(k_neighbors=k).fit(ml_sample)
    sim = model.similarity
    per_item = np.diff(sim.indptr)
    assert per_item.max() <= k
    assert (per_item == k).mean() > 0.9  # nearly every item has k co-occurring items in the sample
    assert not sim.diagonal().any()
    assert (sim.data > 0).all() and (sim.data <= 1 + 1e-6).all()
    full = brute_force_cosine(ml_sample)
    for j in [0, 10, 500, 2500]:
        kept = sim[j].toarray().ravel()
        kth_best = np.sort(full[j])[-k]
        assert kept.min() == 0 and (kept[kept > 0] >= kth_best - 1e-6).all()
        np.testing.assert_allclose(kept[kept > 0], full[j][kept > 0], rtol=1e-5)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_itemknn_blocking_does_not_change_the_result(ml_sample: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = ItemKNN(k_neighbors=20).fit(ml_sample).similarity
    monkeypatch.setattr(itemknn_module, "_BLOCK_CELLS", ml_sample.n_items * 37)  # 37-item blocks
    blocked = ItemKNN(k_neighbors=20).fit(ml_sample).similarity
    assert (whole != blocked).nnz == 0


def test_itemknn_shrinkage_damps_similarity(tiny: Dataset) -> None:
    plain = ItemKNN(k_neighbors=100).fit(tiny).similarity.toarray()
    shrunk = ItemKNN(k_neighbors=100, shrinkage=5.0).fit(tiny).similarity.toarray()
    np.testing.assert_allclose(shrunk, brute_force_cosine(tiny, shrinkage=5.0), rtol=1e-6)
    assert (shrunk <= plain).all() and (shrunk < plain).any()


# -- EASE ------------------------------------------------------------------------------------------------
def test_ease_matches_closed_form_with_zero_diagonal(tiny: Dataset) -> None:
    lam = 2.0
    model = EASE(l2_reg=lam, dtype="float64").fit(tiny)
    x = dense_binary(tiny)
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))  # full catalogue, cold item included
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    active = model.active_items
    assert list(tiny.item_vocab.ids[active]) == list("abcde")
    np.testing.assert_allclose(model.weights, b[np.ix_(active, active)], atol=1e-12)
    assert not np.diag(model.weights).any()
    np.testing.assert_allclose(model.score(tiny.user_vocab.ids), x @ b, atol=1e-12)
    assert (model.score(["u1"])[:, -1] == 0).all()  # cold item: exactly 0, as in the full solution


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spd_inverse_is_in_place_and_symmetric_across_blocks(dtype: type) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1600, 1500))
    gram = (a.T @ a + 10 * np.eye(1500)).astype(dtype)  # 1500 > _SYM_BLOCK: two mirror blocks
    expected = np.linalg.inv(gram.astype(np.float64))
    work = gram.copy()
    inv = _spd_inverse(work)
    assert np.shares_memory(inv, work) and inv.flags["C_CONTIGUOUS"] and inv.dtype == dtype
    np.testing.assert_array_equal(inv, inv.T)
    np.testing.assert_allclose(inv, expected, atol=1e-6 if dtype == np.float32 else 1e-12)


def test_ease_float32_close_to_float64(ml_sample: Dataset) -> None:
    users = ml_sample.user_vocab.ids[:10]
    s32 = EASE(l2_reg=100.0).fit(ml_sample).score(users)
    s64 = EASE(l2_reg=100.0, dtype="float64").fit(ml_sample).score(users)
    np.testing.assert_allclose(s32, s64, atol=1e-4)


def test_ease_rejects_nonpositive_l2() -> None:
    with pytest.raises(ConfigError):
        EASE(l2_reg=0.0)


# -- ALS / BPR -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ALS, BPR])
def test_mf_scores_are_factor_dot_products(cls: type[ALS] | type[BPR], ml_sample: Dataset) -> None:
    model = cls(factors=8, iterations=3).fit(ml_sample)
    assert model.user_factors.shape[0] == ml_sample.n_users
    assert model.item_factors.shape[0] == ml_sample.n_items
    assert model.user_factors.shape[1] == model.item_factors.shape[1] >= 8
    users = ml_sample.user_vocab.ids[[1, 2]]
    expected = model.user_factors[[1, 2]] @ model.item_factors.T
    np.testing.assert_allclose(model.score(users), expected, rtol=1e-6)


def test_als_is_identical_across_thread_counts(ml_sample: Dataset) -> None:
    one = ALS(factors=16).fit(ml_sample, TrainOptions(seed=5, threads=1))
    two = ALS(factors=16).fit(ml_sample, TrainOptions(seed=5, threads=2))
    np.testing.assert_array_equal(one.item_factors, two.item_factors)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_mf_seed_changes_the_model(name: str, ml_sample: Dataset) -> None:
    a = get_scorer(name, factors=8, iterations=5).fit(ml_sample, TrainOptions(seed=1))
    b = get_scorer(name, factors=8, iterations=5).fit(ml_sample, TrainOptions(seed=2))
    assert not np.array_equal(a.item_factors, b.item_factors)


def test_bpr_multithreaded_mode_trains(ml_sample: Dataset) -> None:
    model = BPR(factors=8, iterations=5, deterministic=False).fit(ml_sample, TrainOptions(threads=2))
    assert np.isfinite(model.item_factors).all()


def test_training_does_not_touch_the_dataset_matrix(ml_sample: Dataset) -> None:
    before = ml_sample.matrix("binary").copy()
    for name in ["als", "bpr", "itemknn", "ease"]:
        get_scorer(name).fit(ml_sample)
    after = ml_sample.matrix("binary")
    assert (before != after).nnz == 0
    assert after.dtype == np.float32


# -- quality on the full data ----------------------------------------------------------------------------
def hit_rate_at_10(model_name: str, train: Dataset, users: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    start = time.perf_counter()
    model = get_scorer(model_name).fit(train, TrainOptions(seed=0))
    fit_s = time.perf_counter() - start
    rec = model.recommend(users, k=10)
    return float((rec.items == targets[:, None]).any(axis=1).mean()), fit_s


@pytest.mark.slow  # four models on the full dataset
def test_personalised_models_beat_popular_on_leave_last_out(ml: Dataset) -> None:
    from_end = ml.interactions.groupby("user_id").cumcount(ascending=False).to_numpy()  # 0 = user's latest
    train = ml.subset(from_end > 0, name="train")
    held = ml.interactions[from_end == 0]
    users = held["user_id"].to_numpy()
    targets = held["item_id"].astype(str).to_numpy()
    assert len(users) == ml.n_users == train.n_users
    assert train.matrix("binary")[ml.user_vocab.index(users), ml.item_vocab.index(targets)].sum() == 0
    popular, _ = hit_rate_at_10("popular", train, users, targets)
    assert popular > 0.02
    for name in ["itemknn", "als", "ease"]:
        hr, _ = hit_rate_at_10(name, train, users, targets)
        assert hr > popular * 1.3, f"{name} HR@10 {hr:.3f} vs popular {popular:.3f}"
