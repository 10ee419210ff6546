"""Tests of the full-ranking metrics: hand-computed cases, properties, and a cross-check against trec_eval."""

from __future__ import annotations

import math
import random
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import pytrec_eval
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.eval import metrics as M

L2 = math.log2


def csr(rows: list[set[int]] | list[list[int]], n_items: int) -> sp.csr_matrix:
    """Binary CSR with one row per set of relevant item indices."""
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


# -- a tiny training set: items a..f = 0..5, users u0..u4 = 0..4 ------------------------------------------
#   u0: a b c   u1: a b   u2: a   u3: a c   u4: d      popularity a=4 b=2 c=2 d=1 e=0 f=0
TRAIN_PAIRS = [("u0", "a"), ("u0", "b"), ("u0", "c"), ("u1", "a"), ("u1", "b"), ("u2", "a"), ("u3", "a")]
TRAIN_PAIRS += [("u3", "c"), ("u4", "d")]


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    inter = pd.DataFrame(
        {
            "user_id": [u for u, _ in TRAIN_PAIRS],
            "item_id": [i for _, i in TRAIN_PAIRS],
            "timestamp": np.arange(len(TRAIN_PAIRS)),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": list("abcdef"),
            "title": list("ABCDEF"),
            "genres": ["Action", "Action|Comedy", "Drama", "Drama", "", None],
            "tags": ["fun", "Fun ", "", "", "", ""],
        }
    )
    data = Dataset(inter, items, name="tiny")
    assert list(data.item_vocab.ids) == list("abcdef")
    assert list(data.user_vocab.ids) == ["u0", "u1", "u2", "u3", "u4"]
    return data


# -- hand-computed accuracy ----------------------------------------------------------------------------
RANKED = np.array([[0, 1, 2], [3, 5, -1], [2, 0, 1], [-1, -1, -1]])
TRUTH = csr([{1, 4}, {3, 5, 0, 1}, set(), {2}], 6)
D2, D3 = 1 / L2(3), 1 / L2(4)  # discounts of ranks 2 and 3


def test_accuracy_by_hand() -> None:
    acc = M.accuracy_per_user(RANKED, TRUTH, 3)
    # user 0: hit at rank 2 of |R| = 2.  user 1: hits at ranks 1, 2 of |R| = 4.  user 2: no relevant.  user 3: empty.
    expected = {
        "precision": [1 / 3, 2 / 3, np.nan, 0.0],
        "recall": [1 / 2, 2 / 4, np.nan, 0.0],
        "hr": [1.0, 1.0, np.nan, 0.0],
        "ndcg": [D2 / (1 + D2), (1 + D2) / (1 + D2 + D3), np.nan, 0.0],
        "mrr": [1 / 2, 1.0, np.nan, 0.0],
        "map": [(1 / 2) / 2, (1 / 1 + 2 / 2) / 3, np.nan, 0.0],
    }
    assert set(acc) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(acc[name], values, err_msg=name)
    np.testing.assert_allclose(M.precision_at_k(RANKED, TRUTH, 3), expected["precision"])
    np.testing.assert_allclose(M.recall_at_k(RANKED, TRUTH, 3), expected["recall"])
    np.testing.assert_allclose(M.hit_rate_at_k(RANKED, TRUTH, 3), expected["hr"])
    np.testing.assert_allclose(M.ndcg_at_k(RANKED, TRUTH, 3), expected["ndcg"])
    np.testing.assert_allclose(M.mrr_at_k(RANKED, TRUTH, 3), expected["mrr"])
    np.testing.assert_allclose(M.map_at_k(RANKED, TRUTH, 3), expected["map"])


def test_map_divides_by_min_of_relevant_and_k() -> None:
    # 4 relevant, K = 2, both slots hit: AP = (1 + 1) / min(4, 2) = 1 (trec_eval's map_cut_2 would give 0.5).
    assert M.map_at_k(np.array([[0, 1]]), csr([{0, 1, 2, 3}], 5), 2)[0] == pytest.approx(1.0)
    # 1 relevant at rank 3 of K = 5: AP = (1/3) / 1.
    assert M.map_at_k(np.array([[4, 3, 0, 1, 2]]), csr([{0}], 5), 5)[0] == pytest.approx(1 / 3)


