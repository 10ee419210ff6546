"""The behaviour every registered scorer shares, run over every name in the registry.

A scorer added to ``SCORERS`` is covered here without editing this file.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, NotFittedError
from llmrec.models import SCORERS, Scorer, TrainOptions, available_scorers, get_scorer, top_k

# A scorer whose every call runs a language model is part of the contract, in the slow lane (make test-fast).
NEEDS_LM = {"genret"}
# tiger trains a transformer (~15 s per fit here on 2 loaded cores, ~60 s for the module): slow lane as well.
SLOW = NEEDS_LM | {"tiger"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in available_scorers()]

# The contract is about shapes and edge behaviour, not quality: train the slow models for a few epochs only.
FAST: dict[str, dict[str, object]] = {
    "sasrec": {"max_epochs": 2},
    "bert4rec": {"max_epochs": 2},
    # The language model generates every list: few beams, short identifiers, a short prompt.
    "genret": {"num_beams": 2, "width": 2, "history": 2, "max_title_chars": 12},
    # Collaborative codes only (no text encoder load), one small epoch: the contract, not the quality.
    "tiger": {"max_epochs": 1, "text_weight": 0.0, "hidden": 16, "history": 5, "codebook_size": 16},
}


def make(name: str) -> Scorer:
    return get_scorer(name, **FAST.get(name, {}))


@pytest.fixture(scope="module", params=NAMES)
def fitted(request: pytest.FixtureRequest, ml_sample: Dataset) -> Scorer:
    return make(request.param).fit(ml_sample, TrainOptions(seed=3))


@pytest.fixture(scope="module")
def users(ml_sample: Dataset) -> np.ndarray:
    return ml_sample.user_vocab.ids[[0, 5, 17, 42, 59]]


def seen_items(data: Dataset, user: str) -> set[str]:
    row = data.matrix("binary")[data.user_vocab.index([user])[0]]
    return set(data.item_vocab.ids[row.indices])


def test_registry_names_match_classes() -> None:
    assert NAMES, "no scorers registered"
    for name, cls in SCORERS.items():
        assert cls.name == name
        assert issubclass(cls, Scorer)


@pytest.mark.parametrize("name", NAMES)
def test_tuning_grid_is_small_and_valid(name: str) -> None:
    cls = SCORERS[name]
    grid = cls.tuning_grid  # type: ignore[attr-defined]
    assert isinstance(grid, dict)
    combos = list(itertools.product(*grid.values()))
    assert 1 <= len(combos) <= 6
    for values in combos:
        cls(**dict(zip(grid, values, strict=True)))  # every combination is a valid config


@pytest.mark.parametrize("name", NAMES)
def test_not_fitted_raises(name: str) -> None:
    scorer = get_scorer(name)
    with pytest.raises(NotFittedError, match=name):
        scorer.score(["1"])
    with pytest.raises(NotFittedError):
        scorer.recommend(["1"], k=5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_config_field_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="not_a_field"):
        get_scorer(name, not_a_field=1)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_score_shapes_all_items_and_subset(fitted: Scorer, ml_sample: Dataset, users: np.ndarray) -> None:
    full = fitted.score(users)
    assert full.shape == (len(users), ml_sample.n_items)
    assert full.dtype == np.float64
    assert np.isfinite(full).all()
    subset_idx = np.array([3, 0, 100, 2000, 7])
    sub = fitted.score(users, ml_sample.item_vocab.ids[subset_idx])
    assert sub.shape == (len(users), len(subset_idx))
    np.testing.assert_array_equal(sub, full[:, subset_idx])
    assert not np.all(full == full[0]) or fitted.name == "popular", "scores are not personalised"


def test_recommend_shapes_and_descending_scores(fitted: Scorer, ml_sample: Dataset, users: np.ndarray) -> None:
    rec = fitted.recommend(users, k=10)
    assert len(rec) == len(users)
    assert rec.items.shape == rec.scores.shape == rec.item_idx.shape == (len(users), 10)
    assert list(rec.users) == [str(u) for u in users]
    assert (rec.item_idx >= 0).all()
    assert (np.diff(rec.scores, axis=1) <= 0).all()
    np.testing.assert_array_equal(rec.items, ml_sample.item_vocab.ids[rec.item_idx])
    for row in rec.items:
        assert len(set(row)) == len(row)
    full = fitted.score(users)
    np.testing.assert_array_equal(np.take_along_axis(full, rec.item_idx, axis=1), rec.scores)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_recommendations(name: str, ml_sample: Dataset, users: np.ndarray) -> None:
    options = TrainOptions(seed=11, threads=2)
    first = make(name).fit(ml_sample, options).recommend(users, k=20)
    second = make(name).fit(ml_sample, options).recommend(users, k=20)
    np.testing.assert_array_equal(first.item_idx, second.item_idx)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_exclude_seen_excludes_exactly_training_items(fitted: Scorer, ml_sample: Dataset, users: np.ndarray) -> None:
    n = ml_sample.n_items
    excluded = fitted.recommend(users, k=n, exclude_seen=True)
    included = fitted.recommend(users, k=n, exclude_seen=False)
    catalogue = set(ml_sample.item_vocab.ids)
    for r, user in enumerate(users):
        seen = seen_items(ml_sample, user)
        assert seen, "sample user without training items"
        got = {i for i in excluded.items[r] if i is not None}
        assert got == catalogue - seen
        assert set(included.items[r]) == catalogue  # seen items come back when not excluded
    top = fitted.recommend(users, k=10)
    for r, user in enumerate(users):
        assert not set(top.items[r]) & seen_items(ml_sample, user)


def test_candidates_restrict_output_and_ignore_unknown(fitted: Scorer, ml_sample: Dataset, users: np.ndarray) -> None:
    cand = [*ml_sample.item_vocab.ids[10:30], "no-such-item"]
    rec = fitted.recommend(users, k=25, exclude_seen=False, candidates=cand)
    for row, idx in zip(rec.items, rec.item_idx, strict=True):
        real = [i for i in row if i is not None]
        assert set(real) == set(cand[:20])  # all 20 known candidates, nothing else
        assert list(idx[20:]) == [-1] * 5
    sub = fitted.score(users, cand[:20])
    np.testing.assert_array_equal(rec.scores[:, :20], -np.sort(-sub, axis=1))
    rec_excl = fitted.recommend(users, k=25, candidates=cand)
    for r, user in enumerate(users):
        real = {i for i in rec_excl.items[r] if i is not None}
        assert real == set(cand[:20]) - seen_items(ml_sample, user)


def test_unknown_users_get_popularity_and_unknown_items_nan(
    fitted: Scorer, ml_sample: Dataset, users: np.ndarray
) -> None:
    pop = ml_sample.item_popularity.astype(np.float64)
    scores = fitted.score(["nobody", users[0]])
    np.testing.assert_array_equal(scores[0], pop)
    np.testing.assert_array_equal(scores[1], fitted.score([users[0]])[0])
    rec = fitted.recommend(["nobody", users[0]], k=10)
    expected_idx, _ = top_k(pop[None, :], 10)
    np.testing.assert_array_equal(rec.item_idx[0], expected_idx[0])
    items = ["no-such-item", ml_sample.item_vocab.ids[0]]
    sub = fitted.score(users, items)
    assert np.isnan(sub[:, 0]).all()
    assert np.isfinite(sub[:, 1]).all()


def test_k_larger_than_catalogue_pads(fitted: Scorer, ml_sample: Dataset, users: np.ndarray) -> None:
    n = ml_sample.n_items
    rec = fitted.recommend(users[:2], k=n + 5, exclude_seen=False)
    assert rec.items.shape == (2, n + 5)
    assert (rec.item_idx[:, :n] >= 0).all()
    assert (rec.item_idx[:, n:] == -1).all()
    assert all(i is None for i in rec.items[:, n:].ravel())
    assert np.isneginf(rec.scores[:, n:]).all()
    with pytest.raises(ConfigError):
        fitted.recommend(users, k=0)


@pytest.mark.parametrize("name", NAMES)
def test_user_in_vocabulary_without_training_history_gets_popularity(name: str, ml_sample: Dataset) -> None:
    # After a split the training part shares the full vocabulary: a user whose events all lie after the cut
    # is "known" but has no history, and must be treated as cold, not scored with an empty row.
    cold = ml_sample.user_vocab.ids[0]
    train = ml_sample.subset(ml_sample.user_idx != 0)
    model = make(name).fit(train, TrainOptions(seed=3))
    np.testing.assert_array_equal(model.score([cold])[0], train.item_popularity.astype(np.float64))


def training_history(data: Dataset, user: str) -> np.ndarray:
    """The user's training item indices in time order (interactions are stored time-sorted)."""
    return data.item_idx[data.user_idx == data.user_vocab.index([user])[0]]


