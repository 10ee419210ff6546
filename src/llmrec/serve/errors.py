"""The API's one error model, and the handlers that turn every failure into it.

Every error response is ``{"error": {"type": ..., "message": ..., "field": ..., "fix": ...,
"fields": [{"loc": [...], "msg": ...}]}}``. ``message`` is the whole text (the fix included, for clients that show
only it); ``field`` names the setting or argument at fault and ``fix`` says what to do, when the error knows
(``null`` otherwise); ``fields`` lists field-level problems (the one ``field`` too, as ``{"loc": [field]}``).

=========================  ======  ==========================================================================
cause                      status  type
=========================  ======  ==========================================================================
request fails validation   422     ``validation_error`` (``fields`` name each bad field)
bad rows in a batch        422     ``data_validation_error`` (``fields`` name row and field, ``msg`` the fix)
no or unknown API key      401     ``unauthorized``
another user's data        403     ``forbidden``
unknown id / route         404     ``not_found``
id already stored          409     ``conflict``
unsupported method         405     ``method_not_allowed`` (``Allow`` lists the path's methods)
body over the limit        413     ``payload_too_large``
too many requests          429     ``rate_limited`` (``Retry-After`` set; per key, when limits are configured)
other llmrec errors        400     ``bad_request`` (a config choice, a model that cannot do what was asked)
language model failed      502     ``lm_bad_gateway`` (its server answered an error, 5xx, or unreadable text)
store unreachable or busy  503     ``store_unavailable`` (``Retry-After`` set)
language model unavailable 503     ``lm_unavailable`` (down, timed out, 429/503 upstream; ``Retry-After`` set)
server at capacity         503     ``overloaded`` (no free slot in time, :mod:`llmrec.serve.admission`)
no answer in time          504     ``timeout`` (the request timeout passed before an answer started)
anything else              500     ``internal_error`` (logged with its traceback; the response never has one)
=========================  ======  ==========================================================================

Every body carries ``request_id`` (also sent as ``X-Request-ID`` and written in the log lines of the request).
Messages never show where the server keeps its data: database URLs and file paths are replaced by ``<url>`` and
``<path>``, and a 5xx says only what happened, the details go to the log under the request id.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from llmrec.errors import (
    ConfigError,
    ConflictError,
    DataValidationError,
    LlmrecError,
    NotFittedError,
    StoreError,
    UnknownIdError,
)
from llmrec.llm.errors import LMError, LMUnavailableError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "FieldError",
    "Forbidden",
    "Unauthorized",
    "allowed_methods",
    "data_problem_fields",
    "error_of",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "redact",
    "retry_after_of",
]

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One field-level problem: where (``["body", "interactions", 3, "timestamp"]``) and what."""

    loc: list[str | int]
    msg: str


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str = Field(description="Machine-readable kind: validation_error, not_found, forbidden, ...")
    message: str = Field(description="What went wrong and how to fix it, in words.")
    field: str | None = Field(default=None, description="The setting or argument at fault, when one is.")
    fix: str | None = Field(default=None, description="What to do about it, when the server knows.")
    fields: list[FieldError] = Field(default_factory=list, description="Field-level problems, when any.")
    request_id: str | None = Field(
        default=None, description="The request's id (also the X-Request-ID header): quote it when reporting."
    )


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """An error the API answers with a given status (raised by routes and dependencies).

    Args:
        status: HTTP status code.
        type: The error type of the body.
        message: What went wrong and how to fix it.
        fields: Field-level problems.
        headers: Extra response headers (e.g. ``WWW-Authenticate``).

    """

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.fields = list(fields)
        self.headers = headers


