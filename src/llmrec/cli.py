"""The ``llmrec`` command line: demo, train, recommend, chat, ingest, evaluate, report, datasets, serve, tune, synth.

``llmrec batch recommend|embed`` runs the batch jobs of :mod:`llmrec.scale` on Ray.

Every command catches :class:`~llmrec.errors.LlmrecError` and prints its message (which names the file, line,
field and fix) instead of a traceback, exiting with status 2.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmrec.errors import ConfigError, LlmrecError
from llmrec.feedback import FeedbackKind

app = typer.Typer(
    name="llmrec",
    help="Language models in recommendation, end to end. Start with `llmrec demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODELS = "popular,itemknn,ease,als,bpr"
ADAPTER_HELP = "A tuned adapter for the local language model: a name from `llmrec tune list`, or a folder."
F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(fn: F) -> F:
    """Turn an LlmrecError into a one-paragraph message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LlmrecError as exc:
            message = escape(f"{type(exc).__name__}: {exc}")
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    """Language models in recommendation, end to end."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from llmrec.privacy.logs import install_log_scrubbing

    install_log_scrubbing()  # no log line carries an e-mail address, a phone or card number, an address...


def _parse_map(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise ConfigError(f"--map takes FIELD=COLUMN (e.g. --map user_id=userId), got {pair!r}")
        out[field.strip()] = column.strip()
    return out


def metrics_table(results: Any, columns: list[str] | None = None) -> Table:
    """A rich table of the results (one row per model)."""
    k = results.k
    columns = columns or [f"ndcg@{k}", f"recall@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}", f"novelty@{k}"]
    table = Table(title=f"{results.dataset} - {results.protocol}, full ranking, k={k}")
    table.add_column("model")
    for col in columns:
        table.add_column(col, justify="right")
    table.add_column("fit s", justify="right")
    with_memory = any(res.peak_rss_mb is not None for res in results.results)
    if with_memory:
        table.add_column("peak MB", justify="right")
    for res in results.results:
        values = [_with_interval(res, c, first=i == 0) for i, c in enumerate(columns)]
        memory = [f"{res.peak_rss_mb:.0f}" if res.peak_rss_mb is not None else "-"] if with_memory else []
        table.add_row(res.model, *values, f"{res.fit_s:.2f}", *memory)
    return table


def _with_interval(res: Any, column: str, *, first: bool) -> str:
    """A metric cell: the value (mean over seeds, with sd) and, for the first column, its 95% interval."""
    value = res.metrics.get(column)
    if value is None:
        return "-"
    text = f"{value:.4f}"
    if res.metrics_sd.get(column) is not None:
        text += f" ±{res.metrics_sd[column]:.4f}"
    if first and column in res.ci95:
        low, high = res.ci95[column]
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def comparisons_table(results: Any) -> Table:
    """A rich table of the paired comparisons against the reference model."""
    table = Table(title=f"paired differences vs {results.reference} (95% bootstrap interval over users)")
    for col in ("model", "metric", "diff", "95% interval", "p", "verdict"):
        table.add_column(col, justify="left" if col in ("model", "metric", "verdict") else "right")
    for c in results.comparisons:
        table.add_row(
            c.a, c.metric, f"{c.diff:+.4f}", f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]", f"{c.p_value:.4f}", c.verdict
        )
    return table


def _run_evaluation(
    data: Any,
    models: list[str],
    k: int,
    protocol: str,
    tune: bool,
    seed: int,
    seeds: int = 1,
    compare_to: str | None = None,
) -> Any:
    from llmrec.eval.runner import evaluate_models
    from llmrec.models.base import TrainOptions
    from llmrec.models.registry import SCORERS, tuning_configs

    unknown = [m for m in models if m not in SCORERS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; available: {', '.join(sorted(SCORERS))}")
    total = sum((len(tuning_configs(m)) if tune else 0) + (seeds if SCORERS[m].stochastic else 1) for m in models)
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)
        started = [False]

        def step(message: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=message)

        return evaluate_models(
            data,
            models,
            k=k,
            protocol=protocol,
            tune=tune,
            options=TrainOptions(seed=seed),
            seeds=seeds,
            compare_to=compare_to,
            on_progress=step,
        )


@app.command()
@_friendly_errors
def evaluate(
    dataset: Annotated[
        str, typer.Option(help="movielens-small, goodbooks-10k, or a dataset ingested into the store.")
    ] = "movielens-small",
    models: Annotated[str, typer.Option(help="Comma-separated scorer names.")] = DEFAULT_MODELS,
    k: Annotated[int, typer.Option(help="List length and metric cut-off.")] = 10,
    protocol: Annotated[
        str,
        typer.Option(
            help="leave-last-out (per user), temporal (global cut, warm users), timeline (global cut, every later "
            "event a target query: many more targets) or cold-items."
        ),
    ] = "leave-last-out",
    tune: Annotated[bool, typer.Option(help="Tune each model's hyperparameters on the validation split.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed for every fit (the first seed with --seeds).")] = 42,
    seeds: Annotated[
        int, typer.Option(help="Fit every stochastic model this many times (seed, seed+1, ...); report mean and sd.")
    ] = 1,
    compare_to: Annotated[
        str | None,
        typer.Option(help="Reference model of the paired comparisons (default: the best classical baseline)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("results.json"),
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report with plots here.")] = None,
    db: Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")] = None,
) -> None:
    """Evaluate scorers on a time-respecting split with full ranking; write JSON (and HTML)."""
    from llmrec.data.registry import load_named

    data = load_named(dataset, db, prefer_store=False)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if compare_to is not None and compare_to not in names:
        raise ConfigError(f"--compare-to {compare_to!r} is not among --models ({', '.join(names)}); add it to --models")
    results = _run_evaluation(data, names, k, protocol, tune, seed, seeds, compare_to)
    results.write_json(out)
    console.print(metrics_table(results))
    if results.comparisons:
        console.print(comparisons_table(results))
    console.print(f"results: {out}")
    if html is not None:
        from llmrec.eval.report import write_html

        write_html(results, html)
        console.print(f"report: {html}")


@app.command()
@_friendly_errors
def report(
    results_json: Annotated[Path, typer.Argument(help="A results JSON written by `llmrec evaluate`.")],
    html: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path("report.html"),
) -> None:
    """Rebuild the HTML report from a results JSON."""
    from pydantic import ValidationError

    from llmrec.eval.report import write_html
    from llmrec.eval.results import EvalResults

    if not results_json.is_file():
        raise ConfigError(f"{results_json}: file not found; run `llmrec evaluate --out {results_json}` first")
    try:
        results = EvalResults.read_json(results_json)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{results_json} is not an llmrec results file: {exc}") from exc
    write_html(results, html)
    console.print(f"report: {html}")


@app.command()
@_friendly_errors
def compare(
    results_json: Annotated[list[Path], typer.Argument(help="Results JSON files of one dataset, protocol and k.")],
    out: Annotated[Path, typer.Option(help="Where to write the merged results JSON.")] = Path("results.json"),
    compare_to: Annotated[
        str | None, typer.Option(help="Reference model (default: the best classical baseline).")
    ] = None,
) -> None:
    """Merge results files (a sweep run a model at a time) and recompute the paired comparisons."""
    from pydantic import ValidationError

    from llmrec.eval.compare import merge_results

    for path in results_json:
        if not path.is_file():
            raise ConfigError(f"{path}: file not found; write it with `llmrec evaluate --out {path}`")
    try:
        merged = merge_results(results_json, compare_to)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"not llmrec results files: {exc}") from exc
    merged.write_json(out)
    console.print(metrics_table(merged))
    if merged.comparisons:
        console.print(comparisons_table(merged))
    console.print(f"results: {out}")


@app.command()
@_friendly_errors
def ingest(
    name: Annotated[str, typer.Option(help="Dataset name in the store.")],
    interactions: Annotated[
        Path | None, typer.Option(help="Interactions file (CSV, TSV, JSONL or Parquet; streamed in blocks).")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="Items file.")] = None,
    users: Annotated[Path | None, typer.Option(help="Users file.")] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. --map user_id=userId (repeatable).")
    ] = None,
    scale: Annotated[
        str | None, typer.Option(help="The rating scale LOW,HIGH (e.g. 0.5,5): values outside it are problems.")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="CSV delimiter ('tab' for a tab); sniffed from the file by default.")
    ] = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="csv, tsv, jsonl or parquet (default: from each suffix).")
    ] = None,
    block_bytes: Annotated[
        int, typer.Option(help="Bytes of the interactions file read at a time (memory is a few times this).")
    ] = 1 << 20,
    db: Annotated[
        str | None, typer.Option(help="Store URL (default: LLMREC_DB_URL, else ~/.llmrec/llmrec.db).")
    ] = None,
) -> None:
    """Validate files and store them; a bad file stores nothing, re-ingesting the same file changes nothing.

    Any of --interactions, --items, --users may be given alone. Every problem of a bad file (up to 50) is listed,
    each with its line, field and fix.
    """
    from llmrec.data.store import Store
    from llmrec.errors import DataValidationError

    if interactions is None and items is None and users is None:
        raise ConfigError("nothing to ingest", field="interactions", fix="give --interactions, --items or --users")
    value_range = _parse_scale(scale)
    sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter) if delimiter is not None else None
    store = Store(db)
    try:
        reports = store.ingest_files(
            name,
            interactions,
            items_path=items,
            users_path=users,
            mapping=_parse_map(map_),
            format=format_,
            delimiter=sep,
            value_range=value_range,
            show_progress=True,
            block_bytes=block_bytes,
        )
    except DataValidationError as exc:
        lines = "\n".join(f"  - {p}" for p in exc.problems)
        err_console.print(
            escape(f"error: {len(exc.problems)} problem(s); nothing was stored:\n{lines}"),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    console.print(escape(f"ingested into {store.display_url} as {name!r}: {reports}"), highlight=False, soft_wrap=True)


def _parse_scale(scale: str | None) -> tuple[float, float] | None:
    """``"0.5,5"`` -> ``(0.5, 5.0)``; a typed error naming the fix otherwise."""
    if scale is None:
        return None
    parts = scale.replace(" ", "").split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--scale takes LOW,HIGH, got {scale!r}", field="scale", fix="e.g. --scale 0.5,5") from None
    if not low < high:
        raise ConfigError(f"--scale {scale!r}: LOW must be below HIGH", field="scale", fix="e.g. --scale 0.5,5")
    return low, high


@app.command()
@_friendly_errors
def forget(
    user: Annotated[str, typer.Argument(help="The user id whose data is deleted.")],
    dataset: Annotated[str, typer.Option(help="Dataset name in the store.")] = "movielens-small",
    db: Annotated[
        str | None, typer.Option(help="Store URL (default: LLMREC_DB_URL, else ~/.llmrec/llmrec.db).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete everything stored about a user (profile, interactions, feedback, chats, keys, cached embeddings).

    The deletion is written to the audit log (actor `cli`), which names the user only by a salted digest. A running
    server keeps the user's fitted history until it refits: delete through its API (DELETE /v1/users/ID) instead,
    so its lists stop using it at once.
    """
    from llmrec.data.store import Store
    from llmrec.privacy import forget_user

    store = Store(db)
    if not yes and not typer.confirm(f"delete every row of user {user!r} of {dataset!r} in {store.display_url}?"):
        raise typer.Exit(1)
    report = forget_user(store, dataset, user, actor="cli")
    if not report.found:
        raise ConfigError(
            f"nothing stored about user {user!r} in dataset {dataset!r} (the attempt is in the audit log)",
            field="user",
            fix="check the id and --dataset",
        )
    rows = ", ".join(f"{table}: {n}" for table, n in report.deleted.items())
    console.print(escape(f"deleted user {user!r} of {dataset!r} ({rows}); audit entry {report.audit_id}"))


