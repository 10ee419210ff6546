"""How sure a figure is: bootstrap intervals over users and paired comparisons of two models.

The unit of every resample is the user: a user's rows (one under leave-last-out, several target queries under
the ``timeline`` protocol) are drawn together, so the interval reflects how the figure would move with another
sample of users, not of events. Every function is seeded; the same inputs give the same interval.

* :func:`metric_intervals`: a 95% percentile-bootstrap interval for every metric of one model, per-user means
  and pooled metrics (coverage, Gini, tail exposure, NDCG gap) alike (the pooled ones re-centred on the estimate,
  since a resample with repeated users holds fewer distinct items); with several seeds each draw scores the
  same users under every seed and averages, so the interval is that of the seed mean.
* :func:`paired_comparison`: the difference of two models' per-user values on the users both evaluated, with a
  paired bootstrap interval and a two-sided sign-flip randomisation p-value.
* :func:`clustered_interval` and :func:`paired_clustered_comparison`: the same for a mean over samples that come
  in clusters (several ReDial samples from one dialogue): whole clusters are resampled and sign-flipped, and the
  statistic stays the mean over samples (a ratio of sums), so correlated samples do not narrow the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmrec.errors import ConfigError
from llmrec.eval.metrics import PER_USER_METRICS, MetricParts

__all__ = [
    "N_BOOT",
    "PairedDifference",
    "clustered_interval",
    "metric_intervals",
    "paired_clustered_comparison",
    "paired_comparison",
    "seed_mean",
    "verdict",
]

N_BOOT = 1000
"""Bootstrap draws per interval: the Monte-Carlo error of a 95% percentile bound is then well below its width."""

N_PERMUTATIONS = 10_000
"""Sign-flip draws per p-value (the smallest reportable p is about 1e-4)."""


def _percentiles(draws: np.ndarray, level: float) -> list[float]:
    """The central ``level`` interval of ``draws`` (NaN-free), rounded for JSON."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def _user_draws(n_users: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_users)`` counts: how often each user is drawn in each bootstrap sample."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_users, size=(n_boot, n_users))
    counts = np.zeros((n_boot, n_users), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_users), picks.ravel()), 1)
    return counts


def _weighted_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per draw, the mean of ``values`` (per user, NaN = undefined) weighted by the draw's counts."""
    ok = ~np.isnan(values)
    if not ok.any():
        return np.full(counts.shape[0], np.nan)
    weights = counts[:, ok].astype(np.float64)
    total = weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (weights @ values[ok]) / total