# Folding a user's own training history back in reproduces the fitted user exactly, except for the
# factorisation models (and fusions of them): their fitted users come from many alternating or SGD steps.
APPROXIMATE_FOLD_IN = {"als", "bpr", "fusion"}


def test_fold_in_of_a_training_history_matches_the_fitted_user(
    fitted: Scorer, ml_sample: Dataset, users: np.ndarray
) -> None:
    histories = [training_history(ml_sample, u) for u in users]
    folded = fitted.score_histories(histories)
    direct = fitted.score(users)
    assert folded.shape == direct.shape == (len(users), ml_sample.n_items)
    if fitted.name in APPROXIMATE_FOLD_IN:
        seen = ml_sample.matrix("binary")[ml_sample.user_vocab.index(users)].toarray() > 0
        for row in range(len(users)):
            a, b = np.where(seen[row], -np.inf, folded[row]), np.where(seen[row], -np.inf, direct[row])
            top_a, top_b = set(top_k(a[None], 20)[0][0]), set(top_k(b[None], 20)[0][0])
            assert len(top_a & top_b) >= 8, f"{fitted.name}: fold-in shares only {len(top_a & top_b)} of the top 20"
    else:
        np.testing.assert_allclose(folded, direct, rtol=1e-4, atol=1e-5)