@app.command("export")
@_friendly_errors
def export_command(
    user: Annotated[str, typer.Argument(help="The user id whose data is exported.")],
    dataset: Annotated[str, typer.Option(help="Dataset name in the store.")] = "movielens-small",
    db: Annotated[
        str | None, typer.Option(help="Store URL (default: LLMREC_DB_URL, else ~/.llmrec/llmrec.db).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON here instead of printing it.")] = None,
) -> None:
    """Everything stored about a user, as JSON (recorded in the audit log, actor `cli`)."""
    from llmrec.data.store import Store
    from llmrec.privacy import export_user

    data = export_user(Store(db), dataset, user, actor="cli")
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}", field="out") from exc
    console.print(escape(f"wrote {out}"))


@app.command()
@_friendly_errors
def datasets(db: Annotated[str | None, typer.Option(help="Store URL.")] = None) -> None:
    """List built-in datasets and the ones in the store."""
    from llmrec.data.registry import BUILTIN_DATASETS
    from llmrec.data.store import Store

    console.print("built in: " + ", ".join(BUILTIN_DATASETS))
    console.print("in the store: " + (", ".join(Store(db).datasets()) or "(none)"))


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
    import time

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
    method: Annotated[str, typer.Option(help="LM rerank method: loglik, yesno or listwise.")] = "loglik",
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
    method: Annotated[str, typer.Option(help="LM rerank method: loglik, yesno or listwise.")] = "loglik",
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