def test_k_truncates_and_pads() -> None:
    ranked = np.array([[1, 2, 0]])
    truth = csr([{0}], 3)
    assert M.hit_matrix(ranked, truth, 2).tolist() == [[False, False]]
    assert M.hit_matrix(ranked, truth, 5).tolist() == [[False, False, True, False, False]]
    assert M.precision_at_k(ranked, truth, 5)[0] == pytest.approx(1 / 5)  # padded slots are misses


def test_padding_keeps_positions() -> None:
    # A gap before an item does not move it up: the hit stays at rank 2.
    assert M.mrr_at_k(np.array([[-1, 0]]), csr([{0}], 2), 2)[0] == pytest.approx(0.5)


def test_truth_accepts_dense_and_counts_any_nonzero() -> None:
    dense = np.array([[0, 3, 0], [1, 0, 0]])
    explicit_zero = sp.csr_matrix((np.array([0.0, 2.0]), (np.array([0, 1]), np.array([0, 0]))), shape=(2, 3))
    ranked = np.array([[0, 1], [0, 1]])
    assert M.hit_rate_at_k(ranked, dense, 2).tolist() == [1.0, 1.0]
    hr = M.hit_rate_at_k(ranked, explicit_zero, 2)
    assert np.isnan(hr[0]) and hr[1] == 1.0  # a stored 0 is not relevant


