"""Evaluation runner: split by time, tune on validation, fit on train + validation, score the test targets.

The runner fits scorers through the public Scorer API and ranks through :meth:`llmrec.pipeline.Pipeline.recommend`,
the path the chat, the HTTP API and the CLI use, so the numbers it reports are the numbers users get (the timeline
protocol measures the fold-in of news after the fit that the service uses). Every fit is checked against the
split's leakage guard first.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp

from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, Stage, make_split
from llmrec.errors import ConfigError
from llmrec.eval.compare import compare_results
from llmrec.eval.metrics import ACCURACY_METRICS, MetricParts, item_features, metric_parts
from llmrec.eval.results import EvalResults, ModelResult
from llmrec.eval.stats import metric_intervals, seed_mean
from llmrec.models.base import Scorer, TrainOptions
from llmrec.models.registry import SCORERS, get_scorer, tuning_configs
from llmrec.progress import ProgressCallback
from llmrec.query import Query

if TYPE_CHECKING:
    from llmrec.llm.base import LanguageModel
    from llmrec.pipeline import PipelineConfig


TrialFn = Callable[[dict[str, Any]], dict[str, float]]
"""One tuning trial: a scorer config in, its validation metrics out."""


class TrialExecutor(Protocol):
    """Runs tuning trials: the validation metrics of each config, in the configs' order.

    :class:`SerialTrials` runs them one after another in this process; :class:`llmrec.scale.tune.RayTuneTrials`
    runs them in parallel as Ray Tune trials. Either way the best config is chosen here, from the same numbers.
    """

    def map(self, fn: TrialFn, configs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """``[fn(config) for config in configs]``, however it is scheduled."""
        ...


class SerialTrials:
    """Tuning trials one after another in this process (the default)."""

    def map(self, fn: TrialFn, configs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """Each config's validation metrics, in order."""
        return [fn(config) for config in configs]


def _valid_trial(
    config: dict[str, Any],
    *,
    name: str,
    split: Split,
    stage: _Stage,
    k: int,
    options: TrainOptions,
    features: sp.csr_matrix,
) -> dict[str, float]:
    """Validation metrics of one config (a module-level function, so a trial can run in another process)."""
    parts, *_ = _run(name, config, split, "valid", stage, k, options, features)
    return {key: float(value) for key, value in parts.summary().items()}


__all__ = [
    "MAX_QUERIES_PER_USER",
    "ModelSpec",
    "evaluate_models",
    "evaluate_pipeline",
    "popularity_curve",
    "timeline_queries",
]

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


MAX_QUERIES_PER_USER = 50
"""``timeline`` protocol: at most this many target events per user (evenly spaced), so no user dominates."""