@app.command()
@_friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Store dataset to serve (movielens-small by default, ingested when missing; with --model: the "
            "model's dataset)."
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Store URL (default: LLMREC_DB_URL, else ~/.llmrec/llmrec.db).")
    ] = None,
    retriever: Annotated[
        str | None, typer.Option(help="Default retriever, ease by default (a request may choose another served one).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A ServeConfig JSON file (overrides --dataset and --retriever).")
    ] = None,
    warm: Annotated[bool, typer.Option(help="Fit the default pipeline before accepting requests.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Start from a folder written by `llmrec train --out DIR`: its retriever is loaded, not fitted.",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI docs at /docs) with uvicorn.

    The admin key comes from LLMREC_ADMIN_KEY; without it a random one is made for this run and shown once.
    """
    import secrets

    from pydantic import SecretStr, ValidationError

    from llmrec.data.store import Store
    from llmrec.pipeline import PipelineConfig, RetrieverSpec

    try:
        import uvicorn

        from llmrec.serve import RecommenderService, ServeConfig, create_app
    except ImportError as exc:
        raise ConfigError(f"the HTTP API needs the serve extra ({exc}). Fix: pip install 'llmrec[serve]'") from exc
    _no_pipeline_options_with_model(model, retriever=retriever)
    try:
        if config is not None:
            values = json.loads(config.read_text(encoding="utf-8"))
            saved = model or values.get("model")  # --model wins over the file's "model"
            values.pop("model", None)
            if saved:
                settings = ServeConfig.for_model(saved, **values)
            else:
                settings = ServeConfig.from_settings(**values)
        elif model is not None:
            settings = ServeConfig.for_model(model, None, **({"dataset": dataset} if dataset else {}))
        else:
            pipeline = PipelineConfig(
                retriever=RetrieverSpec(name=retriever or "ease"), rerank=None, explain_with_lm=False
            )
            settings = ServeConfig.from_settings(dataset=dataset or "movielens-small", pipeline=pipeline)
    except OSError as exc:
        raise ConfigError(f"cannot read the serve config {config}: {exc.strerror}") from exc
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"invalid serve config{f' in {config}' if config else ''}: {exc}") from exc
    if settings.admin_key is None:
        made = secrets.token_urlsafe(24)
        settings.admin_key = SecretStr(made)
        console.print(f"admin key for this run (set LLMREC_ADMIN_KEY to choose one): [bold]{made}[/]")
    store = Store(db)
    service = RecommenderService(store, settings)
    with console.status(f"preparing {settings.dataset} in {store.display_url}"):
        service.prepare()
        if settings.model is not None:
            pipe = service.pipeline()  # load now: a bad folder fails here, with its message, not at the first request
            console.print(
                escape(f"loaded model from {settings.model} (fitted {_fitted_on(pipe.fitted_at)}, no refit)"),
                highlight=False,
                soft_wrap=True,
            )
    console.print(f"serving {settings.dataset} at http://{host}:{port}/v1 (docs: http://{host}:{port}/docs)")
    from llmrec.privacy.logs import uvicorn_log_config

    _log_request_ids(log_level)
    started = time.monotonic()
    # uvicorn sets up its own log handlers (the access log quotes URLs): they get the scrubbing filter too.
    uvicorn.run(
        create_app(service, warm=warm),
        host=host,
        port=port,
        log_level=log_level,
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    _stop_lingering_threads(deadline=time.monotonic() + SHUTDOWN_GRACE_S / 2, since=started)


SHUTDOWN_GRACE_S = 6
"""On SIGTERM, how long requests in flight may take to finish (then uvicorn cancels them); the worker threads of
cancelled requests get half of it again before the process exits anyway: stopped within 10 s in all."""


def _log_request_ids(level: str) -> None:
    """Log llmrec's lines (the access log of the API among them) with the request id of each."""
    from llmrec.privacy.logs import PiiLogFilter
    from llmrec.serve.middleware import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(PiiLogFilter())  # this handler takes llmrec's lines from the root's: it scrubs them too
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger("llmrec")
    logger.addHandler(handler)
    logger.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else logging.INFO)
    logger.propagate = False