@pytest.mark.parametrize(
    ("ranked", "message"),
    [
        (np.array([0, 1]), "2-d"),
        (np.array([[0, 0]]), "more than once"),
        (np.array([[0, 9]]), "outside"),
        (np.array([[0, -2]]), "outside"),
        (np.array([[0.0, 1.0]]), "integer"),
    ],
)
def test_bad_ranked_is_rejected(ranked: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        M.accuracy_per_user(ranked, csr([{0}], 3) if ranked.ndim == 2 else csr([{0}, {1}], 3), 2)


def test_bad_k_and_row_mismatch() -> None:
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must"):
            M.accuracy_per_user(np.array([[0]]), csr([{0}], 2), k)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rows"):
        M.accuracy_per_user(np.array([[0]]), csr([{0}, {1}], 2), 1)


def test_padded_duplicates_are_fine() -> None:
    assert M.hit_rate_at_k(np.array([[0, -1, -1]]), csr([{0}], 2), 3)[0] == 1.0


# -- hand-computed beyond-accuracy ---------------------------------------------------------------------
def test_coverage_by_hand() -> None:
    assert M.catalog_coverage(np.array([[0, 1], [1, -1], [4, 0]]), 10, 2) == pytest.approx(3 / 10)
    assert M.catalog_coverage(np.array([[0, 1, 2]]), 10, 1) == pytest.approx(1 / 10)  # only the top 1 counts
    assert M.catalog_coverage(np.array([[-1, -1]]), 10, 2) == 0.0
    assert math.isnan(M.catalog_coverage(np.zeros((0, 2), dtype=np.int64), 10, 2))  # no lists


def test_gini_by_hand() -> None:
    # counts over 4 items: [2, 1, 1, 0] -> sorted [0, 1, 1, 2], weights (2i - n - 1) = [-3, -1, 1, 3]
    # G = (0 - 1 + 1 + 6) / ((4 - 1) * 4) = 0.5
    assert M.gini_index(np.array([[0, 1], [0, 2]]), 4, 2) == pytest.approx(0.5)
    assert M.gini_index(np.array([[3], [3], [3]]), 4, 1) == pytest.approx(1.0)  # all on one item
    assert M.gini_index(np.array([[0, 1], [2, 3]]), 4, 2) == pytest.approx(0.0)  # equal exposure
    assert math.isnan(M.gini_index(np.array([[-1, -1]]), 4, 2))
    assert M.gini_index(np.array([[0]]), 1, 1) == 0.0


def test_novelty_and_arp_by_hand(tiny: Dataset) -> None:
    pop = tiny.item_popularity
    assert pop.tolist() == [4, 2, 2, 1, 0, 0]
    ranked = np.array([[0, 4], [5, -1], [-1, -1]])
    nov = M.novelty(ranked, pop, tiny.n_users, 2)
    # -log2((pop + 1) / (5 + 1)): a -> -log2(5/6), e, f -> -log2(1/6) = log2(6)
    np.testing.assert_allclose(nov[:2], [(-L2(5 / 6) + L2(6)) / 2, L2(6)])
    assert math.isnan(nov[2])
    arp = M.average_recommended_popularity(ranked, pop, tiny.n_users, 2)
    np.testing.assert_allclose(arp[:2], [(4 / 5 + 0) / 2, 0.0])
    assert math.isnan(arp[2])


def test_item_features_by_hand(tiny: Dataset) -> None:
    feats = M.item_features(tiny)
    # genres: Action, Comedy, Drama; tags (lower-cased, stripped): fun
    assert feats.shape == (6, 4)
    dense = feats.toarray()
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(dense[0], [1, 0, 0, 1])
    np.testing.assert_allclose(dense[1], [s, s, 0, 1])  # each block L2-normalised
    np.testing.assert_allclose(dense[2], [0, 0, 1, 0])
    np.testing.assert_allclose(dense[4], 0)  # no genres, no tags
    np.testing.assert_allclose(dense[5], 0)
    assert M.item_features(tiny, columns=("genres",)).shape == (6, 3)
    assert M.item_features(tiny, columns=("nope",)).shape == (6, 0)


def test_ild_by_hand(tiny: Dataset) -> None:
    feats = M.item_features(tiny)
    s = 1 / math.sqrt(2)
    cos_ab = (s + 1) / 2  # genre cosine 1/sqrt(2), tag cosine 1: blocks weigh equally
    ranked = np.array([[0, 1, 2], [0, 1, -1], [2, 3, 4], [0, 4, 5], [0, -1, -1]])
    ild = M.intra_list_diversity(ranked, feats, 3)
    np.testing.assert_allclose(ild[0], 1 - (cos_ab + 0 + 0) / 3)
    np.testing.assert_allclose(ild[1], 1 - cos_ab)
    np.testing.assert_allclose(ild[2], 0.0, atol=1e-12)  # c and d share "Drama"; e has no features, skipped
    assert np.isnan(ild[3]) and np.isnan(ild[4])  # fewer than two items with features
    genres_only = M.item_features(tiny, columns=("genres",))
    np.testing.assert_allclose(M.intra_list_diversity(ranked[:1], genres_only, 3), [1 - s / 3])


def test_popularity_baseline_by_hand(tiny: Dataset) -> None:
    # popularity order a(4) b(2) c(2) d(1) e(0) f(0), ties by index; a user's train items are skipped.
    base = M.popularity_baseline(tiny, 2)
    assert base.tolist() == [[3, 4], [2, 3], [1, 2], [1, 3], [0, 1]]
    assert M.popularity_baseline(tiny, 2, np.array([4, 0])).tolist() == [[0, 1], [3, 4]]
    assert M.popularity_baseline(tiny, 5, np.array([0]))[0].tolist() == [3, 4, 5, -1, -1]  # only 3 unseen


def test_serendipity_by_hand() -> None:
    ranked = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    truth = csr([{0, 1}, {2}, set()], 4)
    baseline = np.array([[0, 3, 2, 1], [1, -1, -1, 2], [0, 1, 2, 3]])  # only the first k = 3 entries count
    ser = M.serendipity(ranked, truth, baseline, 3)
    # user 0: hits 0, 1; 0 is expected -> 1 / 3.  user 1: hit 2, unexpected -> 1 / 3.  user 2: undefined.
    np.testing.assert_allclose(ser[:2], [1 / 3, 1 / 3])
    assert np.isnan(ser[2])
    with pytest.raises(ConfigError, match="baseline_ranked"):
        M.serendipity(ranked, truth, baseline[:2], 3)


def test_groups_by_hand() -> None:
    pop = np.array([5, 0, 3, 3, 1, 0, 0, 0, 0, 2])
    # top ceil(0.2 * 10) = 2 items: 0 (5) then the tie 2/3 (3) goes to the lower index 2
    assert M.head_tail_groups(pop).tolist() == ["head", "tail", "head"] + ["tail"] * 7
    assert M.head_tail_groups(np.array([1, 0, 0, 0, 0, 0])).tolist() == ["head"] + ["tail"] * 5  # zero pop is tail
    assert M.activity_groups(np.array([3, 9, 1, 0, 2])).tolist() == ["inactive", "active"] + ["inactive"] * 3
    with pytest.raises(ConfigError, match="share"):
        M.head_tail_groups(pop, 1.5)

    ranked = np.array([[0, 1, -1], [2, 1, 0]])
    labels = np.array(["x", "y", "z"], dtype=object)
    assert M.group_exposure(ranked, labels, 3) == pytest.approx({"x": 2 / 5, "y": 2 / 5, "z": 1 / 5})
    assert M.group_exposure(ranked, np.array([1, 1, 2]), 1) == pytest.approx({1: 1 / 2, 2: 1 / 2})
    means = M.group_means(np.array([1.0, 0.0, np.nan, 0.5]), np.array(["a", "b", "a", "b"]))
    assert means == pytest.approx({"a": 1.0, "b": 0.25})
    assert math.isnan(M.group_means(np.array([np.nan]), np.array(["a"]))["a"])


def test_compute_metrics_by_hand(tiny: Dataset) -> None:
    # rows = users u0..u4; u2 has no held-out item and is not evaluated.
    ranked = np.array([[3, 4], [2, 5], [1, 2], [1, 4], [0, 1]])
    truth = csr([{3}, {5}, set(), {4, 5}, {2}], 6)
    res = M.compute_metrics(ranked, truth, k=2, train=tiny)
    keys = ["precision", "recall", "hr", "ndcg", "mrr", "map", "coverage", "ild", "novelty", "serendipity"]
    keys += ["gini", "arp", "tail_exposure", "ndcg_gap"]
    assert list(res) == [f"{key}@2" for key in keys] + ["n_users"]
    assert res["n_users"] == 4
    # evaluated rows: u0 [d e] rel {d}; u1 [c f] rel {f}; u3 [b e] rel {e f}; u4 [a b] rel {c}
    assert res["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2 + 0) / 4)
    assert res["recall@2"] == pytest.approx((1 + 1 + 1 / 2 + 0) / 4)
    assert res["hr@2"] == pytest.approx(3 / 4)
    ndcg = [1.0, D2 / 1.0, D2 / (1 + D2), 0.0]
    assert res["ndcg@2"] == pytest.approx(np.mean(ndcg))
    assert res["mrr@2"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 0) / 4)
    assert res["map@2"] == pytest.approx((1 + 1 / 2 + (1 / 2) / 2 + 0) / 4)
    assert res["coverage@2"] == pytest.approx(6 / 6)  # a b c d e f all appear
    # ild: [d e] and [c f] have one featured item -> skipped; [b e] too; [a b] -> 1 - cos_ab
    assert res["ild@2"] == pytest.approx(1 - (1 / math.sqrt(2) + 1) / 2)
    info = -np.log2((tiny.item_popularity + 1) / 6)
    rows = [[3, 4], [2, 5], [1, 4], [0, 1]]
    assert res["novelty@2"] == pytest.approx(np.mean([info[row].mean() for row in rows]))
    # baselines (k = 2): u0 [d e], u1 [c d], u3 [b d], u4 [a b]; u0's hit d expected, u1's f and u3's e not
    assert res["serendipity@2"] == pytest.approx((0 + 1 / 2 + 1 / 2 + 0) / 4)
    # counts over the 8 slots: a1 b2 c1 d1 e2 f1 -> sorted [1,1,1,1,2,2], weights [-5,-3,-1,1,3,5]
    assert res["gini@2"] == pytest.approx((-5 - 3 - 1 + 1 + 6 + 10) / (5 * 8))
    pop = tiny.item_popularity / 5
    arp = [pop[[3, 4]].mean(), pop[[2, 5]].mean(), pop[[1, 4]].mean(), pop[[0, 1]].mean()]
    assert res["arp@2"] == pytest.approx(np.mean(arp))
    # head = top ceil(1.2) = 2 items by popularity: a, b.  Tail slots: 8 - (a1 + b2) = 5
    assert res["tail_exposure@2"] == pytest.approx(5 / 8)
    # active = top ceil(0.2 * 5) = 1 user by activity: u0 (3 items)
    assert res["ndcg_gap@2"] == pytest.approx(ndcg[0] - np.mean(ndcg[1:]))

    # Explicit users: the same rows in another order give the same metrics.
    perm = np.array([4, 2, 0, 3, 1])
    again = M.compute_metrics(ranked[perm], truth[perm], k=2, train=tiny, users=perm)
    assert again == pytest.approx(res)
    # A custom baseline that contains every hit leaves nothing serendipitous.
    res2 = M.compute_metrics(ranked, truth, k=2, train=tiny, baseline_ranked=ranked)
    assert res2["serendipity@2"] == 0.0


def test_compute_metrics_errors(tiny: Dataset) -> None:
    ranked = np.array([[0, 1]] * 5)
    truth = csr([{0}] * 5, 6)
    with pytest.raises(ConfigError, match="users="):
        M.compute_metrics(ranked[:3], truth[:3], k=2, train=tiny)
    with pytest.raises(ConfigError, match="users must"):
        M.compute_metrics(ranked[:3], truth[:3], k=2, train=tiny, users=np.array([0, 1, 7]))
    with pytest.raises(ConfigError, match="item columns"):
        M.compute_metrics(ranked, csr([{0}] * 5, 7), k=2, train=tiny)
    with pytest.raises(ConfigError, match="item_features"):
        M.compute_metrics(ranked, truth, k=2, train=tiny, item_features=np.ones((3, 2)))
    with pytest.raises(ConfigError, match="baseline_ranked"):
        M.compute_metrics(ranked, truth, k=2, train=tiny, baseline_ranked=ranked[:2])


def test_compute_metrics_without_relevant_users(tiny: Dataset) -> None:
    res = M.compute_metrics(np.array([[0, 1]] * 5), csr([set()] * 5, 6), k=2, train=tiny)
    assert res["n_users"] == 0
    assert all(math.isnan(v) for key, v in res.items() if key != "n_users")


def test_descriptions_and_directions() -> None:
    names = {"precision", "recall", "hr", "ndcg", "mrr", "map", "coverage", "ild", "novelty", "serendipity"}
    names |= {"gini", "arp", "tail_exposure", "ndcg_gap"}
    assert names | {"n_users"} == set(M.METRIC_DESCRIPTIONS)
    assert all("\n" not in text for text in M.METRIC_DESCRIPTIONS.values())
    assert names == M.HIGHER_IS_BETTER | M.LOWER_IS_BETTER | M.CLOSER_TO_ZERO_IS_BETTER
    assert M.metric_direction("ndcg@10") == "higher"
    assert M.metric_direction("gini@5") == "lower"
    assert M.metric_direction("ndcg_gap@10") == "zero"
    assert M.metric_direction("n_users") == "none"


def test_full_movielens_shape(ml: Dataset) -> None:
    """All metrics for 610 users x K=10 over the whole catalogue (speed is measured in benchmarks/, not here)."""
    rng = np.random.default_rng(0)
    ranked = np.argsort(rng.random((ml.n_users, ml.n_items)), axis=1)[:, :10]
    res = M.compute_metrics(ranked, ml.matrix("binary"), k=10, train=ml)
    assert res["n_users"] == 610
    assert 0.0 < res["coverage@10"] <= 1.0 and 0.0 <= res["gini@10"] <= 1.0


# -- property tests --------------------------------------------------------------------------------------
@st.composite
def problems(draw: st.DrawFn, *, middle_padding: bool = True, max_items: int = 25) -> tuple[np.ndarray, sp.csr_matrix]:
    """Random (ranked, truth): distinct items per row, -1 padding (at the end, or anywhere)."""
    n_items = draw(st.integers(1, max_items))
    n_users = draw(st.integers(1, 6))
    width = draw(st.integers(1, 10))
    rows, rels = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        length = draw(st.integers(0, min(width, n_items)))
        row = list(perm[:length]) + [-1] * (width - length)
        if middle_padding:
            for pos in draw(st.sets(st.integers(0, width - 1), max_size=width)):
                row[pos] = -1
        rows.append(row)
        rels.append(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items)))
    return np.array(rows, dtype=np.int64), csr(rels, n_items)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@given(problems(), st.integers(1, 12))
