"""Evaluation runner: split by time, tune on validation, fit on train + validation, score the test targets.

The runner uses only the public Scorer API (``fit`` and ``recommend``), the same path the CLI uses, so the
numbers it reports are the numbers users get. Every fit is checked against the split's leakage guard first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, Stage, make_split
from llmrec.errors import ConfigError
from llmrec.eval.metrics import compute_metrics, item_features
from llmrec.eval.results import EvalResults, ModelResult
from llmrec.models.base import Scorer, TrainOptions
from llmrec.models.registry import SCORERS, get_scorer, tuning_configs

if TYPE_CHECKING:
    from llmrec.llm.base import LanguageModel
    from llmrec.pipeline import PipelineConfig

__all__ = ["ModelSpec", "evaluate_models", "evaluate_pipeline", "popularity_curve"]

log = logging.getLogger(__name__)

ModelSpec = str | tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str]
"""A model to evaluate: a registry name (tuned over its grid), ``(name, config)`` (fixed config), or
``(name, config, label)`` to report it under another label (e.g. ``("sasrec", {"text_init": True},
"sasrec+textinit")``)."""


def popularity_curve(ranked: np.ndarray, popularity: np.ndarray, bins: int = 10) -> list[float]:
    """Share of recommendation slots per popularity decile of the catalogue (most popular decile first)."""
    order = np.argsort(-popularity, kind="stable")
    decile = np.empty(len(popularity), dtype=np.int64)
    decile[order] = np.arange(len(popularity)) * bins // len(popularity)
    shown = ranked[ranked >= 0]
    if not len(shown):
        return [0.0] * bins
    counts = np.bincount(decile[shown], minlength=bins)
    return [round(float(c), 6) for c in counts / counts.sum()]


class _Stage:
    """The targets of one stage: which users to rank and their relevant items (minus what they have seen).

    ``candidates`` is ``None`` (rank the whole catalogue) except under ``cold-items``, where users are ranked
    among the stage's held-out items.
    """

    def __init__(self, split: Split, stage: Stage) -> None:
        self.fit = split.fit_data(stage)
        targets = split.targets(stage)
        self.users = np.unique(targets.user_idx)
        truth = targets.matrix("binary")[self.users]
        seen = self.fit.matrix("binary")[self.users]
        # An item the user already had cannot be recommended with exclude_seen; it is not a fair target.
        self.truth = sp.csr_matrix(truth - truth.multiply(seen))
        self.truth.eliminate_zeros()
        self.user_ids = targets.user_vocab.ids[self.users]
        cold = split.cold_items(stage)
        self.candidates = None if cold is None else targets.item_vocab.ids[cold]


@contextmanager
def _timer() -> Iterator[list[float]]:
    out: list[float] = []
    start = time.perf_counter()
    yield out
    out.append(time.perf_counter() - start)


def evaluate_models(
    data: Dataset,
    models: Sequence[ModelSpec],
    *,
    k: int = 10,
    protocol: str = "leave-last-out",
    tune: bool = True,
    options: TrainOptions | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> EvalResults:
    """Evaluate scorers on a time-respecting split with full ranking over all items.

    Args:
        data: The whole dataset; it is split here (``protocol``).
        models: Registry names (tuned over the scorer's ``tuning_grid`` when ``tune``) or ``(name, config)``.
        k: List length and metric cut-off.
        protocol: ``"leave-last-out"``, ``"temporal"`` or ``"cold-items"`` (see :mod:`llmrec.data.splits`;
            under ``cold-items`` every list is ranked among the held-out cold items only).
        tune: Search each named scorer's grid on the validation targets; otherwise use defaults.
        options: Seed, threads and progress for every fit.
        on_progress: Called with a short message before each fit (the CLI drives a progress bar with it).

    Returns:
        :class:`EvalResults` with test metrics for every model.

    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    for spec in models:
        name = spec if isinstance(spec, str) else spec[0]
        if name not in SCORERS:
            raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(SCORERS))}")
    options = options or TrainOptions()
    split = make_split(data, protocol)
    stages = {"valid": _Stage(split, "valid"), "test": _Stage(split, "test")}
    features = item_features(data)
    results = []
    for spec in models:
        name, fixed = (spec, None) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        label = spec[2] if isinstance(spec, tuple) and len(spec) == 3 else name
        tuning = fixed is None and tune
        candidates = tuning_configs(name) if tuning else [fixed or {}]
        tried: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any], dict[str, float]] | None = None
        if tune:
            # A scorer may choose its own config on validation more cheaply than grid refits (fusion weights).
            valid = stages["valid"]
            split.check(valid.fit, "valid")
            searched = SCORERS[name].search_config(
                fixed or {}, valid.fit, valid.user_ids, valid.truth, k=k, options=options
            )
            if searched is not None:
                tuning, tried = False, searched[1]
                score = max(t[f"ndcg@{k}"] for t in tried)
                best = (score, searched[0], {f"ndcg@{k}": score})
        for config in candidates if tuning else []:
            if on_progress:
                on_progress(f"{name}: tuning {config or 'defaults'}")
            valid_metrics, _, _, _ = _run(name, config, split, "valid", stages["valid"], k, options, features)
            score = valid_metrics[f"ndcg@{k}"]
            tried.append({"config": config, f"ndcg@{k}": score})
            if best is None or score > best[0]:
                best = (score, config, valid_metrics)
        config = best[1] if best else candidates[0]
        if on_progress:
            on_progress(f"{name}: final fit {config or 'defaults'}")
        metrics, fit_s, rec_s, ranked = _run(name, config, split, "test", stages["test"], k, options, features)
        results.append(
            ModelResult(
                model=label,
                metrics=metrics,
                fit_s=round(fit_s, 3),
                config=config,
                valid_metrics=best[2] if best else {},
                tuning=tried,
                recommend_ms_per_user=round(1000 * rec_s / max(len(stages["test"].users), 1), 4),
                popularity_curve=popularity_curve(ranked, stages["test"].fit.item_popularity),
            )
        )
        log.info("%s: ndcg@%d=%.4f fit %.1fs", label, k, metrics[f"ndcg@{k}"], fit_s)
    return EvalResults(dataset=data.name, protocol=protocol, k=k, results=results, split=split.describe())


