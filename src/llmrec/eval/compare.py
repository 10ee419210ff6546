"""Paired comparisons between the models of a results file, and merging files run one method at a time.

Comparisons are computed from the per-user values each :class:`~llmrec.eval.results.ModelResult` stores, so
they can be recomputed from JSON alone: after merging files of a sweep run a method at a time, or against
another reference than the one chosen at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmrec.errors import ConfigError
from llmrec.eval.metrics import metric_direction
from llmrec.eval.results import Comparison, EvalResults, ModelResult
from llmrec.eval.stats import paired_comparison, verdict

__all__ = ["CLASSICAL", "COMPARED_METRICS", "compare_results", "default_reference", "merge_results"]

CLASSICAL: frozenset[str] = frozenset({"popular", "itemknn", "ease", "als", "bpr"})
"""The classical baselines: the default reference is the best of these (an LLM claim names the strongest)."""

COMPARED_METRICS: tuple[str, ...] = ("ndcg", "recall", "mrr")
"""Metrics each comparison reports (at the results' k)."""


def default_reference(results: EvalResults) -> str | None:
    """The best classical baseline by NDCG@k among the results (``None`` when there is none)."""
    key = f"ndcg@{results.k}"
    classical = [r for r in results.results if r.model in CLASSICAL and r.metrics.get(key) is not None]
    if not classical:
        return None
    return max(classical, key=lambda r: r.metrics[key] or 0.0).model


def _aligned(a: ModelResult, b: ModelResult, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user values of both models on the users both evaluated, in one order."""
    for r in (a, b):
        if metric not in r.per_user or "users" not in r.per_user:
            raise ConfigError(
                f"result {r.model!r} has no per-user {metric} values",
                field="per_user",
                fix="re-run the evaluation with this version of llmrec (older files carry no per-user values)",
            )
    b_index = {u: i for i, u in enumerate(b.per_user["users"])}
    rows = [(i, b_index[u]) for i, u in enumerate(a.per_user["users"]) if u in b_index]
    va = np.array([a.per_user[metric][i] for i, _ in rows], dtype=np.float64)
    vb = np.array([b.per_user[metric][j] for _, j in rows], dtype=np.float64)
    return va, vb


def compare_results(
    results: EvalResults, reference: str | None = None, metrics: Sequence[str] = COMPARED_METRICS
) -> EvalResults:
    """``results`` with ``reference`` and a paired comparison of every other model against it.

    Args:
        results: Results whose models carry per-user values.
        reference: The model label to compare against; ``None`` = :func:`default_reference`.
        metrics: Metric names (without ``@k``) to compare.

    Raises:
        ConfigError: ``reference`` is not among the results.

    """
    labels = [r.model for r in results.results]
    if reference is None:
        reference = default_reference(results)
        if reference is None:
            return results.model_copy(update={"reference": None, "comparisons": []})
    elif reference not in labels:
        raise ConfigError(
            f"the reference model {reference!r} was not evaluated",
            field="compare_to",
            fix=f"name one of the evaluated models: {', '.join(labels)}",
        )
    ref = results.result(reference)
    rows: list[Comparison] = []
    for other in results.results:
        if other.model == reference:
            continue
        for name in metrics:
            metric = f"{name}@{results.k}"
            diff = paired_comparison(*_aligned(other, ref, metric))
            rows.append(
                Comparison(
                    a=other.model,
                    b=reference,
                    metric=metric,
                    diff=diff.diff,
                    ci95=diff.ci95,
                    p_value=diff.p_value,
                    n_users=diff.n_users,
                    verdict=verdict(diff.ci95, metric_direction(metric)),
                )
            )
    return results.model_copy(update={"reference": reference, "comparisons": rows})


def merge_results(paths: Sequence[str | Path], reference: str | None = None) -> EvalResults:
    """One results file from several runs of the same dataset, protocol and k (a sweep run a method at a time).

    Later files win when a model label repeats. Comparisons are recomputed over the merged models.

    Raises:
        ConfigError: No file given, or the files differ in dataset, protocol or k.

    """
    if not paths:
        raise ConfigError("merge needs at least one results file", field="paths")
    files = [EvalResults.read_json(p) for p in paths]
    first = files[0]
    by_label: dict[str, ModelResult] = {}
    for path, res in zip(paths, files, strict=True):
        if (res.dataset, res.protocol, res.k) != (first.dataset, first.protocol, first.k):
            raise ConfigError(
                f"{path}: {res.dataset}/{res.protocol}/k={res.k} differs from {first.dataset}/{first.protocol}/"
                f"k={first.k}",
                field="paths",
                fix="merge only runs of one dataset, protocol and k",
            )
        for r in res.results:
            by_label[r.model] = r
    merged = first.model_copy(update={"results": list(by_label.values()), "provenance": {}})
    merged.provenance = {"merged_from": [str(p) for p in paths], "parts": [f.provenance for f in files]}
    return compare_results(merged, reference)