def _stop_lingering_threads(deadline: float, since: float) -> None:
    """Exit now if worker threads still compute answers nobody waits for (a fit, a model call of a cancelled request).

    Python waits for every non-daemon thread at exit, and the pool's threads cannot be interrupted: without this, a
    stopped server kept running for minutes.
    """
    import threading

    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in busy if t.is_alive()]
    if alive:
        logging.getLogger(__name__).warning(
            "stopping with %d worker thread(s) still busy after %.0f s of serving: %s",
            len(alive),
            time.monotonic() - since,
            ", ".join(sorted(set(alive))),
        )
        logging.shutdown()
        os._exit(0)


# --------------------------------------------------------------------------------------------------------------
# llmrec tune: adapt the language model (LoRA, prompt tuning) on instruction data from the training split
# --------------------------------------------------------------------------------------------------------------

tune_app = typer.Typer(
    help="Adapt the local language model to recommendation (LoRA, prompt tuning); `--adapter NAME` then uses it.",
    no_args_is_help=True,
)
app.add_typer(tune_app, name="tune")

NameOpt = Annotated[str, typer.Option(help="Registry name of the adapter (then: --adapter NAME).")]
DatasetOpt = Annotated[str, typer.Option(help="movielens-small, goodbooks-10k, or a dataset ingested into the store.")]
ProtocolOpt = Annotated[str, typer.Option(help="Split protocol: leave-last-out or temporal.")]
StageOpt = Annotated[str, typer.Option(help="valid: learn from train only; test: train + validation (a final model).")]
TasksOpt = Annotated[str, typer.Option(help="Comma-separated tasks: next, direct, yesno, rating, explain.")]
ExamplesOpt = Annotated[int, typer.Option(help="Instruction examples to build (spread over the tasks).")]
HistoryOpt = Annotated[int, typer.Option(help="Items of history each prompt shows.")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimizer steps (default: --epochs passes over the data).")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the examples when --steps is not given.")]
BatchOpt = Annotated[int, typer.Option(help="Examples per step.")]
MaxTokensOpt = Annotated[int, typer.Option(help="Longest example in tokens (longer ones are skipped).")]
ValidOpt = Annotated[float, typer.Option(help="Share of users held out for the validation loss.")]
EvalOpt = Annotated[int, typer.Option(help="Validation loss (and checkpoint) every N steps; 0 = at the end only.")]
PatienceOpt = Annotated[int, typer.Option(help="Stop after N validations without improvement.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data draw, adapter init, batch order and dropout.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch threads while training.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing adapter of that name.")]
IncrementalOpt = Annotated[
    bool, typer.Option(help="Continue the existing adapter NAME on interactions newer than its training cutoff.")
]
ExportOpt = Annotated[Path | None, typer.Option(help="Also write the training examples here (JSONL).")]
DbOpt = Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")]


