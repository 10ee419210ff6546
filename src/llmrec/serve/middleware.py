"""What every response of the API carries: a request id, security headers, and an error body for any crash.

:class:`RequestContext` is plain ASGI middleware, outermost in the app, so it sees every response (errors, the
413 of the body limit, a crash in a route) and every log line written while a request runs:

* **Request id**: taken from the client's ``X-Request-ID`` when it is a short token (letters, digits, ``-_.:``),
  else made fresh; sent back as ``X-Request-ID``, put in every error body (``error.request_id``), and set on every
  log record of the request (:class:`RequestIdFilter`, ``%(request_id)s``), so a client's report finds the log.
* **Security headers**: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``Cross-Origin-Resource-Policy: same-origin``, and ``Cache-Control: no-store`` on API answers
  (they hold user data); a header the route set itself is kept.
* **Crashes**: an exception no handler took becomes the API's 500 body (with the request id) instead of
  Starlette's plain-text one; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "SECURITY_HEADERS", "RequestContext", "RequestIdFilter", "current_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Sent with every response (a route's own value of one of them wins)."""

_current: ContextVar[str | None] = ContextVar("llmrec_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = logging.getLogger("llmrec.serve.access")


def current_request_id() -> str | None:
    """The id of the request being answered (``None`` outside a request)."""
    return _current.get()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` (``-`` outside a request), so a format can show ``%(request_id)s``.

    Add it to a handler (``handler.addFilter(RequestIdFilter())``): ``llmrec serve`` does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the record; never drops it."""
        if not hasattr(record, "request_id"):
            record.request_id = _current.get() or "-"
        return True


class RequestContext:
    """Request id, security headers and a last-resort 500 for every HTTP response (see the module docstring).

    Args:
        app: The ASGI app to wrap.
        api_prefix: Responses under this path also get ``Cache-Control: no-store``.

    """

    def __init__(self, app: ASGIApp, api_prefix: str = "/v1") -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request with the id set, headers added, and any crash turned into the error body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _VALID_ID.match(text) else None
                break
        request_id = request_id or secrets.token_hex(8)
        token = _current.set(request_id)
        started = time.perf_counter()
        status = 500
        sent_start = False
        path = scope.get("path", "")
        extra = [(REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
        if path.startswith(self.api_prefix):
            extra.append((b"cache-control", b"no-store"))
        extra += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
                headers = list(message.get("headers", ()))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in have]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            log.error("%s %s failed [request %s]", scope.get("method"), path, request_id, exc_info=exc)
            if sent_start:
                raise
            from llmrec.serve.errors import error_response

            response = error_response(
                500, "internal_error", "the server failed to answer this request; the error is logged"
            )
            await response(scope, receive, send_with_headers)
        finally:
            log.info(
                "%s %s %s %.1f ms [request %s]",
                scope.get("method"),
                path,
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )
            _current.reset(token)