def timeline_queries(
    fit: Dataset, targets: Dataset, max_per_user: int = MAX_QUERIES_PER_USER
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The target queries of the ``timeline`` protocol: ``(user index, history, target item)`` per query.

    Every target event whose user has at least one earlier event (in ``fit`` or earlier among ``targets``) is
    a query; its history is every earlier event of that user, oldest first, and an item already in it is not
    a fair target (exclude-seen hides it), so such events are skipped. At most ``max_per_user`` evenly spaced
    queries are kept per user.
    """
    users = np.concatenate([fit.user_idx, targets.user_idx])
    items = np.concatenate([fit.item_idx, targets.item_idx])
    times = np.concatenate([fit.timestamps, targets.timestamps])
    is_target = np.concatenate([np.zeros(len(fit), dtype=bool), np.ones(len(targets), dtype=bool)])
    order = np.lexsort((np.arange(len(users)), times, users))  # by user, then time, then input order
    users, items, is_target = users[order], items[order], is_target[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    q_users: list[int] = []
    q_hist: list[np.ndarray] = []
    q_items: list[int] = []
    for start, end in zip(starts, ends, strict=True):
        seq = items[start:end]
        positions = [p for p in np.flatnonzero(is_target[start:end]) if p > 0 and seq[p] not in set(seq[:p])]
        if len(positions) > max_per_user:
            keep = np.unique(np.round(np.linspace(0, len(positions) - 1, max_per_user)).astype(np.int64))
            positions = [positions[i] for i in keep]
        for p in positions:
            q_users.append(int(users[start]))
            q_hist.append(seq[:p].copy())
            q_items.append(int(seq[p]))
    return np.asarray(q_users, dtype=np.int64), q_hist, np.asarray(q_items, dtype=np.int64)


class _Stage:
    """The targets of one stage: which users to rank and their relevant items (minus what they have seen).

    ``candidates`` is ``None`` (rank the whole catalogue) except under ``cold-items``, where users are ranked
    among the stage's held-out items. Under ``timeline`` every row is one target query with its own history
    (``histories``), ranked by folding that history into the fitted model; ``users`` then repeats.
    """

    def __init__(self, split: Split, stage: Stage) -> None:
        self.fit = split.fit_data(stage)
        targets = split.targets(stage)
        self.histories: list[np.ndarray] | None = None
        if split.protocol == "timeline":
            self.users, self.histories, items = timeline_queries(self.fit, targets)
            self.truth = sp.csr_matrix(
                (np.ones(len(items)), (np.arange(len(items)), items)), shape=(len(items), targets.n_items)
            )
        else:
            self.users = np.unique(targets.user_idx)
            self.truth = split.unseen_targets(stage, self.users, self.fit)
        self.user_ids = targets.user_vocab.ids[self.users]
        cold = split.cold_items(stage)
        self.candidates = None if cold is None else targets.item_vocab.ids[cold]

    def queries(self) -> list[Query]:
        """One :class:`~llmrec.query.Query` per row, as the served path would ask it.

        Leave-last-out and cold-items rows are fitted users as they were fitted (exclude-seen, within the stage's
        candidates). A timeline row is someone known by their history up to the target event: it is folded into
        the fitted model without a refit, exactly as the service folds in a user's feedback since the last fit.
        """
        fit = self.fit
        candidates = None if self.candidates is None else tuple(str(i) for i in self.candidates)
        if self.histories is None:
            return [Query(user=str(u), candidates=candidates) for u in self.user_ids]
        ids = fit.item_vocab.ids
        return [Query(liked=tuple(ids[h]), candidates=candidates) for h in self.histories]

    def rank(self, scorer: Scorer, k: int, seed: int) -> np.ndarray:
        """Top-``k`` dense item indices of every row, through :meth:`Pipeline.recommend` (the served path)."""
        from llmrec.pipeline import Pipeline

        # Under cold-items every candidate is new to the fit data, so a model that learns from interactions alone
        # (popular) scores them all alike; breaking those ties by catalogue order would credit it with the order
        # of the item ids (in MovieLens the low ids are the most-watched films): break them at random.
        tie_seed = None if self.candidates is None else seed
        pipe = Pipeline.around(scorer, candidates=k)
        return pipe.recommend(self.queries(), k, tie_seed=tie_seed).item_idx


@contextmanager
def _timer() -> Iterator[list[float]]:
    out: list[float] = []
    start = time.perf_counter()
    yield out
    out.append(time.perf_counter() - start)


class _Steps:
    """The finished steps of an evaluation, told to its ``on_progress`` before each next step."""

    def __init__(self, on_progress: ProgressCallback | None, total: int | None = None) -> None:
        self.on_progress, self.total, self.done = on_progress, total, 0

    def begin(self, message: str, steps: int = 1) -> None:
        """Report what is finished and that ``message`` comes next; it counts as ``steps`` steps once done."""
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, message)
        self.done += steps


def evaluate_models(
    data: Dataset,
    models: Sequence[ModelSpec],
    *,
    k: int = 10,
    protocol: str = "leave-last-out",
    tune: bool = True,
    options: TrainOptions | None = None,
    seeds: int = 1,
    compare_to: str | None = None,
    on_progress: ProgressCallback | None = None,
    trials: TrialExecutor | None = None,
) -> EvalResults:
    """Evaluate scorers on a time-respecting split with full ranking over all items, with intervals.

    Every result carries a 95% bootstrap interval over users for each metric (``ci95``) and its per-user
    accuracy values; the results carry a paired comparison of every model against a reference.

    Args:
        data: The whole dataset; it is split here (``protocol``).
        models: Registry names (tuned over the scorer's ``tuning_grid`` when ``tune``) or ``(name, config)``.
        k: List length and metric cut-off.
        protocol: ``"leave-last-out"``, ``"temporal"``, ``"timeline"`` or ``"cold-items"`` (see
            :mod:`llmrec.data.splits`; under ``cold-items`` every list is ranked among the held-out cold items
            only, under ``timeline`` every later event is a query ranked from the user's folded-in history).
        tune: Search each named scorer's grid on validation targets (with the first seed); otherwise defaults.
        options: Seed, threads and progress for every fit.
        seeds: Fit every model whose training depends on the seed this many times (seeds ``options.seed``,
            ``options.seed + 1``, ...); metrics are then means over seeds, with ``per_seed`` and ``metrics_sd``.
        compare_to: The reference model label of the comparisons; ``None`` = the best classical baseline
            evaluated (by NDCG@k), or no comparisons when none was.
        on_progress: Called before each fit and tuning trial with the fits and trials finished (the total is
            not known in advance: ``None``) and what comes next; the CLI drives a progress bar with it.
        trials: How tuning trials run: :class:`SerialTrials` (default) or in parallel, e.g.
            :class:`llmrec.scale.tune.RayTuneTrials`; the chosen configs and every number are the same.

    Returns:
        :class:`EvalResults` with test metrics, intervals and comparisons.

    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}", field="k", fix="use a list length of at least 1")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}", field="seeds", fix="use 1 for a single fit")
    for spec in models:
        name = spec if isinstance(spec, str) else spec[0]
        if name not in SCORERS:
            raise ConfigError(
                f"unknown model {name!r}",
                field="models",
                fix=f"choose one of the available models: {', '.join(sorted(SCORERS))}",
            )
    options = options or TrainOptions()
    split = make_split(data, protocol)
    stages = {"valid": _Stage(split, "valid"), "test": _Stage(split, "test")}
    features = item_features(data)
    steps = _Steps(on_progress)
    results = []
    for spec in models:
        name, fixed = (spec, None) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        label = spec[2] if isinstance(spec, tuple) and len(spec) == 3 else name
        tuning = fixed is None and tune
        candidates = tuning_configs(name) if tuning else [fixed or {}]
        tried: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any], dict[str, float]] | None = None
        if tune and stages["valid"].histories is None:
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
        if tuning:
            trial = partial(
                _valid_trial, name=name, split=split, stage=stages["valid"], k=k, options=options, features=features
            )
            if trials is None or isinstance(trials, SerialTrials):

                def each(config: dict[str, Any], trial: TrialFn = trial, name: str = name) -> dict[str, float]:
                    steps.begin(f"{name}: tuning {config or 'defaults'}")
                    return trial(config)

                measured = [each(config) for config in candidates]
            else:
                steps.begin(f"{name}: tuning {len(candidates)} configs in parallel", len(candidates))
                measured = trials.map(trial, candidates)
            for config, valid_metrics in zip(candidates, measured, strict=True):
                score = valid_metrics[f"ndcg@{k}"]
                tried.append({"config": config, f"ndcg@{k}": score})
                if best is None or score > best[0]:
                    best = (score, config, valid_metrics)
        config = best[1] if best else candidates[0]
        seed_list = [options.seed]
        if seeds > 1 and get_scorer(name, **config).depends_on_seed():
            seed_list = [options.seed + i for i in range(seeds)]
        runs = []
        for seed in seed_list:
            steps.begin(f"{name}: final fit {config or 'defaults'}" + (f", seed {seed}" if seeds > 1 else ""))
            seeded = options.model_copy(update={"seed": seed})
            runs.append(_run(name, config, split, "test", stages["test"], k, seeded, features))
        results.append(_model_result(label, runs, seed_list, stages["test"], config, best, tried, k))
        log.info("%s: ndcg@%d=%.4f", label, k, results[-1].metrics[f"ndcg@{k}"])
    out = EvalResults(dataset=data.name, protocol=protocol, k=k, results=results, split=_describe(split, stages))
    return compare_results(out, compare_to)


