"""The OpenAPI spec of one served app: what this server accepts and answers, not only what the models allow.

FastAPI writes the spec from the route signatures; this adds what only the served config knows and what every
route may answer, so a client (or schemathesis) that follows the spec gets no answer it was not told about:

* the retrievers a request may name (an ``enum``; another name answers 400), the longest list (``k`` up to
  ``max_k``), and the rating scale of feedback (``minimum``/``maximum`` of ``value``);
* the answers every authenticated route may give: 400 (a choice not allowed here), 429 (rate limit), 503 (store
  busy or down, with ``Retry-After``), and for routes with a body 413 (too large) and 422 (not JSON);
* the ``X-Request-ID`` header of every response, and ``Retry-After`` on 429 and 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from llmrec.serve.config import ServeConfig

__all__ = ["install_served_openapi"]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_DESCRIPTIONS = {
    "400": "A choice is not allowed here (the message says which and why)",
    "413": "Request body over the size limit",
    "422": "Invalid request (fields name each problem)",
    "429": "Too many requests with this key; retry after Retry-After seconds",
    "503": "The store (or the language model's server) is busy or unreachable, or the server is at capacity; retry "
    "after Retry-After seconds",
    "504": "No answer within the server's request timeout; retry after Retry-After seconds",
}
_REQUEST_ID = {
    "description": "The request's id (the client's own when it sent a valid one); in logs and error bodies.",
    "schema": {"type": "string"},
}
_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}


def install_served_openapi(app: FastAPI, config: ServeConfig, api_prefix: str) -> None:
    """Make ``app.openapi()`` return the spec with the served config's limits and the common answers added."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None and app.openapi_schema.get("x-llmrec-served"):
            return app.openapi_schema
        spec = build()
        _add_served_limits(spec, config)
        _add_common_answers(spec, api_prefix)
        spec["x-llmrec-served"] = True
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``{"type": "string"}`` part of a (possibly nullable) string schema."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "string":
            return branch
    return schema


def _add_served_limits(spec: dict[str, Any], config: ServeConfig) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    retrievers = list(config.retrievers)
    low, high = config.rating_range
    for name in ("RecommendationOptions", "RecommendationBody"):
        options = schemas.get(name, {}).get("properties", {})
        if "retriever" in options:
            _string_branch(options["retriever"])["enum"] = retrievers
        if "k" in options:
            options["k"]["maximum"] = config.max_k
    refit = schemas.get("RefitIn", {}).get("properties", {}).get("retrievers")
    if refit is not None:
        for branch in refit.get("anyOf", [refit]):
            if branch.get("type") == "array":
                branch["items"] = {"type": "string", "enum": retrievers}
    for name in ("FeedbackRatingIn", "ChatRatingIn"):
        value = schemas.get(name, {}).get("properties", {}).get("value")
        if value is not None:
            value["minimum"], value["maximum"] = low, high
    value = schemas.get("InteractionIn", {}).get("properties", {}).get("value")
    if value is not None:  # a value is a rating on the served scale (nullable: left out means 1)
        for branch in value.get("anyOf", [value]):
            if branch.get("type") == "number":
                branch["minimum"], branch["maximum"] = low, high
    for path in spec.get("paths", {}).values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param.get("in") != "query":
                    continue
                if param["name"] == "retriever":
                    _string_branch(param["schema"])["enum"] = retrievers
                elif param["name"] == "k" and op.get("operationId", "").startswith("recommendations"):
                    param["schema"]["maximum"] = config.max_k


def _add_common_answers(spec: dict[str, Any], api_prefix: str) -> None:
    for path, ops in spec.get("paths", {}).items():
        if not path.startswith(api_prefix):
            continue
        for op in ops.values():
            responses = op.setdefault("responses", {})
            public = not op.get("security") and "401" not in responses
            codes = ["503", "504"] if public else ["400", "429", "503", "504"]
            if "requestBody" in op:
                codes += ["413", "422"]
            for code in codes:
                responses.setdefault(
                    code, {"description": _DESCRIPTIONS[code], "content": {"application/json": {"schema": _ERROR_REF}}}
                )
            for code, response in responses.items():
                headers = response.setdefault("headers", {})
                headers.setdefault("X-Request-ID", _REQUEST_ID)
                if code in ("429", "503", "504"):
                    headers.setdefault("Retry-After", _RETRY_AFTER)
