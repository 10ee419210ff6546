"""Full-ranking metrics: accuracy at K and the beyond-accuracy measures of the evaluation protocol.

Every function works on a batch of users at once (numpy/scipy, no Python loop per user), so a whole test set
is scored in milliseconds. The shared inputs are:

* ``ranked``: ``(n_users, width)`` integer array of dense item indices, best first, ``-1`` in padded slots
  (what :attr:`llmrec.models.base.Recommendations.item_idx` holds). Only the first ``k`` columns are read; a
  narrower array counts as padded up to ``k``. A slot keeps its position even when padding comes before it,
  so rank ``j`` is always column ``j``. An item may appear at most once per row.
* ``truth``: ``(n_users, n_items)`` sparse matrix of held-out relevant items; row ``i`` belongs to row ``i`` of
  ``ranked``. Any stored non-zero counts as relevant (binary relevance).

Per-user functions return float arrays with ``NaN`` where the metric is undefined for that user (no relevant
item, or an empty list), so a plain ``np.nanmean`` gives the protocol's average. :func:`compute_metrics` returns
the whole set as ``{"ndcg@10": ..., ...}`` (the key style of DESIGN.md) over the users that have at least one
relevant item; every metric in it, accuracy and beyond, is computed over that same set of users.

Accuracy definitions, for one user with relevant set ``R`` (``|R| >= 1``) and hit indicators ``h_1..h_K``
(``h_j = 1`` when the item at rank ``j`` is in ``R``; padding never hits):

* Precision@K = ``sum(h) / K`` (padded slots count as misses, as in trec_eval's ``P_K``).
* Recall@K = ``sum(h) / |R|``.
* HR@K = ``1`` if ``sum(h) > 0`` else ``0``.
* NDCG@K = ``DCG / IDCG`` with ``DCG = sum_j h_j / log2(j + 1)`` and ``IDCG = sum_{j <= min(|R|, K)} 1 / log2(j + 1)``
  (binary gains; equals trec_eval's ``ndcg_cut_K`` on binary judgements).
* MRR@K = ``1 / (rank of the first hit)``, ``0`` without a hit in the top K (trec_eval ``recip_rank`` on a run
  truncated to K).
* MAP@K = ``sum_j h_j * Precision@j / min(|R|, K)``. The ``min(|R|, K)`` denominator makes a perfect list score
  1 even when ``|R| > K``; trec_eval's ``map_cut_K`` divides by ``|R|`` instead, so the two agree when
  ``|R| <= K``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    # The base of every SciPy sparse matrix and array: scipy-stubs types sp.spmatrix and sp.sparray as bare mixins
    # that SciPy's own functions (sp.csr_matrix(...), .shape) do not accept.
    from scipy.sparse._base import _spbase

    from llmrec.data.dataset import Dataset

    # What the metrics take as a user x item matrix: any SciPy sparse matrix or array, or a dense array.
    MatrixLike: TypeAlias = _spbase | np.ndarray

__all__ = [
    "CLOSER_TO_ZERO_IS_BETTER",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "METRIC_DESCRIPTIONS",
    "PER_USER_METRICS",
    "POOLED_METRICS",
    "MetricParts",
    "accuracy_per_user",
    "activity_groups",
    "average_recommended_popularity",
    "catalog_coverage",
    "compute_metrics",
    "gini_index",
    "group_exposure",
    "group_means",
    "head_tail_groups",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "item_features",
    "map_at_k",
    "metric_direction",
    "metric_parts",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "popularity_baseline",
    "precision_at_k",
    "recall_at_k",
    "serendipity",
]

ACCURACY_METRICS: tuple[str, ...] = ("precision", "recall", "hr", "ndcg", "mrr", "map")

METRIC_DESCRIPTIONS: dict[str, str] = {
    "precision": "Share of the K recommended slots that hold a held-out relevant item.",
    "recall": "Share of the user's held-out relevant items found in the top K.",
    "hr": "Share of users with at least one relevant item in the top K (hit rate).",
    "ndcg": "Rank-discounted hits (log2) over the best possible for the user, binary gains.",
    "mrr": "Mean of 1 / rank of the first relevant item in the top K (0 without a hit).",
    "map": "Mean average precision: precision at each hit rank, summed, over min(#relevant, K).",
    "coverage": "Share of the catalogue recommended to at least one user (catalogue coverage).",
    "ild": "Intra-list diversity: mean pairwise (1 - cosine) of item features within a list.",
    "novelty": "Mean self-information -log2((pop+1)/(users+1)) of recommended items, in bits.",
    "serendipity": "Share of the K slots that are relevant and not in a popularity baseline's top K.",
    "gini": "Gini index of how often each catalogue item is recommended (0 equal, 1 all on one).",
    "arp": "Average recommended popularity: share of training users who know a recommended item.",
    "tail_exposure": "Share of recommendation slots given to long-tail items (outside the top 20% by popularity).",
    "ndcg_gap": "NDCG of the 20% most active users minus that of the other users.",
    "n_users": "Users evaluated (those with at least one held-out relevant item).",
}
"""One line per metric (keyed by base name, without ``@k``), for reports."""

HIGHER_IS_BETTER: frozenset[str] = frozenset(
    {"precision", "recall", "hr", "ndcg", "mrr", "map", "coverage", "ild", "novelty", "serendipity", "tail_exposure"}
)
"""Base names of metrics where a larger value is better."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"gini", "arp"})
"""Base names of metrics where a smaller value is better (less popularity bias)."""