def seed_mean(parts: Sequence[MetricParts], name: str) -> np.ndarray:
    """Per-user values of ``name`` averaged over seeds (every seed must have evaluated the same users)."""
    stacked = np.vstack([p.user_values(name) for p in parts])
    with np.errstate(all="ignore"):
        counts = (~np.isnan(stacked)).sum(axis=0)
        return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def metric_intervals(
    parts: Sequence[MetricParts], *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """95% bootstrap intervals over users for every metric of one model (``{"ndcg@10": [low, high], ...}``).

    Args:
        parts: One :class:`MetricParts` per seed, all over the same users and rows (one element without seeds).
        n_boot: Bootstrap draws.
        seed: Seed of the draws (the same seed gives the same interval).
        level: Coverage of the interval.

    Returns:
        An interval for every per-user and pooled metric that is defined; metrics that are NaN on every draw
        (e.g. ILD without item features) are left out.

    """
    if not parts:
        raise ConfigError("metric_intervals needs at least one MetricParts")
    first = parts[0]
    users, inverse = first.user_index()
    for other in parts[1:]:
        if not np.array_equal(other.users, first.users):
            raise ConfigError("every seed must evaluate the same rows; got different users")
    counts = _user_draws(len(users), n_boot, seed)
    k = first.k
    out: dict[str, list[float]] = {}
    for name in PER_USER_METRICS:
        draws = _weighted_means(seed_mean(parts, name), counts)
        draws = draws[~np.isnan(draws)]
        if len(draws):
            out[f"{name}@{k}"] = _percentiles(draws, level)
    # Pooled metrics: recompute on each draw's rows (all rows of every drawn user, as often as drawn).
    by_user = np.argsort(inverse, kind="stable")
    rows_of = np.split(by_user, np.cumsum(np.bincount(inverse, minlength=len(users)))[:-1])
    pooled: dict[str, list[float]] = {}
    for b in range(n_boot):
        drawn = np.repeat(np.arange(len(users)), counts[b])
        rows = np.concatenate([rows_of[u] for u in drawn]) if len(drawn) else np.zeros(0, dtype=np.int64)
        per_seed = [p.pooled(rows) for p in parts]
        for key in per_seed[0]:
            pooled.setdefault(key, []).append(float(np.mean([s[key] for s in per_seed])))
    whole = [p.pooled() for p in parts]
    estimate = {key: float(np.mean([w[key] for w in whole])) for key in pooled}
    for key, values in pooled.items():
        arr = np.asarray(values)
        arr = arr[~np.isnan(arr)]
        if len(arr) and not np.isnan(estimate[key]):
            # A resample repeats users, so it holds fewer distinct items: coverage and Gini shift under the
            # bootstrap. The interval keeps the bootstrap's spread, re-centred on the estimate.
            out[key] = _percentiles(arr - (np.median(arr) - estimate[key]), level)
    return out


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` on one metric over the users both models evaluated.

    Attributes:
        diff: Mean over users of ``a - b``.
        ci95: Paired bootstrap interval of ``diff`` (users resampled, both models' values kept together).
        p_value: Two-sided sign-flip randomisation test of "no difference" (each user's difference flips sign
            at random under the null).
        n_users: Users in the comparison.

    """

    diff: float
    ci95: list[float]
    p_value: float
    n_users: int


def verdict(ci95: Sequence[float], direction: str = "higher") -> str:
    """The one-line reading of a difference ``a - b`` from its 95% interval: one rule for every table.

    ``"within noise"`` when the interval holds 0. Otherwise, for a metric that improves upward
    (``direction="higher"``) or downward (``"lower"``), ``"better"`` or ``"worse"`` for ``a``; for any other
    direction (closer to zero, a count, or a difference that is no quality, such as a diagnostic swap), which way
    ``a`` went: ``"higher"`` or ``"lower"``.
    """
    low, high = ci95
    if low <= 0 <= high:
        return "within noise"
    a_higher = low > 0
    if direction == "higher":
        return "better" if a_higher else "worse"
    if direction == "lower":
        return "worse" if a_higher else "better"
    return "higher" if a_higher else "lower"


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Paired difference of two per-user value arrays aligned by user (NaN in either drops the user).

    Raises:
        ConfigError: The arrays differ in length or no user has both values.

    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"paired values must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    if not len(d):
        raise ConfigError("no user has a value under both models: nothing to compare")
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):
        size = min(256, n_boot - start)
        means[start : start + size] = d[rng.integers(0, n, size=(size, n))].mean(axis=1)
    observed = float(d.mean())
    extreme = 0
    for start in range(0, n_permutations, 256):
        size = min(256, n_permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        extreme += int((np.abs((signs * d).mean(axis=1)) >= abs(observed) - 1e-15).sum())
    p_value = (extreme + 1) / (n_permutations + 1)
    return PairedDifference(
        diff=round(observed, 6), ci95=_percentiles(means, level), p_value=round(p_value, 6), n_users=n
    )


def _cluster_sums(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the sum of ``values`` and the number of samples (clusters in order of first appearance)."""
    if values.shape != clusters.shape or values.ndim != 1:
        raise ConfigError(
            f"values and clusters must be two 1-d arrays of one length, got {values.shape}, {clusters.shape}"
        )
    if not len(values):
        raise ConfigError("no samples: nothing to resample")
    _, inverse = np.unique(clusters, return_inverse=True)
    n_clusters = int(inverse.max()) + 1
    sums = np.bincount(inverse, weights=values, minlength=n_clusters)
    counts = np.bincount(inverse, minlength=n_clusters).astype(np.float64)
    return sums, counts


def clustered_interval(
    values: np.ndarray,
    clusters: np.ndarray | Sequence[object],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> list[float]:
    """95% bootstrap interval of the mean of ``values`` over samples, resampling whole clusters.

    Args:
        values: One value per sample (e.g. 1.0 when the target is in the top 10, else 0.0); no NaN.
        clusters: The cluster of each sample (e.g. its dialogue id), any hashable labels.
        n_boot: Bootstrap draws.
        seed: Seed of the draws.
        level: Coverage of the interval.

    Returns:
        ``[low, high]``: each draw takes as many clusters as there are, with replacement, and computes the
        sum of their values over the sum of their sample counts.

    Raises:
        ConfigError: The arrays differ in length or are empty.

    """
    sums, counts = _cluster_sums(np.asarray(values, dtype=np.float64), np.asarray(clusters))
    draws = _user_draws(len(sums), n_boot, seed).astype(np.float64)
    return _percentiles((draws @ sums) / (draws @ counts), level)


def paired_clustered_comparison(
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray | Sequence[object],
    *,
    n_boot: int = N_BOOT,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Mean over samples of ``a - b`` (aligned per sample) with a cluster bootstrap interval and p-value.

    Whole clusters are resampled for the interval; under the null each cluster's summed difference flips sign
    at random (a sign-flip randomisation test over clusters). ``n_users`` of the result is the number of
    samples.

    Raises:
        ConfigError: The arrays differ in length, are empty or hold NaN.

    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired values must have one length, got {a.shape} and {b.shape}")
    d = a - b
    if np.isnan(d).any():
        raise ConfigError("paired clustered values must not hold NaN")
    sums, counts = _cluster_sums(d, np.asarray(clusters))
    observed = float(sums.sum() / counts.sum())
    draws = _user_draws(len(sums), n_boot, seed).astype(np.float64)
    ci = _percentiles((draws @ sums) / (draws @ counts), level)
    rng = np.random.default_rng(seed + 1)
    extreme = 0
    for start in range(0, n_permutations, 256):
        size = min(256, n_permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, len(sums)))
        extreme += int((np.abs(signs @ sums / counts.sum()) >= abs(observed) - 1e-15).sum())
    p_value = (extreme + 1) / (n_permutations + 1)
    return PairedDifference(diff=round(observed, 6), ci95=ci, p_value=round(p_value, 6), n_users=len(d))