def test_accuracy_bounds_and_nan(problem: tuple[np.ndarray, sp.csr_matrix], k: int) -> None:
    ranked, truth = problem
    acc = M.accuracy_per_user(ranked, truth, k)
    has_rel = np.diff(truth.indptr) > 0
    for name, values in acc.items():
        assert values.shape == (len(ranked),)
        assert np.isnan(values[~has_rel]).all(), name
        defined = values[has_rel]
        assert ((defined >= 0) & (defined <= 1 + 1e-12)).all(), name
    # Relations between the metrics.
    assert (acc["precision"][has_rel] <= acc["hr"][has_rel]).all()
    assert (acc["mrr"][has_rel] <= acc["hr"][has_rel]).all()
    assert (acc["ndcg"][has_rel] <= acc["hr"][has_rel] + 1e-12).all()


@given(problems())
def test_perfect_ranking(problem: tuple[np.ndarray, sp.csr_matrix]) -> None:
    _, truth = problem
    n_users, n_items = truth.shape
    k = 5
    ranked = np.full((n_users, n_items), -1)
    for u in range(n_users):
        rel = truth[u].indices.tolist()
        others = [i for i in range(n_items) if i not in set(rel)]
        ranked[u] = rel[::-1] + others  # relevant first, in any order
    acc = M.accuracy_per_user(ranked, truth, k)
    n_rel = np.diff(truth.indptr)
    ok = n_rel > 0
    for name in ("ndcg", "hr", "mrr", "map"):
        np.testing.assert_allclose(acc[name][ok], 1.0, err_msg=name)
    np.testing.assert_allclose(acc["precision"][ok], np.minimum(n_rel[ok], k) / k)
    np.testing.assert_allclose(acc["recall"][ok], np.minimum(n_rel[ok], k) / n_rel[ok])


