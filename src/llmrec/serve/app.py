"""The app factory: one FastAPI app around one :class:`RecommenderService`, no module-level state.

The web page (``/``) is served by the same app and calls the same routes from the browser.
Everything the routes need hangs off ``app.state.service``, so several apps (tests, one per dataset) live side by
side in one process. More routers (the chat router) plug in through ``create_app(routers=[...])`` or
``app.include_router(router, prefix="/v1")``; they get the service and the caller through
:mod:`llmrec.serve.deps`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI

from llmrec.data.store import Store
from llmrec.serve.admission import Admission
from llmrec.serve.config import ServeConfig
from llmrec.serve.errors import install_error_handlers
from llmrec.serve.limits import BodySizeLimit
from llmrec.serve.middleware import RequestContext
from llmrec.serve.openapi import install_served_openapi
from llmrec.serve.ratelimit import RateLimiter
from llmrec.serve.routes import ROUTERS
from llmrec.serve.service import RecommenderService
from llmrec.serve.web import mount_page

__all__ = ["API_PREFIX", "app_from_environment", "create_app", "log_request_ids", "worker_environment"]

API_PREFIX = "/v1"
SERVE_CONFIG_ENV = "LLMREC_SERVE_CONFIG"
"""The JSON :class:`ServeConfig` of every worker of ``llmrec serve --workers N`` (set by the parent process)."""
SERVE_DB_ENV = "LLMREC_SERVE_DB"
SERVE_WARM_ENV = "LLMREC_SERVE_WARM"
SERVE_LOG_LEVEL_ENV = "LLMREC_SERVE_LOG_LEVEL"
log = logging.getLogger(__name__)

_DESCRIPTION = """Recommendations with language models: items, users, interactions, recommendations with grounded
explanations, and feedback that the next list reflects.

Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`). The admin key may do everything; a user key
(made with `POST /v1/keys`) reads and writes only its own user's data and reads items. Every error is
`{"error": {"type", "message", "fields": [{"loc", "msg"}]}}`."""


def create_app(
    service: RecommenderService | None = None,
    *,
    config: ServeConfig | None = None,
    store: Store | None = None,
    routers: Sequence[APIRouter] = (),
    warm: bool = False,
    page: bool = True,
) -> FastAPI:
    """Build the HTTP API.

    Args:
        service: The service to serve; built from ``config`` and ``store`` when ``None``.
        config: Used only when ``service`` is ``None`` (default: :meth:`ServeConfig.from_settings`).
        store: Used only when ``service`` is ``None`` (default: the store at ``LLMREC_DB_URL``).
        routers: More routers to mount under ``/v1`` (e.g. chat).
        warm: At startup, make sure the dataset is stored and fit the default pipeline before answering, then
            build the chat with its text-search index in the background
            (:meth:`RecommenderService.warm_up_in_background`), so no first request builds them.
        page: Serve the web page at ``/`` (see :mod:`llmrec.serve.web`).

    Returns:
        The app; ``app.state.service`` is its service.

    """
    if service is None:
        service = RecommenderService(store or Store(), config or ServeConfig.from_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking routes run in anyio's default thread pool: size it to the machine (see ServeConfig.threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = service.config.worker_threads()
        if warm:  # off the event loop, and abandoned (not waited for) when the server is stopped meanwhile
            await anyio.to_thread.run_sync(lambda: service.warm_up(chat=False), abandon_on_cancel=True)
            log.info("serving %s: default pipeline fitted", service.dataset)
            service.warm_up_in_background()  # chat and text search: built while the other routes already answer
        yield

    from llmrec import __version__

    app = FastAPI(
        title="llmrec",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    if service.config.rate_limit_per_minute is not None:
        app.state.rate_limiter = RateLimiter(service.config.rate_limit_per_minute, service.config.rate_limit_burst)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=service.config.max_request_bytes)
    app.add_middleware(
        Admission,
        max_inflight=service.config.inflight_limit(),
        queue_timeout_s=service.config.queue_timeout_s,
        request_timeout_s=service.config.request_timeout_s,
        api_prefix=API_PREFIX,
    )
    app.add_middleware(RequestContext, api_prefix=API_PREFIX)  # added last: outermost, sees every response
    for router in (*ROUTERS, *routers):
        app.include_router(router, prefix=API_PREFIX)
    install_served_openapi(app, service.config, API_PREFIX)
    if page:
        mount_page(app, API_PREFIX)
    return app


def log_request_ids(level: str) -> None:
    """Log llmrec's lines (the access log of the API among them) with the request id of each, PII scrubbed."""
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


def worker_environment(
    config: ServeConfig, db: str | None, *, warm: bool = True, log_level: str = "info"
) -> dict[str, str]:
    """The environment that makes :func:`app_from_environment` build ``config``'s app over the store at ``db``.

    The admin key travels in it as it does in ``LLMREC_ADMIN_KEY`` (the process's own environment); language
    model API keys are left out, so each worker reads them from its environment, as a loaded pipeline does.
    """
    values = _without_api_keys(config.model_dump(mode="json"))
    values["admin_key"] = config.admin_key.get_secret_value() if config.admin_key is not None else None
    env = {SERVE_CONFIG_ENV: json.dumps(values), SERVE_WARM_ENV: "1" if warm else "0", SERVE_LOG_LEVEL_ENV: log_level}
    if db:
        env[SERVE_DB_ENV] = db
    return env


def app_from_environment() -> FastAPI:
    """The app of one worker of ``llmrec serve --workers N`` (uvicorn calls it in each worker process).

    Every worker builds its own service over the same store and artifact folder, so a refit on any of them is
    published and reaches the others (see :mod:`llmrec.serve.service`).

    Raises:
        ConfigError: The environment holds no serve config (``llmrec serve --workers N`` sets it).

    """
    from llmrec.errors import ConfigError

    raw = os.environ.get(SERVE_CONFIG_ENV)
    if not raw:
        raise ConfigError(
            f"{SERVE_CONFIG_ENV} is not set: this factory builds the workers of `llmrec serve --workers N`. "
            "Fix: start the server with `llmrec serve --workers N`"
        )
    config = ServeConfig.model_validate_json(raw)
    log_request_ids(os.environ.get(SERVE_LOG_LEVEL_ENV, "info"))
    store = Store(os.environ.get(SERVE_DB_ENV) or None)
    return create_app(RecommenderService(store, config), warm=os.environ.get(SERVE_WARM_ENV, "1") == "1")


def _without_api_keys(value: Any) -> Any:
    """``value`` (a JSON dump) without its ``api_key`` entries (dumped masked, they would not work)."""
    if isinstance(value, dict):
        return {k: _without_api_keys(v) for k, v in value.items() if k != "api_key"}
    if isinstance(value, list):
        return [_without_api_keys(v) for v in value]
    return value
