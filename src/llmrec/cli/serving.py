"""``llmrec serve``: the HTTP API and web page under uvicorn, with a graceful stop."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from llmrec.cli.common import _friendly_errors, app, console
from llmrec.cli.models import _fitted_on, _no_pipeline_options_with_model
from llmrec.errors import ConfigError


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
    artifacts: Annotated[
        Path | None,
        typer.Option(
            help="Artifact folder of published model versions, shared by every worker and node serving the dataset: "
            "a refit publishes a version there and all of them switch to it (with --workers: beside a SQLite store "
            "file by default)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; they share the store and the artifact folder.")
    ] = 1,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI docs at /docs) with uvicorn.

    The admin key comes from LLMREC_ADMIN_KEY; without it a random one is made for this run and shown once.
    With --workers N (or several servers on one store and --artifacts), a refit on any worker reaches them all.
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
    if artifacts is not None:
        settings.artifacts = str(artifacts)
    elif workers > 1 and settings.artifacts is None:
        settings.artifacts = _default_artifacts(store, workers)
    service = RecommenderService(store, settings)
    with console.status(f"preparing {settings.dataset} in {store.display_url}"):
        service.prepare()  # here, once: workers ingesting a missing dataset at the same time would race
        if settings.model is not None and workers == 1:
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
    app: Any = "llmrec.serve.app:app_from_environment"
    if workers > 1:  # uvicorn starts each worker from an import string: the worker builds its app from these
        from llmrec.serve.app import worker_environment

        os.environ.update(worker_environment(settings, db, warm=warm, log_level=log_level))
        console.print(f"{workers} workers; model versions in {settings.artifacts}", highlight=False)
    else:
        app = create_app(service, warm=warm)
    # uvicorn sets up its own log handlers (the access log quotes URLs): they get the scrubbing filter too.
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers,
        timeout_worker_healthcheck=900,  # a worker fits or loads the model before it answers
        host=host,
        port=port,
        log_level=log_level,
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    _stop_lingering_threads(deadline=time.monotonic() + SHUTDOWN_GRACE_S / 2, since=started)


def _default_artifacts(store: Any, workers: int) -> str:
    """The artifact folder of ``--workers N`` without ``--artifacts``: ``<db name>-models`` beside a SQLite file."""
    database = store.engine.url.database if store.engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ConfigError(
            f"--workers {workers} needs an artifact folder every worker reads (the store is not a SQLite file). "
            "Fix: add --artifacts DIR (a shared folder when the workers run on several machines)"
        )
    db_file = Path(database).expanduser()
    return str(db_file.with_name(f"{db_file.stem}-models"))


SHUTDOWN_GRACE_S = 6
"""On SIGTERM, how long requests in flight may take to finish (then uvicorn cancels them); the worker threads of
cancelled requests get half of it again before the process exits anyway: stopped within 10 s in all."""


def _log_request_ids(level: str) -> None:
    """Log llmrec's lines (the access log of the API among them) with the request id of each."""
    from llmrec.serve.app import log_request_ids

    log_request_ids(level)


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