def test_fold_in_responds_to_the_history_and_handles_edges(fitted: Scorer, ml_sample: Dataset) -> None:
    pop = ml_sample.item_popularity.astype(np.float64)
    liked = np.argsort(-pop)[:3]
    scores = fitted.score_histories([[], liked, liked[:1]])
    np.testing.assert_array_equal(scores[0], pop)  # an empty history is a cold user
    if fitted.name != "popular":
        assert not np.allclose(scores[1], scores[2]), "adding items to a history must change its scores"
    with pytest.raises(ConfigError, match="outside the catalogue"):
        fitted.score_histories([[ml_sample.n_items]])


def test_save_and_load_round_trip_gives_identical_scores(
    fitted: Scorer, ml_sample: Dataset, users: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = fitted.save(tmp_path_factory.mktemp("saved") / fitted.name)
    assert (folder / "scorer.json").is_file() and (folder / "arrays.npz").is_file()
    loaded = Scorer.load(folder)
    assert type(loaded) is type(fitted)
    assert loaded.config == fitted.config
    assert loaded.fitted_at == fitted.fitted_at
    assert loaded.data.user_vocab == ml_sample.user_vocab and loaded.data.item_vocab == ml_sample.item_vocab
    asked = [*users, "nobody"]
    np.testing.assert_allclose(loaded.score(asked), fitted.score(asked), rtol=1e-6, atol=1e-6)
    before, after = fitted.recommend(asked, k=20), loaded.recommend(asked, k=20)
    np.testing.assert_array_equal(after.item_idx, before.item_idx)
    np.testing.assert_array_equal(after.items, before.items)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6, atol=1e-6)
    histories = [training_history(ml_sample, u) for u in users[:2]]
    np.testing.assert_allclose(
        loaded.score_histories(histories), fitted.score_histories(histories), rtol=1e-6, atol=1e-6
    )
    assert type(fitted).load(folder).name == fitted.name  # the class's own load checks the saved name
    if fitted.name == "content":  # text queries work on the loaded vectors (the encoder is rebuilt on first use)
        query = "a funny animated movie for children"
        got, want = loaded.recommend_text(query, k=5), fitted.recommend_text(query, k=5)  # type: ignore[attr-defined]
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)