@given(problems(), st.integers(1, 12), st.data())
def test_moving_a_relevant_item_up_never_hurts(
    problem: tuple[np.ndarray, sp.csr_matrix], k: int, data: st.DataObject
) -> None:
    ranked, truth = problem
    before = M.accuracy_per_user(ranked, truth, k)
    moved = ranked.copy()
    hits = M.hit_matrix(ranked, truth, ranked.shape[1])
    for u in range(len(ranked)):
        hit_pos = np.flatnonzero(hits[u])
        if not len(hit_pos):
            continue
        j = data.draw(st.sampled_from(hit_pos.tolist()))
        non_hits = [i for i in range(j) if not hits[u, i]]  # a miss or padding above it
        if not non_hits:
            continue
        i = data.draw(st.sampled_from(non_hits))
        moved[u, i], moved[u, j] = moved[u, j], moved[u, i]
    after = M.accuracy_per_user(moved, truth, k)
    for name in ("ndcg", "mrr", "map", "precision", "recall", "hr"):
        ok = ~np.isnan(before[name])
        assert (after[name][ok] >= before[name][ok] - 1e-12).all(), name


@given(problems(middle_padding=True))
def test_recall_and_hits_grow_with_k(problem: tuple[np.ndarray, sp.csr_matrix]) -> None:
    ranked, truth = problem
    prev_recall = prev_hr = prev_hits = None
    for k in range(1, ranked.shape[1] + 3):
        acc = M.accuracy_per_user(ranked, truth, k)
        recall, hr = np.nan_to_num(acc["recall"]), np.nan_to_num(acc["hr"])
        hits = np.nan_to_num(acc["precision"]) * k
        if prev_recall is not None:
            assert (recall >= prev_recall - 1e-12).all()
            assert (hr >= prev_hr).all()
            assert (hits >= prev_hits - 1e-9).all()
        prev_recall, prev_hr, prev_hits = recall, hr, hits


