"""The app factory: one FastAPI app around one :class:`RecommenderService`, no module-level state.

The web page (``/``) is served by the same app and calls the same routes from the browser.
Everything the routes need hangs off ``app.state.service``, so several apps (tests, one per dataset) live side by
side in one process. More routers (the chat router) plug in through ``create_app(routers=[...])`` or
``app.include_router(router, prefix="/v1")``; they get the service and the caller through
:mod:`llmrec.serve.deps`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI

from llmrec.data.store import Store
from llmrec.serve.config import ServeConfig
from llmrec.serve.errors import install_error_handlers
from llmrec.serve.limits import BodySizeLimit
from llmrec.serve.middleware import RequestContext
from llmrec.serve.openapi import install_served_openapi
from llmrec.serve.ratelimit import RateLimiter
from llmrec.serve.routes import ROUTERS
from llmrec.serve.service import RecommenderService
from llmrec.serve.web import mount_page

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/v1"
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
    app.add_middleware(RequestContext, api_prefix=API_PREFIX)  # added last: outermost, sees every response
    for router in (*ROUTERS, *routers):
        app.include_router(router, prefix=API_PREFIX)
    install_served_openapi(app, service.config, API_PREFIX)
    if page:
        mount_page(app, API_PREFIX)
    return app