CLOSER_TO_ZERO_IS_BETTER: frozenset[str] = frozenset({"ndcg_gap"})
"""Base names of signed gap metrics: 0 means both groups are served equally well."""


def metric_direction(key: str) -> Literal["higher", "lower", "zero", "none"]:
    """Which way a metric improves, for a key with or without ``@k`` (``"ndcg@10"`` or ``"ndcg"``).

    Returns:
        ``"higher"``, ``"lower"``, ``"zero"`` (closer to zero is better) or ``"none"`` (a count such as
        ``n_users``, or an unknown key).

    """
    base = key.split("@", 1)[0]
    if base in HIGHER_IS_BETTER:
        return "higher"
    if base in LOWER_IS_BETTER:
        return "lower"
    if base in CLOSER_TO_ZERO_IS_BETTER:
        return "zero"
    return "none"


# -- input checks ------------------------------------------------------------------------------------
def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _prepare_ranked(ranked: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """The first ``k`` columns of ``ranked`` as int64 (padded with -1 to width ``k``), validated."""
    k = _check_k(k)
    arr = np.asarray(ranked)
    if arr.ndim != 2:
        raise ConfigError(f"ranked must be a 2-d (n_users, k) array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"ranked must hold integer item indices, got dtype {arr.dtype}")
    arr = arr[:, :k].astype(np.int64, copy=False)
    if arr.shape[1] < k:
        arr = np.hstack([arr, np.full((arr.shape[0], k - arr.shape[1]), -1, dtype=np.int64)])
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -1 or hi >= n_items:
            raise ConfigError(
                f"ranked holds item index {lo if lo < -1 else hi}, outside [0, {n_items}) (use -1 for padding)"
            )
        srt = np.sort(arr, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ConfigError(f"ranked row {row} lists an item more than once in its top {k}; deduplicate the list")
    return arr


def _prepare_truth(truth: MatrixLike, n_rows: int) -> sp.csr_matrix:
    """``truth`` as a canonical CSR matrix (sorted indices, no duplicates, explicit zeros removed)."""
    mat = sp.csr_matrix(truth, copy=True)
    if mat.shape[0] != n_rows:
        raise ConfigError(f"truth has {mat.shape[0]} rows but ranked has {n_rows}; row i must belong to user i")
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.sort_indices()
    return mat


def _row_keys(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> np.ndarray:
    """One int64 key per (row, column) pair, ordered like row-major positions."""
    return rows.astype(np.int64) * np.int64(max(n_cols, 1)) + cols.astype(np.int64)


def _member(ranked: np.ndarray, sorted_keys: np.ndarray, n_cols: int) -> np.ndarray:
    """Boolean ``(n, k)``: is ``ranked[i, j]`` among the (row, column) pairs in ``sorted_keys``? Padding: False."""
    n, k = ranked.shape
    valid = ranked >= 0
    keys = _row_keys(np.repeat(np.arange(n), k).reshape(n, k), np.maximum(ranked, 0), n_cols)
    pos = np.searchsorted(sorted_keys, keys)
    found = np.zeros_like(valid)
    inside = pos < len(sorted_keys)
    found[inside] = sorted_keys[pos[inside]] == keys[inside]
    return found & valid


def _hits(ranked: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(n, k)`` hit matrix of prepared inputs (relevant item at that rank)."""
    rows = np.repeat(np.arange(truth.shape[0]), np.diff(truth.indptr))
    keys = _row_keys(rows, truth.indices, truth.shape[1])  # already sorted: CSR with sorted indices
    return _member(ranked, keys, truth.shape[1])


# -- accuracy ------------------------------------------------------------------------------------------
def hit_matrix(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Boolean ``(n_users, k)`` matrix, true where the item at rank ``j`` is in the user's relevant set.

    Padding (``-1``) is never a hit. This is the one quantity every accuracy metric is built from.
    """
    t = _prepare_truth(truth, np.asarray(ranked).shape[0])
    return _hits(_prepare_ranked(ranked, k, t.shape[1]), t)


def _accuracy_from_hits(hits: np.ndarray, n_rel: np.ndarray) -> dict[str, np.ndarray]:
    """All accuracy metrics per user from the hit matrix and the number of relevant items per user."""
    k = hits.shape[1]
    h = hits.astype(np.float64)
    n_hits = h.sum(axis=1)
    defined = n_rel > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = n_rel.astype(np.float64)
        ideal_n = np.minimum(n_rel, k)
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        idcg = np.concatenate([[0.0], np.cumsum(discount)])[ideal_n]
        first = np.argmax(hits, axis=1)
        any_hit = n_hits > 0
        prec_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        out = {
            "precision": n_hits / k,
            "recall": n_hits / rel,
            "hr": any_hit.astype(np.float64),
            "ndcg": (h @ discount) / idcg,
            "mrr": np.where(any_hit, 1.0 / (first + 1.0), 0.0),
            "map": (prec_at * h).sum(axis=1) / ideal_n,
        }
    return {name: np.where(defined, val, np.nan) for name, val in out.items()}


def accuracy_per_user(ranked: np.ndarray, truth: MatrixLike, k: int) -> dict[str, np.ndarray]:
    """Precision, Recall, HR, NDCG, MRR and MAP at ``k`` for every user in one pass.

    Definitions are in the module docstring. Users without a relevant item get ``NaN`` (the metric is
    undefined for them and the protocol leaves them out of the average).

    Returns:
        ``{"precision": (n_users,), "recall": ..., "hr": ..., "ndcg": ..., "mrr": ..., "map": ...}``.

    """
    t = _prepare_truth(truth, np.asarray(ranked).shape[0])
    r = _prepare_ranked(ranked, k, t.shape[1])
    return _accuracy_from_hits(_hits(r, t), np.diff(t.indptr))


def precision_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user Precision@K = hits in the top K / K (``NaN`` for users with no relevant item)."""
    return accuracy_per_user(ranked, truth, k)["precision"]


def recall_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user Recall@K = hits in the top K / number of relevant items (``NaN`` when there are none)."""
    return accuracy_per_user(ranked, truth, k)["recall"]


def hit_rate_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user HR@K: 1 when any of the top K is relevant, else 0 (``NaN`` for users with no relevant item)."""
    return accuracy_per_user(ranked, truth, k)["hr"]


def ndcg_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user NDCG@K with binary gains, ``1/log2(rank+1)`` discount and ideal DCG over ``min(|R|, K)`` hits."""
    return accuracy_per_user(ranked, truth, k)["ndcg"]


def mrr_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user reciprocal rank of the first relevant item within the top K (0 without a hit)."""
    return accuracy_per_user(ranked, truth, k)["mrr"]


def map_at_k(ranked: np.ndarray, truth: MatrixLike, k: int) -> np.ndarray:
    """Per-user AP@K = sum of Precision@j at each hit rank j <= K, divided by ``min(|R|, K)``."""
    return accuracy_per_user(ranked, truth, k)["map"]


# -- beyond accuracy -----------------------------------------------------------------------------------
def catalog_coverage(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Catalogue coverage@K: distinct items in anyone's top K divided by ``n_items``.

    It tells whether a model uses the catalogue or keeps recommending the same few items. ``NaN`` when there
    are no lists at all (no users to measure) or no items.
    """
    r = _prepare_ranked(ranked, k, n_items)
    if n_items == 0 or r.shape[0] == 0:
        return float("nan")
    return float(np.unique(r[r >= 0]).size / n_items)


def _multi_hot(values: pd.Series, *, lower: bool) -> sp.csr_matrix:
    """Multi-hot CSR (rows = entries of ``values``) of its "|"-separated labels, each row L2-normalised."""
    text = values.fillna("").astype(str)
    if lower:
        text = text.str.lower()
    parts = text.str.split("|").explode().str.strip()
    parts = parts[parts.notna() & (parts != "")]
    n = len(values)
    if parts.empty:
        return sp.csr_matrix((n, 0), dtype=np.float64)
    rows = np.asarray(parts.index, dtype=np.int64)
    codes, labels = pd.factorize(parts, sort=True)
    mat = sp.csr_matrix((np.ones(len(rows)), (rows, codes)), shape=(n, len(labels)), dtype=np.float64)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    norms = np.sqrt(np.asarray(mat.sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ mat)


def item_features(dataset: Dataset, columns: Sequence[str] = ("genres", "tags")) -> sp.csr_matrix:
    """Item x feature matrix from "|"-separated label columns of ``dataset.items`` (genres, then tags).

    Each column present becomes one multi-hot block (tags are lower-cased and stripped, so "Funny" and
    "funny " are one feature). Every block is L2-normalised per item before the blocks are stacked side by
    side, so for items with both blocks the cosine is the average of the genre cosine and the tag cosine: a
    movie with fifty tags does not drown out its three genres. Items without any label get an all-zero row
    (and are left out of :func:`intra_list_diversity`). Columns missing from the table are skipped.

    Args:
        dataset: The dataset whose ``items`` frame (aligned to item indices) holds the label columns.
        columns: Label columns to use, in order.

    Returns:
        ``(n_items, n_features)`` float64 CSR matrix (zero columns when no listed column exists).

    """
    items = dataset.items.reset_index(drop=True)
    if len(items) != dataset.n_items:
        raise ConfigError(f"dataset.items has {len(items)} rows but the catalogue has {dataset.n_items} items")
    blocks = [_multi_hot(items[col], lower=(col != "genres")) for col in columns if col in items.columns]
    if not blocks:
        return sp.csr_matrix((dataset.n_items, 0), dtype=np.float64)
    return sp.csr_matrix(sp.hstack(blocks, format="csr"))


_build_item_features = item_features  # compute_metrics has a parameter of the same name


def _slots(ranked: np.ndarray, n_items: int) -> sp.csr_matrix:
    """``(n_users, n_items)`` 0/1 CSR marking the items in each (prepared) list."""
    valid = ranked >= 0
    rows = np.nonzero(valid)[0]
    return sp.csr_matrix((np.ones(len(rows)), (rows, ranked[valid])), shape=(ranked.shape[0], n_items))


def intra_list_diversity(ranked: np.ndarray, features: MatrixLike, k: int) -> np.ndarray:
    """Per-user intra-list diversity@K: mean over item pairs of the list of ``1 - cos(f_a, f_b)``.

    Items whose feature row is all zero carry no evidence about similarity and are left out of the list;
    lists with fewer than two remaining items get ``NaN`` (skipped in the mean). With non-negative features
    (multi-hot, :func:`item_features`) the value lies in [0, 1]; with signed embeddings in [0, 2]. Computed
    without forming the pairs: with unit rows ``f_i`` and ``s = sum_i f_i`` over ``m`` items,
    ``sum_{a != b} cos = |s|^2 - m``.

    Args:
        ranked: ``(n_users, width)`` item indices, ``-1`` padding.
        features: ``(n_items, d)`` item features, sparse or dense.
        k: List length.

    """
    feats: sp.csr_matrix | np.ndarray
    if sp.issparse(features):
        feats = sparse = sp.csr_matrix(features, dtype=np.float64)
        sq = np.asarray(sparse.multiply(sparse).sum(axis=1)).ravel()
    else:
        feats = np.asarray(features, dtype=np.float64)
        if feats.ndim != 2:
            raise ConfigError(f"features must be a 2-d (n_items, d) matrix, got shape {feats.shape}")
        sq = np.einsum("ij,ij->i", feats, feats)
    n_items = feats.shape[0]
    r = _prepare_ranked(ranked, k, n_items)
    norms = np.sqrt(sq)
    has = norms > 0
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=has)
    unit = sp.diags(scale) @ feats if sp.issparse(feats) else feats * scale[:, None]
    marks = _slots(r, n_items)
    summed = marks @ unit
    if isinstance(summed, np.ndarray):  # dense features; sparse ones give a sparse product
        s2 = np.einsum("ij,ij->i", summed, summed)
    else:
        s2 = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
    m = np.where(r >= 0, has[np.maximum(r, 0)], False).sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_cos = (s2 - m) / (m * (m - 1.0))
    ild = np.clip(1.0 - mean_cos, 0.0, 2.0)
    return np.where(m >= 2, ild, np.nan)


def novelty(ranked: np.ndarray, popularity: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Per-user novelty@K: mean self-information of the recommended items, in bits.

    ``novelty(i) = -log2((pop_i + 1) / (n_users + 1))`` where ``pop_i`` is the number of training users who
    interacted with item ``i``. The add-one smoothing keeps never-seen items finite (``log2(n_users + 1)``, the
    largest value) and gives 0 to an item every user knows. Padded slots are ignored; empty lists get ``NaN``.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    r = _prepare_ranked(ranked, k, len(pop))
    info = -np.log2((pop + 1.0) / (n_users + 1.0))
    return _mean_over_slots(r, info)


def _mean_over_slots(ranked: np.ndarray, per_item: np.ndarray) -> np.ndarray:
    """Per-row mean of ``per_item`` over the valid slots of a prepared list (``NaN`` for empty rows)."""
    valid = ranked >= 0
    total = np.where(valid, per_item[np.maximum(ranked, 0)], 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def average_recommended_popularity(ranked: np.ndarray, popularity: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Per-user ARP@K: mean of ``pop_i / n_users`` over the recommended items, in [0, 1].

    ``pop_i`` is the number of distinct training users of item ``i``, so the value is the share of users who
    already know a typical recommended item; higher means a stronger popularity bias. Empty lists get ``NaN``.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    r = _prepare_ranked(ranked, k, len(pop))
    return _mean_over_slots(r, pop / max(n_users, 1))


def gini_index(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Gini index of the recommendation counts over the whole catalogue (every item, recommended or not).

    With counts sorted ascending ``c_1 <= ... <= c_n``: ``G = sum_i (2i - n - 1) c_i / ((n - 1) sum_i c_i)``.
    This is the usual Gini scaled by ``n / (n - 1)`` so that the bounds are exact: 0 when every item gets the
    same number of slots, 1 when all slots go to one item. ``NaN`` when nothing is recommended; 0 for a
    one-item catalogue.
    """
    r = _prepare_ranked(ranked, k, n_items)
    counts = np.sort(np.bincount(r[r >= 0], minlength=n_items)).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    if n_items < 2:
        return 0.0
    weights = 2.0 * np.arange(1, n_items + 1) - n_items - 1
    return float(np.clip((weights @ counts) / ((n_items - 1) * total), 0.0, 1.0))


def popularity_baseline(train: Dataset, k: int, users: np.ndarray | None = None) -> np.ndarray:
    """Top-``k`` most popular training items per user, leaving out the items the user trained on.

    Popularity is the number of distinct training users; ties go to the lower item index, so the lists are
    deterministic. This is the "obvious" recommendation :func:`serendipity` discounts.

    Args:
        train: Training data.
        k: List length.
        users: Dense training user indices, one per output row (all users in index order when ``None``).

    Returns:
        ``(len(users), k)`` int64 item indices, ``-1`` where fewer than ``k`` unseen items exist.

    """
    k = _check_k(k)
    uidx = np.arange(train.n_users) if users is None else np.asarray(users, dtype=np.int64)
    n_items = train.n_items
    pop = train.item_popularity
    order = np.lexsort((np.arange(n_items), -pop))
    seen = train.matrix("binary")[uidx]
    max_seen = int(seen.getnnz(axis=1).max()) if len(uidx) else 0
    width = min(n_items, k + max_seen)
    head = order[:width]
    head_seen = seen[:, head]
    out = np.full((len(uidx), k), -1, dtype=np.int64)
    take = min(k, width)
    chunk = max(1, (1 << 22) // max(width, 1))
    for start in range(0, len(uidx), chunk):  # bounded memory; one chunk covers thousands of users
        block = head_seen[start : start + chunk].toarray() > 0
        pos = np.argsort(block, axis=1, kind="stable")[:, :take]  # unseen (False) first, in popularity order
        picked = head[pos]
        out[start : start + chunk, :take] = np.where(np.take_along_axis(block, pos, axis=1), -1, picked)
    return out


def serendipity(ranked: np.ndarray, truth: MatrixLike, baseline_ranked: np.ndarray, k: int) -> np.ndarray:
    """Per-user serendipity@K: share of the K slots holding an item that is relevant and unexpected.

    An item is unexpected for a user when it is not in the first ``k`` entries of that user's row of
    ``baseline_ranked`` (by default, in :func:`compute_metrics`, :func:`popularity_baseline`). The value is
    ``#(relevant and unexpected in the top K) / K``, so it is at most Precision@K and equals it when the
    baseline shares nothing with the list. Users without a relevant item get ``NaN``.

    Args:
        ranked: ``(n_users, width)`` item indices, ``-1`` padding.
        truth: ``(n_users, n_items)`` held-out relevant items.
        baseline_ranked: ``(n_users, width_b)`` the "obvious" lists, ``-1`` padding, aligned with ``ranked``.
        k: List length (also the baseline's length).

    """
    t = _prepare_truth(truth, np.asarray(ranked).shape[0])
    r = _prepare_ranked(ranked, k, t.shape[1])
    base = np.asarray(baseline_ranked)
    if base.ndim != 2 or base.shape[0] != r.shape[0]:
        raise ConfigError(f"baseline_ranked must have shape ({r.shape[0]}, >=1), got {base.shape}")
    b = base[:, :k].astype(np.int64, copy=False)
    valid = b >= 0
    keys = np.sort(_row_keys(np.nonzero(valid)[0], b[valid], t.shape[1]))
    hits = _hits(r, t) & ~_member(r, keys, t.shape[1])
    return np.where(np.diff(t.indptr) > 0, hits.sum(axis=1) / k, np.nan)


# -- groups and fairness -------------------------------------------------------------------------------
def _top_share(values: np.ndarray, share: float) -> np.ndarray:
    """Boolean mask of the top ``ceil(share * n)`` entries by value (ties to the lower index), zeros excluded."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"group share must be in [0, 1], got {share}")
    vals = np.asarray(values, dtype=np.float64)
    n_top = math.ceil(share * len(vals))
    order = np.lexsort((np.arange(len(vals)), -vals))
    mask = np.zeros(len(vals), dtype=bool)
    mask[order[:n_top]] = True
    return mask & (vals > 0)


def head_tail_groups(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Label items ``"head"`` or ``"tail"`` by training popularity.

    Head = the ``ceil(head_share * n_items)`` most popular items (ties broken by lower item index, so the split
    is deterministic), never including an item with zero popularity; everything else is tail.

    Returns:
        Object array of ``"head"`` / ``"tail"``, one per item.

    """
    return np.where(_top_share(popularity, head_share), "head", "tail").astype(object)


def activity_groups(activity: np.ndarray, active_share: float = 0.2) -> np.ndarray:
    """Label users ``"active"`` or ``"inactive"`` by training activity (distinct items).

    Active = the ``ceil(active_share * n)`` users with the most training interactions among the ``n`` users
    given (ties to the lower index, so pass the whole training population in index order for a split that
    does not depend on row order), never a user with none; the rest are inactive.

    Returns:
        Object array of ``"active"`` / ``"inactive"``, one per user.

    """
    return np.where(_top_share(activity, active_share), "active", "inactive").astype(object)


def group_exposure(ranked: np.ndarray, item_groups: np.ndarray, k: int) -> dict[Hashable, float]:
    """Share of all (non-padded) recommendation slots in the top K that go to each item group.

    Args:
        ranked: ``(n_users, width)`` item indices, ``-1`` padding.
        item_groups: One label per catalogue item (any hashable labels, e.g. ``"head"``/``"tail"``, a genre,
            a provider id).
        k: List length.

    Returns:
        ``{label: share}`` for every label in ``item_groups`` (shares sum to 1; ``NaN`` when no slot is filled).

    """
    labels = np.asarray(item_groups, dtype=object)
    r = _prepare_ranked(ranked, k, len(labels))
    codes, uniques = pd.factorize(pd.Series(labels), sort=True)
    counts = np.bincount(codes[r[r >= 0]], minlength=len(uniques)).astype(np.float64)
    total = counts.sum()
    shares = counts / total if total > 0 else np.full(len(uniques), np.nan)
    return {label: float(v) for label, v in zip(uniques, shares, strict=True)}


def group_means(values: np.ndarray, user_groups: np.ndarray) -> dict[Hashable, float]:
    """Mean of a per-user metric within each user group, ignoring ``NaN`` (users the metric skips).

    Args:
        values: Per-user values, e.g. :func:`ndcg_at_k` output.
        user_groups: One label per user (any hashable labels: activity level, age band, country...).

    Returns:
        ``{label: mean}``; ``NaN`` for a group without any defined value.

    """
    vals = np.asarray(values, dtype=np.float64)
    labels = np.asarray(user_groups, dtype=object)
    if vals.shape != labels.shape:
        raise ConfigError(f"values {vals.shape} and user_groups {labels.shape} must have the same shape")
    codes, uniques = pd.factorize(pd.Series(labels), sort=True)
    ok = ~np.isnan(vals)
    sums = np.bincount(codes[ok], weights=vals[ok], minlength=len(uniques))
    counts = np.bincount(codes[ok], minlength=len(uniques))
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return {label: float(v) for label, v in zip(uniques, means, strict=True)}


# -- everything at once --------------------------------------------------------------------------------
def _nanmean(values: np.ndarray) -> float:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def compute_metrics(
    ranked: np.ndarray,
    truth: MatrixLike,
    *,
    k: int,
    train: Dataset,
    item_features: MatrixLike | None = None,
    baseline_ranked: np.ndarray | None = None,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """All full-ranking metrics at ``k``, keyed ``name@k`` as in DESIGN.md, plus ``n_users``.

    Only users with at least one relevant item in ``truth`` are evaluated, and every metric (accuracy and
    beyond) is computed over that same set of users and their lists. Accuracy metrics and per-list measures
    (ILD, novelty, ARP, serendipity) are per-user means; coverage, Gini and tail exposure pool all their
    slots. Fairness: items are split head/tail by :func:`head_tail_groups` (top 20% by training popularity)
    and ``tail_exposure@k`` is the tail's share of slots; all training users are split by
    :func:`activity_groups` (top 20% by training activity are "active") and ``ndcg_gap@k`` is the mean NDCG
    of the evaluated active users minus that of the evaluated inactive users (``NaN`` if either is empty).
    Both splits are made on the whole training population, so a user's or item's group never depends on
    which rows are evaluated or on their order.

    Args:
        ranked: ``(n_users, width)`` dense item indices, best first, ``-1`` padding.
        truth: ``(n_users, n_items)`` held-out relevant items (row ``i`` belongs to ``ranked`` row ``i``).
        k: Cut-off.
        train: Training data: popularity, activity and seen items come from it, never from the test data.
        item_features: ``(n_items, d)`` features for ILD; built by :func:`item_features` from ``train`` when
            ``None``. ILD is ``NaN`` when the items have no features.
        baseline_ranked: Per-row "obvious" lists for serendipity, aligned with ``ranked``; the default is
            :func:`popularity_baseline` (most popular unseen items).
        users: Dense training user index of each row; when ``None`` row ``i`` is user ``i`` and the number
            of rows must equal ``train.n_users``.

    Returns:
        ``{"precision@k", "recall@k", "hr@k", "ndcg@k", "mrr@k", "map@k", "coverage@k", "ild@k",
        "novelty@k", "serendipity@k", "gini@k", "arp@k", "tail_exposure@k", "ndcg_gap@k", "n_users"}``.

    """
    return metric_parts(
        ranked, truth, k=k, train=train, item_features=item_features, baseline_ranked=baseline_ranked, users=users
    ).summary()


PER_USER_METRICS: tuple[str, ...] = (*ACCURACY_METRICS, "ild", "novelty", "serendipity", "arp")
"""Metrics with one value per evaluated user (their protocol value is the mean over users)."""

POOLED_METRICS: tuple[str, ...] = ("coverage", "gini", "tail_exposure", "ndcg_gap")
"""Metrics computed from all lists at once (catalogue shares, group gaps): not a mean of per-user values."""


@dataclass(frozen=True)
class MetricParts:
    """Everything :func:`compute_metrics` needs, per evaluated user, so any subset or resample can be scored.

    The bootstrap of :mod:`llmrec.eval.stats` draws users with replacement and recomputes every metric on the
    draw through :meth:`summary`, so an interval covers pooled metrics (coverage, Gini) exactly as it covers
    per-user means.

    Attributes:
        k: Cut-off.
        per_user: ``{name: (n,) values}`` for :data:`PER_USER_METRICS` (``NaN`` where undefined).
        ranked: ``(n, k)`` prepared lists of the evaluated users.
        user_groups: Activity group (``"active"``/``"inactive"``) of each evaluated user.
        item_groups: Head/tail group of each catalogue item.
        n_items: Catalogue size.
        users: Dense training user index of each evaluated row.

    """

    k: int
    per_user: dict[str, np.ndarray]
    ranked: np.ndarray
    user_groups: np.ndarray
    item_groups: np.ndarray
    n_items: int
    users: np.ndarray

    def user_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(unique users, row -> position in unique users)``: the units of the bootstrap."""
        return np.unique(self.users, return_inverse=True)

    def user_values(self, name: str) -> np.ndarray:
        """Per-user values of a per-user metric, one per distinct user (rows of one user averaged, NaN-aware).

        A protocol with several target queries per user (``timeline``) weighs every user once, like
        leave-last-out does; with one row per user this is the row values in user order.
        """
        unique, inverse = self.user_index()
        values = self.per_user[name]
        ok = ~np.isnan(values)
        sums = np.bincount(inverse[ok], weights=values[ok], minlength=len(unique))
        counts = np.bincount(inverse[ok], minlength=len(unique))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)

    def pooled(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """The pooled metrics over ``rows`` (row indices, repeats allowed; all rows when ``None``)."""
        k = self.k
        r = self.ranked if rows is None else self.ranked[rows]
        groups = self.user_groups if rows is None else self.user_groups[rows]
        ndcg = self.per_user["ndcg"] if rows is None else self.per_user["ndcg"][rows]
        by_activity = group_means(ndcg, groups)
        return {
            f"coverage@{k}": catalog_coverage(r, self.n_items, k),
            f"gini@{k}": gini_index(r, self.n_items, k),
            f"tail_exposure@{k}": group_exposure(r, self.item_groups, k).get("tail", float("nan")),
            f"ndcg_gap@{k}": by_activity.get("active", float("nan")) - by_activity.get("inactive", float("nan")),
        }

    def summary(self) -> dict[str, float]:
        """Every metric over all evaluated users, keyed ``name@k``, plus ``n_users`` (see compute_metrics)."""
        k = self.k
        means = {name: _nanmean(self.user_values(name)) for name in PER_USER_METRICS}
        pooled = self.pooled()
        out: dict[str, float] = {f"{name}@{k}": means[name] for name in ACCURACY_METRICS}
        out[f"coverage@{k}"] = pooled[f"coverage@{k}"]
        for name in ("ild", "novelty", "serendipity"):
            out[f"{name}@{k}"] = means[name]
        out[f"gini@{k}"] = pooled[f"gini@{k}"]
        out[f"arp@{k}"] = means["arp"]
        out[f"tail_exposure@{k}"] = pooled[f"tail_exposure@{k}"]
        out[f"ndcg_gap@{k}"] = pooled[f"ndcg_gap@{k}"]
        out["n_users"] = len(np.unique(self.users))
        return out


def metric_parts(
    ranked: np.ndarray,
    truth: MatrixLike,
    *,
    k: int,
    train: Dataset,
    item_features: MatrixLike | None = None,
    baseline_ranked: np.ndarray | None = None,
    users: np.ndarray | None = None,
) -> MetricParts:
    """The per-user pieces of :func:`compute_metrics` (same arguments), for intervals and paired tests.

    Rows without a relevant item are dropped, as in :func:`compute_metrics`.
    """
    k = _check_k(k)
    n_items = train.n_items
    t = _prepare_truth(truth, np.asarray(ranked).shape[0])
    if t.shape[1] != n_items:
        raise ConfigError(f"truth has {t.shape[1]} item columns but the training catalogue has {n_items} items")
    r = _prepare_ranked(ranked, k, n_items)
    if users is None:
        if r.shape[0] != train.n_users:
            raise ConfigError(
                f"ranked has {r.shape[0]} rows but train has {train.n_users} users; pass users= (one index per row)"
            )
        uidx = np.arange(r.shape[0])
    else:
        uidx = np.asarray(users, dtype=np.int64)
        if uidx.shape != (r.shape[0],) or (uidx.size and (uidx.min() < 0 or uidx.max() >= train.n_users)):
            raise ConfigError(f"users must hold {r.shape[0]} training user indices in [0, {train.n_users})")

    n_rel = np.diff(t.indptr)
    keep = n_rel > 0
    r, t, uidx, n_rel = r[keep], t[keep], uidx[keep], n_rel[keep]
    pop = train.item_popularity
    n_train_users = train.n_users

    per_user = _accuracy_from_hits(_hits(r, t), n_rel)
    feats = _build_item_features(train) if item_features is None else item_features
    if feats.shape[0] != n_items:
        raise ConfigError(f"item_features has {feats.shape[0]} rows but the catalogue has {n_items} items")
    per_user["ild"] = intra_list_diversity(r, feats, k)
    per_user["novelty"] = novelty(r, pop, n_train_users, k)
    if baseline_ranked is None:
        base = popularity_baseline(train, k, uidx)
    else:
        base = np.asarray(baseline_ranked)
        if base.ndim != 2 or base.shape[0] != len(keep):
            raise ConfigError(f"baseline_ranked must have {len(keep)} rows (one per ranked row), got {base.shape}")
        base = base[keep]
    per_user["serendipity"] = serendipity(r, t, base, k)
    per_user["arp"] = average_recommended_popularity(r, pop, n_train_users, k)
    return MetricParts(
        k=k,
        per_user=per_user,
        ranked=r,
        # A property of the user, not of the row order.
        user_groups=activity_groups(train.user_activity)[uidx],
        item_groups=head_tail_groups(pop),
        n_items=n_items,
        users=uidx,
    )