def _describe(split: Split, stages: dict[str, _Stage]) -> dict[str, Any]:
    """The split's sizes plus, for query protocols, how many target queries each stage has."""
    out: dict[str, Any] = dict(split.describe())
    for name, stage in stages.items():
        if stage.histories is not None:
            out[f"{name}_queries"] = len(stage.histories)
            out[f"{name}_users"] = len(np.unique(stage.users))
    return out


_Run = tuple[MetricParts, float, float, np.ndarray, dict[str, Any] | None]
"""One fit's (metric parts, fit s, recommend s, top-k lists, privacy report or ``None``)."""


def _privacy_of(runs: list[_Run]) -> dict[str, Any] | None:
    """The first seed's privacy report, plus every seed's spent epsilon when there are several."""
    reports = [run[4] for run in runs]
    if reports[0] is None:
        return None
    out = dict(reports[0])
    if len(reports) > 1:
        out["epsilon_per_seed"] = [None if r is None else r.get("epsilon") for r in reports]
    return out


def _model_result(
    label: str,
    runs: list[_Run],
    seed_list: list[int],
    targets: _Stage,
    config: dict[str, Any],
    best: tuple[float, dict[str, Any], dict[str, float]] | None,
    tried: list[dict[str, Any]],
    k: int,
) -> ModelResult:
    """One model's result from its runs (one per seed): means, spread, intervals and per-user values."""
    parts = [run[0] for run in runs]
    per_seed = [p.summary() for p in parts]
    with warnings.catch_warnings():  # a metric undefined under every seed (an empty group's gap) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        metrics = {key: float(np.nanmean([m[key] for m in per_seed])) for key in per_seed[0]}
        sd: dict[str, float] = {}
        if len(runs) > 1:
            sd = {key: float(np.nanstd([m[key] for m in per_seed], ddof=1)) for key in per_seed[0] if key != "n_users"}
    metrics["n_users"] = per_seed[0]["n_users"]
    unique_users, _ = parts[0].user_index()
    per_user: dict[str, list[Any]] = {"users": [str(u) for u in targets.fit.user_vocab.ids[unique_users]]}
    for name in ACCURACY_METRICS:
        values = seed_mean(parts, name)
        per_user[f"{name}@{k}"] = [None if np.isnan(v) else round(float(v), 6) for v in values]
    fit_s = float(np.mean([run[1] for run in runs]))
    rec_s = float(np.mean([run[2] for run in runs]))
    return ModelResult(
        model=label,
        metrics=metrics,
        fit_s=round(fit_s, 3),
        config=config,
        valid_metrics=best[2] if best else {},
        tuning=tried,
        recommend_ms_per_user=round(1000 * rec_s / max(len(targets.users), 1), 4),
        popularity_curve=popularity_curve(runs[0][3], targets.fit.item_popularity),
        ci95=metric_intervals(parts),
        seeds=seed_list,
        per_seed=per_seed if len(runs) > 1 else [],
        metrics_sd=sd,
        per_user=per_user,
        privacy=_privacy_of(runs),
    )


