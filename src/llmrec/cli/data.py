"""``llmrec ingest``, ``forget``, ``export``, ``datasets`` and ``synth``: data in and out of the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmrec.cli.common import _friendly_errors, _parse_map, app, console, err_console
from llmrec.errors import ConfigError


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

    The deletion is written to the audit log (actor `cli`), which names the user only by a salted digest. Running
    servers on the same store read the log on every request, so they stop using the user's fitted history at once.
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