def _run(
    name: str,
    config: dict[str, Any],
    split: Split,
    stage: Stage,
    targets: _Stage,
    k: int,
    options: TrainOptions,
    features: sp.csr_matrix,
) -> tuple[dict[str, float], float, float, np.ndarray]:
    """Fit one configuration for ``stage`` and score its targets: (metrics, fit seconds, rec seconds, lists)."""
    split.check(targets.fit, stage)
    scorer: Scorer = get_scorer(name, **config)
    with _timer() as fit_t:
        scorer.fit(targets.fit, options)
    with _timer() as rec_t:
        # Under cold-items every candidate is new to the fit data, so a model that learns from interactions alone
        # (popular) scores them all alike; breaking those ties by catalogue order would credit it with the order of
        # the item ids (in MovieLens the low ids are the most-watched films), so they are broken at random.
        tie_seed = None if targets.candidates is None else options.seed
        recs = scorer.recommend(
            targets.user_ids, k=k, exclude_seen=True, candidates=targets.candidates, tie_seed=tie_seed
        )
    metrics = compute_metrics(
        recs.item_idx, targets.truth, k=k, train=targets.fit, item_features=features, users=targets.users
    )
    return metrics, fit_t[0], rec_t[0], recs.item_idx


def evaluate_pipeline(
    data: Dataset,
    config: PipelineConfig,
    *,
    k: int = 10,
    protocol: str = "leave-last-out",
    weights: Sequence[float] | None = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    max_users: int | None = None,
    options: TrainOptions | None = None,
    lm: LanguageModel | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> EvalResults:
    """Evaluate a :class:`~llmrec.pipeline.Pipeline` with and without its language-model rerank stage.

    The pipeline is fitted on the validation stage's training data, its rerank scores of the validation users are
    computed once, and the blend weight is chosen among ``weights`` on validation NDCG@k (``None`` keeps
    ``config.rerank.weight``). Then it is refitted on train + validation and the test users are ranked twice by the
    same :meth:`Pipeline.rerank_scores` call: by the retriever alone (weight 0) and with the chosen weight. Both
    results are reported on the same users, so the difference is the rerank's effect.

    Args:
        data: The whole dataset; it is split here (``protocol``).
        config: The pipeline (it must have a rerank stage).
        k: List length and metric cut-off (at most ``config.candidates``).
        protocol: As in :func:`evaluate_models`.
        weights: Blend weights to try on validation.
        max_users: Rank at most this many users per stage (a seeded sample): the language model costs about a
            second per user on a CPU.
        options: Seed, threads and progress.
        lm: A loaded language model to share (otherwise built from ``config.lm``).
        on_progress: Called with a short message before each step.

    Returns:
        Two results: ``<retriever>`` and ``<retriever>+rerank:<method>`` (its ``config`` holds the chosen weight,
        its ``tuning`` every weight's validation NDCG@k).
    """
    from llmrec.pipeline import Pipeline

    if config.rerank is None:
        raise ConfigError("evaluate_pipeline needs a pipeline with a rerank stage (config.rerank)")
    options = options or TrainOptions()
    split = make_split(data, protocol)
    features = item_features(data)
    rng = np.random.default_rng(options.seed)
    key = f"ndcg@{k}"

    def ranked_batch(stage: Stage) -> tuple[Any, _Stage, np.ndarray, float, float]:
        targets = _Stage(split, stage)
        split.check(targets.fit, stage)
        rows = np.arange(len(targets.users))
        if max_users is not None and len(rows) > max_users:
            rows = np.sort(rng.choice(rows, max_users, replace=False))
        if on_progress:
            on_progress(f"pipeline: fit and rerank {len(rows)} {stage} users")
        pipe = Pipeline(config, lm=lm)
        with _timer() as fit_t:
            pipe.fit(targets.fit, options)
        with _timer() as rec_t:
            batch = pipe.rerank_scores(
                targets.user_ids[rows], candidates=targets.candidates, show_progress=options.show_progress
            )
        return batch, targets, rows, fit_t[0], rec_t[0]

    def metrics_of(batch: Any, targets: _Stage, rows: np.ndarray, weight: float) -> tuple[dict[str, float], Any]:
        recs = batch.final(k, weight)
        truth = sp.csr_matrix(targets.truth[rows])
        metrics = compute_metrics(
            recs.item_idx, truth, k=k, train=targets.fit, item_features=features, users=targets.users[rows]
        )
        return metrics, recs

    chosen = config.rerank.weight
    tried: list[dict[str, Any]] = []
    valid_metrics: dict[str, float] = {}
    if weights:
        batch, targets, rows, _, _ = ranked_batch("valid")
        for weight in weights:
            metrics, _ = metrics_of(batch, targets, rows, weight)
            tried.append({"config": {"weight": weight}, key: metrics[key]})
            if not valid_metrics or metrics[key] > valid_metrics[key]:
                chosen, valid_metrics = weight, metrics
    batch, targets, rows, fit_s, rec_s = ranked_batch("test")
    name = config.retriever.name
    ms_per_user = round(1000 * rec_s / max(len(rows), 1), 4)
    results = []
    for reranked, label, weight in ((False, name, 0.0), (True, f"{name}+rerank:{config.rerank.method}", chosen)):
        metrics, recs = metrics_of(batch, targets, rows, weight)
        results.append(
            ModelResult(
                model=label,
                metrics=metrics,
                fit_s=round(fit_s, 3),
                config={"retriever": config.retriever.model_dump(), "weight": weight} if reranked else {},
                valid_metrics=valid_metrics if reranked else {},
                tuning=tried if reranked else [],
                recommend_ms_per_user=ms_per_user if reranked else None,
                popularity_curve=popularity_curve(recs.item_idx, targets.fit.item_popularity),
            )
        )
    log.info("pipeline: weight %.2f, %s", chosen, {r.model: r.metrics[key] for r in results})
    return EvalResults(dataset=data.name, protocol=protocol, k=k, results=results, split=split.describe())
