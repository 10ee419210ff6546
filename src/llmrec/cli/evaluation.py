"""``llmrec evaluate``, ``report`` and ``compare``: run the evaluation protocol, render and compare results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmrec.cli.common import DEFAULT_MODELS, _friendly_errors, app, console, err_console
from llmrec.cli.tables import comparisons_table, metrics_table
from llmrec.errors import ConfigError


def _run_evaluation(
    data: Any,
    models: list[str],
    k: int,
    protocol: str,
    tune: bool,
    seed: int,
    seeds: int = 1,
    compare_to: str | None = None,
    trials: Any = None,
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

        def step(done: int, steps: int | None, message: str) -> None:
            # The runner does not know its total in advance (steps is None): the bar keeps the estimate above.
            progress.update(task, completed=done, description=message)

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
            trials=trials,
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
    ray: Annotated[
        bool, typer.Option("--ray", help="Run the tuning trials in parallel on Ray Tune (same numbers and choices).")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="With --ray: a running cluster (auto, HOST:PORT); default a private local Ray.")
    ] = None,
    workers: Annotated[int, typer.Option(help="With --ray: tuning trials at once.")] = 2,
) -> None:
    """Evaluate scorers on a time-respecting split with full ranking; write JSON (and HTML)."""
    from llmrec.data.registry import load_named

    trials = None
    if ray:
        from llmrec.scale import RayOptions
        from llmrec.scale.tune import RayTuneTrials

        trials = RayTuneTrials(RayOptions(address=address, workers=workers))
    elif address is not None:
        raise ConfigError("--address needs --ray (it names the Ray cluster the tuning trials run on)")

    data = load_named(dataset, db, prefer_store=False)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if compare_to is not None and compare_to not in names:
        raise ConfigError(f"--compare-to {compare_to!r} is not among --models ({', '.join(names)}); add it to --models")
    results = _run_evaluation(data, names, k, protocol, tune, seed, seeds, compare_to, trials)
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
