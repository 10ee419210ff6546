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
body over the limit        413     ``payload_too_large``
other llmrec errors        400     ``bad_request`` (a config choice, a model that cannot do what was asked)
language model failed      502     ``lm_bad_gateway`` (its server answered an error, 5xx, or unreadable text)
store unreachable          503     ``store_unavailable``
language model unavailable 503     ``lm_unavailable`` (down, timed out, 429/503 upstream; ``Retry-After`` set)
anything else              500     ``internal_error`` (logged with its traceback; the response never has one)
=========================  ======  ==========================================================================
"""

from __future__ import annotations

import logging
import math
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
    "data_problem_fields",
    "error_of",
    "error_response",
    "error_responses",
    "install_error_handlers",
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
    """A JSON response in the error model (``detail``, when given, is the body as is)."""
    from fastapi.responses import JSONResponse

    body = ErrorBody(error=detail or ErrorDetail(type=type, message=message, fields=list(fields)))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` follow the error model (see the module docstring)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.type, exc.message, exc.fields, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [
            FieldError(loc=[p if isinstance(p, int) else str(p) for p in err.get("loc", ())], msg=str(err.get("msg")))
            for err in exc.errors()
        ]
        where = ", ".join(".".join(str(p) for p in f.loc) for f in fields[:5])
        return error_response(422, "validation_error", f"the request is invalid at: {where}", fields)

    async def on_llmrec(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LlmrecError)
        status, body = error_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, body.type, body.message, headers=retry_after_of(exc), detail=body)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.status_code != 404 else f"no such resource: {request.url.path}"
        return error_response(exc.status_code, kind, message, headers=getattr(exc, "headers", None))

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "the server failed to answer this request; the error is logged")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(LlmrecError, on_llmrec)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


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