@given(problems(), st.integers(1, 12), st.randoms(use_true_random=False))
def test_permuting_users_keeps_the_means(problem: tuple[np.ndarray, sp.csr_matrix], k: int, rnd: random.Random) -> None:
    ranked, truth = problem
    perm = np.arange(len(ranked))
    rnd.shuffle(perm)
    a = M.accuracy_per_user(ranked, truth, k)
    b = M.accuracy_per_user(ranked[perm], truth[perm], k)
    for name in a:
        np.testing.assert_allclose(b[name], a[name][perm])
        if not np.isnan(a[name]).all():
            assert np.nanmean(b[name]) == pytest.approx(np.nanmean(a[name]))
    n_items = truth.shape[1]
    assert M.gini_index(ranked[perm], n_items, k) == pytest.approx(M.gini_index(ranked, n_items, k), nan_ok=True)
    assert M.catalog_coverage(ranked[perm], n_items, k) == M.catalog_coverage(ranked, n_items, k)


@given(problems(), st.integers(1, 12))
def test_padding_never_hits(problem: tuple[np.ndarray, sp.csr_matrix], k: int) -> None:
    ranked, truth = problem
    everything = sp.csr_matrix(np.ones(truth.shape))  # every item relevant to every user
    hits = M.hit_matrix(ranked, everything, k)
    padded = np.full((len(ranked), k), -1)
    width = min(k, ranked.shape[1])
    padded[:, :width] = ranked[:, :width]
    np.testing.assert_array_equal(hits, padded >= 0)
    all_padding = np.full_like(ranked, -1)
    assert not M.hit_matrix(all_padding, everything, k).any()
    np.testing.assert_allclose(M.ndcg_at_k(all_padding, everything, k), 0.0)