def _run(
    name: str,
    config: dict[str, Any],
    split: Split,
    stage: Stage,
    targets: _Stage,
    k: int,
    options: TrainOptions,
    features: sp.csr_matrix,
) -> _Run:
    """Fit one configuration for ``stage`` and score its targets: (metric parts, fit s, rec s, lists, privacy).

    The privacy report is the fitted scorer's (:attr:`~llmrec.models.base.Scorer.privacy`): a DP or federated
    fit's epsilon reaches every result row of the model that way.
    """
    split.check(targets.fit, stage)
    scorer: Scorer = get_scorer(name, **config)
    with _timer() as fit_t:
        scorer.fit(targets.fit, options)
    with _timer() as rec_t:
        ranked = targets.rank(scorer, k, seed=options.seed)
    parts = metric_parts(ranked, targets.truth, k=k, train=targets.fit, item_features=features, users=targets.users)
    privacy = None if scorer.privacy is None else scorer.privacy.model_dump(mode="json")
    return parts, fit_t[0], rec_t[0], ranked, privacy


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
    on_progress: ProgressCallback | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResults:
    """Evaluate a :class:`~llmrec.pipeline.Pipeline` with and without its language-model rerank stage.

    The pipeline is fitted on the validation stage's training data, its rerank scores of the validation users are
    computed once, and the blend weight is chosen among ``weights`` on validation NDCG@k (``None`` keeps
    ``config.rerank.weight``). Then it is refitted on train + validation and the test users are ranked twice by the
    same :meth:`Pipeline.rerank_scores` call: by the retriever alone (weight 0) and with the chosen weight. Both
    results are reported on the same users, so the difference is the rerank's effect. With several ``seeds`` (a
    stochastic retriever such as SASRec) every stage is fitted once per seed, the weight is chosen on the
    validation NDCG@k averaged over the seeds, and each user's test metrics are averaged over the seeds before
    the paired comparison (as :func:`evaluate_models` does).

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
        on_progress: Called before each fit-and-rerank step (two per seed with ``weights``, else one) with the
            steps finished, the total and what comes next.
        seeds: Seeds to fit the pipeline with (``None`` = ``options.seed`` alone); the user sample is the same
            for every seed.

    Returns:
        Two results: ``<retriever>`` and ``<retriever>+rerank:<method>`` (its ``config`` holds the chosen weight,
        its ``tuning`` every weight's validation NDCG@k).
    """
    from llmrec.pipeline import Pipeline

    if config.rerank is None:
        raise ConfigError("evaluate_pipeline needs a pipeline with a rerank stage (config.rerank)")
    options = options or TrainOptions()
    seed_list = list(seeds) if seeds else [options.seed]
    split = make_split(data, protocol)
    features = item_features(data)
    rng = np.random.default_rng(options.seed)
    key = f"ndcg@{k}"
    steps = _Steps(on_progress, (2 if weights else 1) * len(seed_list))
    samples: dict[Stage, np.ndarray] = {}

    def ranked_batch(stage: Stage, seed: int) -> tuple[Any, _Stage, np.ndarray, float, float]:
        targets = _Stage(split, stage)
        split.check(targets.fit, stage)
        if stage not in samples:  # one seeded user sample per stage, shared by every seed's fit
            rows = np.arange(len(targets.users))
            if max_users is not None and len(rows) > max_users:
                rows = np.sort(rng.choice(rows, max_users, replace=False))
            samples[stage] = rows
        rows = samples[stage]
        steps.begin(f"pipeline: fit and rerank {len(rows)} {stage} users (seed {seed})")
        pipe = Pipeline(config, lm=lm)
        with _timer() as fit_t:
            pipe.fit(targets.fit, options.model_copy(update={"seed": seed}))
        with _timer() as rec_t:
            queries = targets.queries()
            batch = pipe.rerank_scores([queries[r] for r in rows], show_progress=options.show_progress)
        return batch, targets, rows, fit_t[0], rec_t[0]

    def metrics_of(batch: Any, targets: _Stage, rows: np.ndarray, weight: float) -> tuple[MetricParts, Any]:
        recs = batch.final(k, weight)
        truth = sp.csr_matrix(targets.truth[rows])
        parts = metric_parts(
            recs.item_idx, truth, k=k, train=targets.fit, item_features=features, users=targets.users[rows]
        )
        return parts, recs

    chosen = config.rerank.weight
    tried: list[dict[str, Any]] = []
    valid_metrics: dict[str, float] = {}
    if weights:
        valid = [ranked_batch("valid", seed) for seed in seed_list]
        for weight in weights:
            summaries = [metrics_of(b, t, r, weight)[0].summary() for b, t, r, _, _ in valid]
            metrics = {name: float(np.mean([m[name] for m in summaries])) for name in summaries[0]}
            tried.append({"config": {"weight": weight}, key: metrics[key]})
            if not valid_metrics or metrics[key] > valid_metrics[key]:
                chosen, valid_metrics = weight, metrics
    tests = [ranked_batch("test", seed) for seed in seed_list]
    targets, rows = tests[0][1], tests[0][2]
    name = config.retriever.name
    ms_per_user = round(1000 * float(np.mean([t[4] for t in tests])) / max(len(rows), 1), 4)
    results = []
    for reranked, label, weight in ((False, name, 0.0), (True, f"{name}+rerank:{config.rerank.method}", chosen)):
        runs: list[_Run] = []
        for batch, stage_targets, stage_rows, fit_s, rec_s in tests:
            parts, recs = metrics_of(batch, stage_targets, stage_rows, weight)
            runs.append((parts, fit_s, rec_s, recs.item_idx, None))
        result = _model_result(label, runs, seed_list, targets, {}, None, [], k)
        results.append(
            result.model_copy(
                update={
                    "config": {"retriever": config.retriever.model_dump(), "weight": weight} if reranked else {},
                    "valid_metrics": valid_metrics if reranked else {},
                    "tuning": tried if reranked else [],
                    "recommend_ms_per_user": ms_per_user if reranked else None,
                }
            )
        )
    log.info("pipeline: weight %.2f, %s", chosen, {r.model: r.metrics[key] for r in results})
    split_info: dict[str, Any] = {**split.describe(), "evaluated_test_users": len(rows)}
    if len(rows) < len(targets.users):
        split_info["sample"] = f"{len(rows)} of {len(targets.users)} test users (seeded); intervals show it"
    out = EvalResults(dataset=data.name, protocol=protocol, k=k, results=results, split=split_info)
    # The rerank's effect: reranked minus retriever alone, paired over the same users.
    return compare_results(out, name)