class Unauthorized(ApiError):
    """No API key, or one that is unknown or revoked (401)."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """A valid key that may not do this (403)."""

    def __init__(self, message: str, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(403, "forbidden", message, fields)


def error_response(
    status: int,
    type: str,
    message: str,
    fields: Sequence[FieldError] = (),
    headers: dict[str, str] | None = None,
    *,
    detail: ErrorDetail | None = None,
) -> JSONResponse:
    """A JSON response in the error model (``detail``, when given, is the body as is), redacted, with the request id.

    Every error body of the API is made here, so no message reaches a client with a URL or path in it.
    """
    from fastapi.responses import JSONResponse

    from llmrec.serve.middleware import current_request_id

    detail = detail or ErrorDetail(type=type, message=message, fields=list(fields))
    detail = detail.model_copy(
        update={
            "message": redact(detail.message),
            "fix": None if detail.fix is None else redact(detail.fix),
            "fields": [FieldError(loc=f.loc, msg=redact(f.msg)) for f in detail.fields],
            "request_id": current_request_id(),
        }
    )
    return JSONResponse(ErrorBody(error=detail).model_dump(mode="json"), status_code=status, headers=headers)


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# An absolute path of two or more parts (/srv/data/llmrec.db, C:\\data\\x.db), but not the API's own routes.
_PATH = re.compile(r"(?<![\w/.<])(?:/(?!v1/|v1\b)[\w.@~+-]+(?:/[\w.@~+-]*)+|[A-Za-z]:\\[^\s'\"]+)")


def redact(text: str) -> str:
    """``text`` without database URLs or file paths: they tell a client where and how the server keeps its data."""
    return _PATH.sub("<path>", _URL.sub("<url>", text))


def data_problem_fields(exc: DataValidationError, prefix: Sequence[str | int] = ()) -> list[FieldError]:
    """One field error per problem: ``[*prefix, row, field]`` (row 0-based, as in the request's list)."""
    out = []
    for problem in exc.problems:
        loc: list[str | int] = list(prefix)
        if problem.line is not None:
            loc.append(problem.line - 1)  # in-memory frames number their rows from 1
        if problem.field is not None:
            loc.append(problem.field)
        out.append(FieldError(loc=loc, msg=f"{problem.message}. Fix: {problem.fix}"))
    return out


def _status_of(exc: LlmrecError) -> tuple[int, str]:
    if isinstance(exc, UnknownIdError):
        return 404, "not_found"
    if isinstance(exc, ConflictError):
        return 409, "conflict"
    if isinstance(exc, NotFittedError):
        return 409, "not_ready"
    if isinstance(exc, StoreError):
        return 503, "store_unavailable"
    if isinstance(exc, LMUnavailableError):
        return 503, "lm_unavailable"
    if isinstance(exc, LMError):
        return 502, "lm_bad_gateway"
    if isinstance(exc, DataValidationError):
        return 422, "data_validation_error"
    if isinstance(exc, ConfigError):
        return 400, "bad_request"
    return 400, "bad_request"


DEFAULT_RETRY_AFTER_S = 10
"""``Retry-After`` of a 503 when the language model's server did not say how long to wait."""

STORE_RETRY_AFTER_S = 1
"""``Retry-After`` of a 503 from the store (a busy SQLite file, a PostgreSQL restart)."""


def error_of(exc: LlmrecError) -> tuple[int, ErrorDetail]:
    """The status and error-model body of a library error (also sent as a stream's ``error`` event)."""
    status, kind = _status_of(exc)
    text = str(exc)
    field, fix = getattr(exc, "field", None), getattr(exc, "fix", None)
    if fix is None:  # an error that says its fix only in words ("... Fix: do this")
        _, sep, tail = text.partition(". Fix: ")
        fix = (tail.strip() or None) if sep else None
    if isinstance(exc, DataValidationError):
        fields = data_problem_fields(exc)
    elif field is not None:
        fields = [FieldError(loc=[field], msg=exc.reason)]
    else:
        fields = _config_fields(exc)
        field = str(fields[0].loc[0]) if fields else None
    return status, ErrorDetail(type=kind, message=text, field=field, fix=fix, fields=fields)


def retry_after_of(exc: LlmrecError) -> dict[str, str] | None:
    """The ``Retry-After`` header of a 503 for an unavailable language model (``None`` for other errors)."""
    if not isinstance(exc, LMUnavailableError):
        return None
    wait = exc.retry_after
    seconds = DEFAULT_RETRY_AFTER_S if wait is None else max(0, math.ceil(wait))
    return {"Retry-After": str(seconds)}


def _config_fields(exc: LlmrecError) -> list[FieldError]:
    """Fallback for errors that set no ``field``: a ``ConfigError`` whose message starts with ``name:``."""
    head, sep, rest = str(exc).partition(":")
    if isinstance(exc, ConfigError) and sep and head.replace("_", "").replace("/", "").isalnum() and " " not in head:
        return [FieldError(loc=[head], msg=rest.strip())]
    return []


_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


_UNION_TAG = re.compile(r"[\[(<]|^(constrained|function|lax|strict|json)-|^(int|str|float|bool|datetime|none)$")


def _readable_loc(error: Any) -> list[str | int]:
    """A validation error's location without pydantic's union-branch tags (``function-after[...]``, ``int``).

    A discriminated union's unknown tag (feedback ``kind``) is located at the tag's field, not at the whole body.
    """
    loc = error.get("loc", ())
    out = [p if isinstance(p, int) else str(p) for p in loc if isinstance(p, int) or not _UNION_TAG.search(str(p))]
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        out.append(str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` follow the error model (see the module docstring)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.type, exc.message, exc.fields, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [FieldError(loc=_readable_loc(err), msg=str(err.get("msg"))) for err in exc.errors()]
        where = ", ".join(".".join(str(p) for p in f.loc) for f in fields[:5])
        return error_response(422, "validation_error", f"the request is invalid at: {where}", fields)

    async def on_llmrec(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LlmrecError)
        status, body = error_of(exc)
        headers = retry_after_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, StoreError):  # the details (driver message, URL) are for the log only
            body = ErrorDetail(
                type=body.type,
                message="the database is unavailable or busy; nothing was changed. Fix: retry in a moment",
                fix="retry in a moment",
            )
            headers = {"Retry-After": str(STORE_RETRY_AFTER_S)}
        return error_response(status, body.type, body.message, headers=headers, detail=body)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not JSON at all (bad bytes): a validation error like the others.
            fields = [FieldError(loc=["body"], msg="not a JSON document in UTF-8")]
            return error_response(422, "validation_error", "the request body is not valid JSON", fields)
        kind = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.status_code != 404 else f"no such resource: {request.url.path}"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; use {' or '.join(allowed) or 'another path'}"
        return error_response(exc.status_code, kind, message, headers=headers or None)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "the server failed to answer this request; the error is logged")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(LlmrecError, on_llmrec)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (a path has one route per method)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:  # PARTIAL: the path, not the method
            methods |= set(route_methods)
    return sorted(methods)


def error_responses(*statuses: int, streamed: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error model for these statuses.

    ``streamed``: for a route whose success is a stream (server-sent events); its errors are still JSON.
    """
    descriptions = {
        400: "A choice is not allowed (the message says which and why)",
        401: "No API key, or an unknown or revoked one",
        403: "The key may not access this user's data, or is not an admin key",
        404: "Unknown id",
        409: "The id is already stored",
        413: "Request body over the size limit",
        422: "Invalid request (fields name each problem)",
        429: "Too many requests with this key (see Retry-After)",
        502: "The language model's server answered with an error or unreadable text",
        503: "The store or the language model's server is unreachable or overloaded (see Retry-After)",
    }
    if streamed:
        schema = {"$ref": "#/components/schemas/ErrorBody"}
        return {
            s: {"description": descriptions.get(s, "Error"), "content": {"application/json": {"schema": schema}}}
            for s in statuses
        }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, "Error")} for s in statuses}