@given(problems(), st.integers(1, 12))
def test_gini_coverage_bounds(problem: tuple[np.ndarray, sp.csr_matrix], k: int) -> None:
    ranked, truth = problem
    n_items = truth.shape[1]
    gini = M.gini_index(ranked, n_items, k)
    assert math.isnan(gini) == (ranked[:, :k] < 0).all()
    assert math.isnan(gini) or 0.0 <= gini <= 1.0
    assert 0.0 <= M.catalog_coverage(ranked, n_items, k) <= 1.0


@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 4))
def test_gini_zero_when_exposure_is_equal(n_items: int, k: int, rounds: int) -> None:
    k = min(k, n_items)
    rows = np.array([[(u + j) % n_items for j in range(k)] for u in range(n_items * rounds)])  # each item k*rounds
    assert M.gini_index(rows, n_items, k) == pytest.approx(0.0, abs=1e-12)
    assert M.catalog_coverage(rows, n_items, k) == 1.0


@given(problems(middle_padding=True), st.integers(1, 12), st.integers(0, 2**32 - 1), st.booleans())
def test_ild_matches_pairwise_definition(
    problem: tuple[np.ndarray, sp.csr_matrix], k: int, seed: int, dense: bool
) -> None:
    ranked, truth = problem
    n_items = truth.shape[1]
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_items, 4)) * (rng.random((n_items, 1)) < 0.8)  # some items featureless
    got = M.intra_list_diversity(ranked, feats if dense else sp.csr_matrix(feats), k)
    for u, row in enumerate(ranked[:, :k]):
        items = [i for i in row if i >= 0 and np.linalg.norm(feats[i]) > 0]
        if len(items) < 2:
            assert np.isnan(got[u])
            continue
        dists = [
            1 - feats[a] @ feats[b] / (np.linalg.norm(feats[a]) * np.linalg.norm(feats[b]))
            for a, b in combinations(items, 2)
        ]
        assert got[u] == pytest.approx(np.mean(dists), abs=1e-9)
        assert 0.0 <= got[u] <= 2.0


