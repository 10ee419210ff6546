"""``llmrec batch recommend|rerank|embed``: the batch jobs of :mod:`llmrec.scale` on Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from llmrec.cli.common import DatasetOpt, DbOpt, _friendly_errors, app, console
from llmrec.errors import ConfigError

# --------------------------------------------------------------------------------------------------------------

batch_app = typer.Typer(
    help="Batch jobs on Ray: top-k for every user (reranked or not), a catalogue's embeddings. Local unless --address.",
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


ModelDirOpt = Annotated[Path, typer.Option(help="A folder written by `llmrec train --out DIR` (or Scorer.save).")]
OutOpt = Annotated[Path | None, typer.Option(help="Parquet file of user_id, rank, item_id, score.")]
KOpt = Annotated[int, typer.Option(help="List length.")]
StoreOpt = Annotated[bool, typer.Option(help="Also store the lists in the store's recommendations table.")]
RunOpt = Annotated[str | None, typer.Option(help="Run name in the store (default: the model folder's name).")]
BatchOpt = Annotated[int, typer.Option(help="Users per task.")]


def _batch_lists(
    model: Path,
    out: Path | None,
    k: int,
    store: bool,
    run: str | None,
    db: str | None,
    options: Any,
    batch_size: int,
    report: Path | None,
    *,
    rerank: bool,
) -> None:
    """What `batch recommend` and `batch rerank` share: check the outputs, run the pool, report."""
    from llmrec.scale import batch_recommend

    if out is None and not store:
        raise ConfigError("nothing to write", field="out", fix="pass --out FILE.parquet, --store, or both")
    target = None
    if store:
        from llmrec.data.store import Store

        target = Store(db)
    result = batch_recommend(
        model,
        k=k,
        out=out,
        store=target,
        run=run,
        batch_size=batch_size,
        options=options,
        show_progress=True,
        rerank=rerank,
    )
    _write_report(result, report)


@batch_app.command("recommend")
@_friendly_errors
def batch_recommend_command(
    model: ModelDirOpt,
    out: OutOpt = None,
    k: KOpt = 10,
    store: StoreOpt = False,
    run: RunOpt = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1.0,
    batch_size: BatchOpt = 200,
    report: ReportOpt = None,
) -> None:
    """Top-k for every user of a saved model on Ray: the model loaded once per actor, same lists as one process.

    The lists are the pipeline's retrieval stage (as `llmrec recommend --no-rerank`); `llmrec batch rerank` adds
    the language-model rerank.
    """
    from llmrec.scale import RayOptions

    options = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker)
    _batch_lists(model, out, k, store, run, db, options, batch_size, report, rerank=False)


@batch_app.command("rerank")
@_friendly_errors
def batch_rerank_command(
    model: Annotated[Path, typer.Option(help="A pipeline folder with a language model (`llmrec train --out DIR`).")],
    out: OutOpt = None,
    k: KOpt = 10,
    store: StoreOpt = False,
    run: RunOpt = None,
    db: DbOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusOpt = 1.0,
    batch_size: Annotated[int, typer.Option(help="Users per task (each is a language-model call).")] = 20,
    report: ReportOpt = None,
) -> None:
    """Top-k for every user of a saved pipeline, reranked by its language model, loaded once per actor on Ray.

    The same lists as `llmrec recommend --model DIR --rerank`, user by user.
    """
    from llmrec.scale import RayOptions

    options = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker)
    _batch_lists(model, out, k, store, run, db, options, batch_size, report, rerank=True)


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