def _run_tune(config: Any, name: str, dataset: str, protocol: str, stage: str, tasks: str, examples: int,
              history: int, valid_fraction: float, seed: int, incremental: bool, resume: bool, overwrite: bool,
              export: Path | None, db: str | None,
              scorer: tuple[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Build the split and instruction data, train, print a summary (shared by every adapter kind).

    ``scorer`` (name, config) is CoLLM's: the model fitted on the same split whose item vectors the projector reads.
    """
    from pydantic import ValidationError

    from llmrec.adapt.instructions import InstructionConfig
    from llmrec.adapt.recipe import tune_on_split
    from llmrec.data.registry import load_named
    from llmrec.data.splits import make_split

    if stage not in ("valid", "test"):
        raise ConfigError(f"--stage must be valid or test, got {stage!r}")
    try:
        names = tuple(t.strip() for t in tasks.split(",") if t.strip())  # validated against the task names here
        instructions = InstructionConfig.model_validate(
            {"tasks": names, "examples": examples, "history": history, "seed": seed}
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid --tasks/--examples/--history: {exc}") from exc
    data = load_named(dataset, db, prefer_store=False)
    split = make_split(data, protocol)
    if scorer is not None:
        from llmrec.adapt.collm import tune_collm_on_split

        result = tune_collm_on_split(
            split,
            config,
            name=name,
            scorer=scorer[0],
            scorer_config=scorer[1],
            instructions=instructions,
            stage=stage,  # type: ignore[arg-type]
            valid_fraction=valid_fraction,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            export=export,
            show_progress=True,
        )
    else:
        result = tune_on_split(
            split,
            config,
            name=name,
            instructions=instructions,
            stage=stage,  # type: ignore[arg-type]
            valid_fraction=valid_fraction,
            incremental=incremental,
            resume=resume,
            overwrite=overwrite,
            export=export,
            show_progress=True,
        )
    meta = result.metadata
    table = Table(title=f"{meta['kind']} adapter {name!r}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    loss = meta.get("valid_loss_best")
    rows = [
        ("folder", str(result.path)),
        ("data", f"{meta['dataset']} ({meta['protocol']}, stage {meta['stage']}): {meta['n_train']} train / "
                 f"{meta['n_valid']} validation examples, tasks {', '.join(meta['tasks'])}"),
        ("steps", f"{meta['steps_this_run']} this run ({meta['steps']} in total)"
                  + (", stopped early" if meta["stopped_early"] else "")),
        ("validation loss", f"{meta['valid_loss_start']:.3f} -> {loss:.3f} (best at step {meta['best_step']})"
                            if loss is not None and meta.get("valid_loss_start") is not None else "-"),
        ("train loss (last step)", f"{meta['train_loss_last']:.3f}"),
        ("time, memory", f"{meta['wall_s']:.0f} s, peak {meta['peak_rss_mb']:.0f} MB"),
        ("use it", f"llmrec recommend --user 1 --adapter {name}"),
    ]  # fmt: skip
    if "scorer" in meta:
        rows.insert(1, ("item vectors", f"{meta['scorer']['name']} ({meta['n_items_with_vectors']} items)"))
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@tune_app.command("lora")
@_friendly_errors
def tune_lora_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    tasks: TasksOpt = "next,direct,yesno,rating,explain",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-4,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="all-linear, or comma-separated module names (e.g. q_proj,v_proj).")
    ] = "all-linear",
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    incremental: IncrementalOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """LoRA fine-tuning of the local language model on instruction data from the training split."""
    from pydantic import ValidationError

    from llmrec.adapt.lora import LoraTuneConfig

    modules: Any = target_modules if target_modules == "all-linear" else tuple(target_modules.split(","))
    try:
        config = LoraTuneConfig(
            r=rank, alpha=alpha, dropout=dropout, target_modules=modules, lr=lr, epochs=epochs, max_steps=steps,
            batch_size=batch_size, max_tokens=max_tokens, eval_every=eval_every, patience=patience, seed=seed,
            threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid LoRA settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, tasks, examples, history, valid_fraction, seed, incremental,
              resume, overwrite, export, db)  # fmt: skip


@tune_app.command("prompt")
@_friendly_errors
def tune_prompt_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    tasks: TasksOpt = "next,direct,yesno,rating,explain",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (soft prompts need a large one).")] = 1e-2,
    virtual_tokens: Annotated[int, typer.Option(help="Trained virtual tokens in front of every prompt.")] = 16,
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    incremental: IncrementalOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """Prompt tuning (a trained soft prompt, the language model frozen) on instruction data from the training split."""
    from pydantic import ValidationError

    from llmrec.adapt.prompt_tuning import PromptTuneConfig

    try:
        config = PromptTuneConfig(
            num_virtual_tokens=virtual_tokens, lr=lr, epochs=epochs, max_steps=steps, batch_size=batch_size,
            max_tokens=max_tokens, eval_every=eval_every, patience=patience, seed=seed, threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid prompt-tuning settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, tasks, examples, history, valid_fraction, seed, incremental,
              resume, overwrite, export, db)  # fmt: skip


@tune_app.command("collm")
@_friendly_errors
def tune_collm_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    scorer: Annotated[str, typer.Option(help="Source of the item vectors: als, bpr, sasrec or bert4rec.")] = "als",
    scorer_config: Annotated[
        str, typer.Option(help="The scorer's settings as a JSON object, e.g. '{\"factors\": 32}'.")
    ] = "{}",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the projector.")] = 1e-3,
    projector_hidden: Annotated[int, typer.Option(help="Width of the projector's hidden layer.")] = 256,
    lora_rank: Annotated[
        int, typer.Option(help="Rank of LoRA weights trained with the projector; 0 keeps the language model frozen.")
    ] = 0,
    lora_lr_scale: Annotated[float, typer.Option(help="LoRA learning rate = lr x this.")] = 0.2,
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """CoLLM collaborative tokens: a projector from a CF model's item vectors into the LM, on yes/no examples."""
    from pydantic import ValidationError

    from llmrec.adapt.collm import CollmTuneConfig

    try:
        options = json.loads(scorer_config)
    except ValueError as exc:
        raise ConfigError(f"--scorer-config must be a JSON object ({exc}), e.g. '{{\"factors\": 32}}'") from exc
    if not isinstance(options, dict):
        raise ConfigError("--scorer-config must be a JSON object, e.g. '{\"factors\": 32}'")
    try:
        config = CollmTuneConfig(
            projector_hidden=projector_hidden, lora_r=lora_rank, lora_lr_scale=lora_lr_scale, lr=lr, epochs=epochs,
            max_steps=steps, batch_size=batch_size, max_tokens=max_tokens, eval_every=eval_every, patience=patience,
            seed=seed, threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid CoLLM settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, "yesno", examples, history, valid_fraction, seed, False,
              resume, overwrite, export, db, scorer=(scorer, options))  # fmt: skip


@tune_app.command("list")
@_friendly_errors
def tune_list() -> None:
    """List the adapters in the registry (LLMREC_ADAPTER_DIR, default ~/.llmrec/adapters)."""
    from llmrec.adapt.registry import adapter_root, list_adapters, read_metadata

    root = adapter_root()
    names = list_adapters(root)
    if not names:
        console.print(f"no adapters in {root} yet: train one with `llmrec tune lora --name NAME`")
        return
    table = Table(title=f"adapters in {root}")
    for column in ("name", "kind", "dataset", "tasks", "steps", "valid loss", "cutoff", "created"):
        table.add_column(column)
    for name in names:
        meta = read_metadata(root / name)
        loss = meta.get("valid_loss_best")
        cutoff = meta.get("train_cutoff")
        table.add_row(
            name,
            str(meta.get("kind", "?")),
            str(meta.get("dataset", "?")),
            ",".join(meta.get("tasks", {})),
            str(meta.get("steps", "?")),
            f"{loss:.3f}" if isinstance(loss, int | float) else "-",
            _iso_day(cutoff),
            str(meta.get("created", "?")),
        )
    console.print(table)


def _iso_day(timestamp: object) -> str:
    import datetime as dt

    if not isinstance(timestamp, int | float):
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


# llmrec synth: synthetic data at any size (power-law popularity, sessions over time, item texts)
# --------------------------------------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write interactions, items, users and synth.json to.")],
    users: Annotated[int, typer.Option(help="Number of users.")] = 1000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 1000,
    interactions: Annotated[int, typer.Option(help="Number of interactions.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (the same seed gives the same files).")] = 0,
    popularity_exponent: Annotated[float, typer.Option(help="Zipf exponent of item popularity.")] = 1.0,
    topics: Annotated[int, typer.Option(help="Item categories (sessions keep to one).")] = 20,
    ratings: Annotated[bool, typer.Option(help="1-5 star ratings as values instead of implicit 1.0.")] = False,
    format_: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
) -> None:
    """Write a synthetic dataset for benchmarks and tests; then `llmrec ingest --interactions OUT/interactions.csv`."""
    from pydantic import ValidationError

    from llmrec.data.synth import SynthConfig, write_synth

    try:
        config = SynthConfig(
            users=users,
            items=items,
            interactions=interactions,
            seed=seed,
            popularity_exponent=popularity_exponent,
            topics=topics,
            ratings=ratings,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid synth settings: {exc}") from exc
    if format_ not in ("csv", "parquet"):
        raise ConfigError(f"unknown --format {format_!r}", field="format", fix="use csv or parquet")
    with console.status(f"drawing {interactions} interactions"):
        paths = write_synth(config, out, format="parquet" if format_ == "parquet" else "csv")
    meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
    console.print(escape(f"wrote {meta['rows']} to {out}"), highlight=False, soft_wrap=True)


# llmrec batch: jobs on Ray (a private local Ray by default, a cluster with --address)
# --------------------------------------------------------------------------------------------------------------

batch_app = typer.Typer(
    help="Batch jobs on Ray: top-k for every user, a catalogue's embeddings. Local unless --address names a cluster.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")

AddressOpt = Annotated[
    str | None, typer.Option(help="A running Ray cluster ('auto', HOST:PORT); default: a private local Ray.")
]
WorkersOpt = Annotated[int, typer.Option(help="Actors in the pool (each loads the model once).")]
CpusOpt = Annotated[float, typer.Option(help="Logical CPUs Ray reserves per actor.")]
ReportOpt = Annotated[Path | None, typer.Option(help="Also write the run's report (counts, time, nodes) as JSON.")]


def _write_report(report: Any, path: Path | None) -> None:
    """Print a batch report on one line, and write it as JSON when asked."""
    import dataclasses

    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report).items()}
    shown = {k: v for k, v in fields.items() if k != "node_ids"}
    console.print(escape(json.dumps(shown)), highlight=False, soft_wrap=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")


@batch_app.command("recommend")
@_friendly_errors
def batch_recommend_command(
    model: Annotated[Path, typer.Option(help="A folder written by `llmrec train --out DIR` (or Scorer.save).")],
    out: Annotated[Path | None, typer.Option(help="Parquet file of user_id, rank, item_id, score.")] = None,
    k: Annotated[int, typer.Option(help="List length.")] = 10,
    store: Annotated[bool, typer.Option(help="Also store the lists in the store's recommendations table.")] = False,
    run: Annotated[str | None, typer.Option(help="Run name in the store (default: the model folder's name).")] = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1.0,
    batch_size: Annotated[int, typer.Option(help="Users per task.")] = 200,
    report: ReportOpt = None,
) -> None:
    """Top-k for every user of a saved model on Ray: the model loaded once per actor, same lists as one process.

    The lists are the pipeline's retrieval stage (as `llmrec recommend --no-rerank`): the language-model rerank is
    not run in batch.
    """
    from llmrec.scale import RayOptions, batch_recommend

    if out is None and not store:
        raise ConfigError("nothing to write", field="out", fix="pass --out FILE.parquet, --store, or both")
    target = None
    if store:
        from llmrec.data.store import Store

        target = Store(db)
    options = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker)
    result = batch_recommend(
        model, k=k, out=out, store=target, run=run, batch_size=batch_size, options=options, show_progress=True
    )
    _write_report(result, report)


@batch_app.command("embed")
@_friendly_errors
def batch_embed_command(
    dataset: DatasetOpt = "movielens-small",
    out: Annotated[Path | None, typer.Option(help="Also write item_ids and vectors to this .npz file.")] = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1.0,
    chunk_size: Annotated[int, typer.Option(help="Texts per encode call (the unit of work).")] = 256,
    report: ReportOpt = None,
) -> None:
    """Embed a dataset's item texts into the store's embedding cache on Ray; only texts missing from it are embedded."""
    import numpy as np

    from llmrec.data.registry import load_named
    from llmrec.data.store import Store
    from llmrec.encode.cache import EmbeddingCache
    from llmrec.scale import RayOptions, batch_embed
    from llmrec.text.build import item_texts

    data = load_named(dataset, db)
    options = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker)
    vectors, result = batch_embed(
        item_texts(data), EmbeddingCache(Store(db)), chunk_size=chunk_size, options=options, show_progress=True
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, allow_pickle=False, item_ids=data.item_vocab.ids.astype(str), vectors=vectors)
    _write_report(result, report)


if __name__ == "__main__":  # pragma: no cover
    app()