# -- cross-check against trec_eval (pytrec_eval) ---------------------------------------------------------
def _trec_eval(ranked: np.ndarray, truth: sp.csr_matrix, k: int) -> tuple[dict[str, dict[str, float]], list[int]]:
    """trec_eval's per-query measures for users with a relevant item and a non-empty top-k run."""
    qrels, run, users = {}, {}, []
    for u in range(len(ranked)):
        rel = truth[u].indices
        top = [int(i) for i in ranked[u, :k] if i >= 0]
        if not len(rel) or not top:
            continue
        qrels[f"q{u}"] = {f"d{i}": 1 for i in rel}
        run[f"q{u}"] = {f"d{i}": float(k - pos) for pos, i in enumerate(top)}  # distinct, descending
        users.append(u)
    measures = {f"P.{k}", f"recall.{k}", f"ndcg_cut.{k}", f"map_cut.{k}", "recip_rank"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run), users


def _cross_check(ranked: np.ndarray, truth: sp.csr_matrix, k: int) -> None:
    ours = M.accuracy_per_user(ranked, truth, k)
    theirs, users = _trec_eval(ranked, truth, k)
    n_rel = np.diff(truth.indptr)
    for u in range(len(ranked)):
        if n_rel[u] == 0:
            continue
        if u not in users:  # nothing retrieved: trec_eval skips the query, we score 0
            assert all(ours[name][u] == 0.0 for name in ours)
            continue
        t = theirs[f"q{u}"]
        assert ours["precision"][u] == pytest.approx(t[f"P_{k}"])
        assert ours["recall"][u] == pytest.approx(t[f"recall_{k}"])
        assert ours["ndcg"][u] == pytest.approx(t[f"ndcg_cut_{k}"])
        assert ours["mrr"][u] == pytest.approx(t["recip_rank"])  # the run holds only the top k
        if n_rel[u] <= k:  # map_cut divides by |R|; ours by min(|R|, K): equal only here
            assert ours["map"][u] == pytest.approx(t[f"map_cut_{k}"])
        else:
            assert ours["map"][u] == pytest.approx(t[f"map_cut_{k}"] * n_rel[u] / k)


@settings(max_examples=200)
@given(problems(middle_padding=False), st.integers(1, 12))
def test_matches_trec_eval_hypothesis(problem: tuple[np.ndarray, sp.csr_matrix], k: int) -> None:
    ranked, truth = problem
    _cross_check(ranked, truth, k)


@pytest.mark.parametrize("seed", range(5))
def test_matches_trec_eval_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 150, 300, 40
    ranked = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width]
    short = rng.integers(0, width + 1, n_users)  # some lists are shorter (padded at the end)
    ranked[np.arange(width) >= short[:, None]] = -1
    n_rel = rng.integers(0, 60, n_users)
    rel = [set(rng.choice(n_items, size=m, replace=False).tolist()) for m in n_rel]
    truth = csr(rel, n_items)
    for k in (1, 5, 10, 20, 40):
        _cross_check(ranked, truth, k)
