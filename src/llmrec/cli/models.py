"""``llmrec demo``, ``train``, ``recommend`` and ``chat``: fit or load a pipeline and use it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmrec.cli.common import ADAPTER_HELP, DEFAULT_MODELS, _friendly_errors, app, console
from llmrec.cli.evaluation import _run_evaluation
from llmrec.cli.tables import metrics_table
from llmrec.errors import ConfigError
from llmrec.feedback import FeedbackKind


@app.command()
@_friendly_errors
def demo(
    db: Annotated[str | None, typer.Option(help="Store URL (default: a SQLite file under ~/.llmrec).")] = None,
    user: Annotated[str, typer.Option(help="The user whose recommendations are shown.")] = "1",
    models: Annotated[str, typer.Option(help="Comma-separated scorer names.")] = DEFAULT_MODELS,
    tune: Annotated[
        bool, typer.Option(help="Tune hyperparameters on validation (--no-tune: defaults, faster).")
    ] = True,
    k: Annotated[int, typer.Option(help="List length and metric cut-off.")] = 10,
    adapter: Annotated[str | None, typer.Option(help=ADAPTER_HELP)] = None,
) -> None:
    """Ingest the bundled MovieLens, train and evaluate the baselines, show an LM-reranked, explained top-10."""
    from llmrec.data.movielens import load_movielens
    from llmrec.data.store import Store
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec

    started = time.perf_counter()
    lm_settings = _with_adapter(PipelineConfig(), adapter)  # an unknown adapter fails now, not after training
    store = Store(db)
    console.print(f"[bold]1/4[/] ingesting the bundled MovieLens latest-small into {store.display_url}")
    store.ingest(load_movielens(), show_progress=True)
    data = store.load("movielens-small")
    console.print(f"    {data!r}")
    names = [m.strip() for m in models.split(",") if m.strip()]
    console.print(f"[bold]2/4[/] training and evaluating {', '.join(names)} (per-user leave-last-out, full ranking)")
    results = _run_evaluation(data, names, k, "leave-last-out", tune, 42)
    console.print(metrics_table(results, [f"ndcg@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}", f"novelty@{k}"]))
    best = max(results.results, key=lambda r: r.metrics[f"ndcg@{k}"])
    console.print(f"[bold]3/4[/] best on test NDCG@{k}: {best.model}; refitting it on all data")
    history = data.interactions[data.interactions["user_id"] == str(user)].tail(5)
    console.print(f"[bold]4/4[/] user {user}: recently rated")
    titles = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    for row in history.itertuples():
        console.print(f"    {row.value:.1f}  {titles.get(row.item_id, row.item_id)}")
    config = lm_settings.model_copy(update={"retriever": RetrieverSpec(name=best.model, config=best.config)})
    pipe = Pipeline(config).fit(data, TrainOptions(seed=42))
    _show_recommendations(pipe, user, k, explain=True)
    console.print(f"done in {time.perf_counter() - started:.0f} s")


def _with_adapter(settings: Any, adapter: str | None) -> Any:
    """``settings`` (a PipelineConfig) with the local language model wearing ``adapter`` (a name or a path)."""
    if adapter is None:
        return settings
    from llmrec.adapt.registry import resolve_adapter

    if settings.lm.backend != "local":
        raise ConfigError(f"--adapter needs the local language model, but the pipeline uses {settings.lm.backend!r}")
    path = resolve_adapter(adapter)
    lm = settings.lm.model_copy(update={"local": {**settings.lm.local, "adapter": str(path)}})
    return settings.model_copy(update={"lm": lm})


def _show_recommendations(pipe: Any, user: str, k: int, *, explain: bool, rerank: bool | None = None) -> None:
    """Print a user's top-``k`` from ``pipe`` (reranked as configured) and, with ``explain``, a reason for each."""
    import numpy as np

    reranking = pipe.config.rerank is not None if rerank is None else rerank
    with console.status("retrieving and reranking with the language model" if reranking else "retrieving"):
        recs = pipe.recommend([user], k=k, rerank=rerank)
    stage = f"{pipe.config.retriever.name} + LM rerank ({pipe.config.rerank.method})" if reranking else "retriever only"
    titles = pipe.data.items["title"].tolist()
    table = Table(title=f"top-{k} for user {user} ({stage})")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    for rank, (item, idx, score) in enumerate(zip(recs.items[0], recs.item_idx[0], recs.scores[0], strict=True), 1):
        if idx >= 0:
            table.add_row(str(rank), str(item), escape(str(titles[idx])), f"{score:.3f}" if np.isfinite(score) else "-")
    console.print(table)
    if not explain:
        return
    if user not in pipe.data.user_vocab:
        console.print("[dim]no explanations: this user has no history to ground them in[/]")
        return
    console.print("[bold]why[/] (grounded in the user's history and the items' facts; checked before shown)")
    for rank, (item, idx) in enumerate(zip(recs.items[0], recs.item_idx[0], strict=True), 1):
        if idx < 0:
            continue
        console.print(f"  {rank:>2}. [bold]{escape(str(titles[idx]))}[/]: ", end="")
        stream = pipe.stream_explanation(user, item)
        for piece in stream:
            console.print(escape(piece), end="")
        explanation = stream.explanation
        cited = ", ".join(c.value for c in explanation.citations if c.kind == "history")
        note = (
            f" [dim](rests on: {escape(cited)}; {explanation.source})[/]"
            if cited
            else f" [dim]({explanation.source})[/]"
        )
        console.print(note)


DatasetNameOpt = Annotated[
    str | None,
    typer.Option(
        help="movielens-small (default), goodbooks-10k, or a dataset ingested into the store. With --model: the saved "
        "model's dataset."
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", help="A folder written by `llmrec train --out DIR`: load that fitted model, no refit."),
]


def _pipeline_settings(config: Path | None, retriever: str, method: str) -> Any:
    """The PipelineConfig of `recommend` and `train`: a JSON file, or a retriever plus an LM rerank method."""
    from pydantic import ValidationError

    from llmrec.pipeline import PipelineConfig, RetrieverSpec

    try:
        if config is not None:
            return PipelineConfig.model_validate_json(config.read_text(encoding="utf-8"))
        return PipelineConfig(retriever=RetrieverSpec(name=retriever), rerank={"method": method})
    except OSError as exc:
        raise ConfigError(f"cannot read the pipeline config {config}: {exc.strerror}") from exc
    except ValidationError as exc:
        where = f" in {config}" if config is not None else ""
        raise ConfigError(f"invalid pipeline config{where}: {exc}") from exc


def _fitted_on(when: str | None) -> str:
    """``2025-01-31 12:00 UTC`` from an ISO time stamp (``?`` when unknown)."""
    import datetime as dt

    if not when:
        return "?"
    try:
        return dt.datetime.fromisoformat(when).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return when


def _load_model(model: Path, dataset: str | None, adapter: str | None) -> Any:
    """The pipeline saved in ``model`` (with ``adapter`` on its language model), announced as loaded, not refitted."""
    from llmrec.pipeline import Pipeline

    with console.status(f"loading {model}"):
        pipe = Pipeline.load(model)
    if dataset is not None and dataset != pipe.data.name:
        raise ConfigError(
            f"--model {model} was fitted on {pipe.data.name!r}, not {dataset!r}. Fix: drop --dataset, or train a model "
            f"on {dataset} (llmrec train --dataset {dataset} --out DIR)"
        )
    if adapter is not None:
        pipe = pipe.reconfigured(_with_adapter(pipe.config, adapter))
    message = f"loaded model from {model} (fitted {_fitted_on(pipe.fitted_at)}, no refit)"
    logging.getLogger(__name__).info(message)
    console.print(escape(message), highlight=False, soft_wrap=True)
    return pipe


def _no_pipeline_options_with_model(model: Path | None, **given: object) -> None:
    """``--model`` brings its own settings: options that would configure a new fit cannot go with it."""
    clash = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if model is not None and clash:
        raise ConfigError(
            f"{', '.join(clash)} configure a new fit and cannot go with --model (the saved model has its settings). "
            f"Fix: drop {', '.join(clash)}, or train a model with them (llmrec train ... --out DIR)"
        )


@app.command()
@_friendly_errors
def train(
    out: Annotated[Path, typer.Option(help="The folder to save the fitted pipeline in (created or replaced).")],
    dataset: Annotated[
        str, typer.Option(help="movielens-small, goodbooks-10k, or a dataset ingested into the store.")
    ] = "movielens-small",
    retriever: Annotated[str, typer.Option(help="Scorer that finds the candidates.")] = "ease",
    method: Annotated[
        str,
        typer.Option(
            help=(
                "Rerank method: loglik, yesno, listwise or letters (the LM; letters with a tuned --adapter), "
                "or encoder (the text encoder's similarity to the recent items)."
            )
        ),
    ] = "loglik",
    config: Annotated[
        Path | None, typer.Option(help="A PipelineConfig JSON file (overrides --retriever and --method).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the retriever's fit.")] = 42,
    db: Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")] = None,
    adapter: Annotated[str | None, typer.Option(help=ADAPTER_HELP)] = None,
) -> None:
    """Fit the pipeline `recommend` would fit and save it to a folder; then `recommend --model DIR` skips the fit.

    The folder holds the fitted retriever and its training data (no pickle), the pipeline settings, and a reference
    to the language model (never its weights).
    """
    from llmrec.data.registry import BUILTIN_DATASETS, load_named
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import Pipeline

    settings = _with_adapter(_pipeline_settings(config, retriever, method), adapter)
    metadata: dict[str, Any] = {"dataset": dataset, "seed": seed}
    if dataset not in BUILTIN_DATASETS:  # from the store: later rows are what a server should count as recent
        from llmrec.data.store import Store

        metadata["store_marker"] = Store(db).last_interaction_id(dataset)
    data = load_named(dataset, db)
    with console.status(f"fitting {settings.retriever.name} on {data.name}"):
        pipe = Pipeline(settings).fit(data, TrainOptions(seed=seed))
    with console.status(f"saving to {out}"):
        folder = pipe.save(out, metadata=metadata)
    console.print(
        escape(
            f"saved model to {folder} ({settings.retriever.name} fitted on {data!r}). Use it: "
            f"llmrec recommend --model {folder} --user USER, or llmrec serve --model {folder}"
        ),
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@_friendly_errors
def recommend(
    user: Annotated[str, typer.Option(help="External user id.")],
    dataset: DatasetNameOpt = None,
    k: Annotated[int, typer.Option(help="List length.")] = 10,
    retriever: Annotated[str, typer.Option(help="Scorer that finds the candidates.")] = "ease",
    rerank: Annotated[bool, typer.Option(help="Rerank the candidates with the language model.")] = True,
    method: Annotated[
        str,
        typer.Option(
            help=(
                "Rerank method: loglik, yesno, listwise or letters (the LM; letters with a tuned --adapter), "
                "or encoder (the text encoder's similarity to the recent items)."
            )
        ),
    ] = "loglik",
    explain: Annotated[bool, typer.Option(help="Explain each recommendation (grounded, checked).")] = False,
    config: Annotated[
        Path | None, typer.Option(help="A PipelineConfig JSON file (overrides --retriever and --method).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the retriever's fit.")] = 42,
    db: Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")] = None,
    adapter: Annotated[str | None, typer.Option(help=ADAPTER_HELP)] = None,
    model: ModelOpt = None,
) -> None:
    """Recommend for one user through the pipeline: retrieve, rerank with the language model, explain.

    Without --model the pipeline is fitted first (seconds for EASE on MovieLens); with --model DIR (from
    `llmrec train --out DIR`) the saved one is loaded instead.
    """
    from llmrec.data.registry import load_named
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import Pipeline

    _no_pipeline_options_with_model(model, config=config)
    if model is not None:
        pipe = _load_model(model, dataset, adapter)
    else:
        settings = _with_adapter(_pipeline_settings(config, retriever, method), adapter)
        data = load_named(dataset or "movielens-small", db)
        with console.status(f"fitting {settings.retriever.name} on {data.name}"):
            pipe = Pipeline(settings).fit(data, TrainOptions(seed=seed))
    if str(user) not in pipe.data.user_vocab:
        console.print(f"[yellow]user {escape(user)} is not in {escape(pipe.data.name)}: showing popular items[/]")
    _show_recommendations(pipe, user, k, explain=explain, rerank=rerank if pipe.config.rerank is not None else False)


CHAT_HELP = (
    "Say what you like or want ('I loved Heat', 'something funny from the 90s, no horror'). Commands: "
    "/up N, /down N, /seen N (feedback on item N of the last answer), /state, /quit."
)
CHAT_FEEDBACK: dict[str, FeedbackKind] = {"/up": "thumbs_up", "/down": "thumbs_down", "/seen": "seen"}


@app.command()
@_friendly_errors
def chat(
    dataset: DatasetNameOpt = None,
    user: Annotated[str | None, typer.Option(help="Chat as this user of the dataset (default: anonymous).")] = None,
    k: Annotated[int, typer.Option(help="Items per answer.")] = 5,
    retriever: Annotated[str, typer.Option(help="Scorer that finds the candidates.")] = "ease",
    rerank: Annotated[bool, typer.Option(help="Rerank the candidates with the language model.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the retriever's fit.")] = 42,
    db: Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")] = None,
    adapter: Annotated[str | None, typer.Option(help=ADAPTER_HELP)] = None,
    model: ModelOpt = None,
) -> None:
    """Talk to the conversational recommender in the terminal (feedback changes the next answer).

    With --model DIR (from `llmrec train --out DIR`) the saved pipeline is loaded instead of fitted.
    """
    from llmrec.chat import ChatConfig, ConversationalRecommender
    from llmrec.data.registry import load_named
    from llmrec.llm.rerank import RerankConfig
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec

    if model is not None:
        pipe = _load_model(model, dataset, adapter)
        if rerank and pipe.config.rerank is None:
            pipe = pipe.reconfigured(pipe.config.model_copy(update={"rerank": RerankConfig()}))
    else:
        try:
            spec = RetrieverSpec(name=retriever)
        except ValueError as exc:  # pydantic's ValidationError: the scorer name is checked here
            raise ConfigError(f"invalid --retriever {retriever!r}: {exc}") from exc
        settings = PipelineConfig(retriever=spec, rerank=RerankConfig() if rerank else None)
        settings = _with_adapter(settings, adapter)
        data = load_named(dataset or "movielens-small", db)
        with console.status(f"fitting {retriever} on {data.name}"):
            pipe = Pipeline(settings).fit(data, TrainOptions(seed=seed))
    recommender = ConversationalRecommender(pipe, config=ChatConfig(k=min(k, pipe.config.candidates), rerank=rerank))
    session = recommender.start(user)
    console.print(CHAT_HELP, highlight=False)
    last: list[str] = []
    while True:
        try:
            text = console.input("[bold]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/state":
            console.print_json(recommender.session(session.id).state.model_dump_json())
            continue
        command, _, arg = text.partition(" ")
        if command in CHAT_FEEDBACK:
            if not arg.strip().isdigit() or not 1 <= int(arg) <= len(last):
                console.print(f"[yellow]give the number of an item of the last answer (1-{len(last)})[/]")
                continue
            recommender.feedback(session.id, last[int(arg) - 1], CHAT_FEEDBACK[command])
            console.print(f"noted: {command[1:]} on item {arg}")
            continue
        reply = recommender.turn(session.id, text)
        last = [item.item_id for item in reply.items] or last
        console.print(f"[bold green]llmrec>[/] {escape(reply.text)}", highlight=False)
