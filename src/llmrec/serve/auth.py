"""API keys with two roles: the admin key (from settings) may do everything; a user key only its own user's data.

A request carries its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. User keys are made by the
admin (``POST /v1/keys``), shown once, and stored as their SHA-256 only: the key is 32 random bytes, so a hash
without salt cannot be reversed, and a request costs one indexed lookup. The admin key is compared in constant
time. A user key may expire (``expires_in_s`` when made): past it, it answers 401 like a revoked one.

The dependencies are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop each
(a list request in-process: 4.6 -> 4.4 ms without three of them). Only the key lookup touches the database, so
only it goes to a worker thread.

Routes declare what they need with the dependencies here: :func:`principal` (any valid key),
:func:`require_admin`, and :func:`require_user_access` (the admin, or the key of the ``user_id`` in the path).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from llmrec.serve.errors import ApiError, Forbidden, Unauthorized
from llmrec.serve.schemas import PathId

if TYPE_CHECKING:
    from llmrec.data.store import ApiKeyRecord
    from llmrec.serve.ratelimit import RateLimiter
    from llmrec.serve.service import RecommenderService

__all__ = [
    "Principal",
    "hash_key",
    "issue_user_key",
    "principal",
    "require_admin",
    "require_user_access",
]

_PREFIX = "lrk"
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (the same as the bearer token).")


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        role: ``admin`` or ``user``.
        user_id: The user a user key belongs to (``None`` for the admin).
        key_id: The user key's id (``None`` for the admin).

    """

    role: Literal["admin", "user"]
    user_id: str | None = None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this is the admin key."""
        return self.role == "admin"

    def may_access(self, user_id: str) -> bool:
        """Whether this caller may read and write ``user_id``'s data."""
        return self.is_admin or self.user_id == str(user_id)

    def check_user(self, user_id: str, loc: tuple[str | int, ...] = ("path", "user_id")) -> None:
        """Raise :class:`Forbidden` unless this caller may access ``user_id``'s data."""
        if not self.may_access(user_id):
            from llmrec.serve.errors import FieldError

            raise Forbidden(
                f"this key belongs to user {self.user_id!r} and may not access user {user_id!r}'s data",
                [FieldError(loc=list(loc), msg="not this key's user")],
            )


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def issue_user_key(
    service: RecommenderService, user_id: str, expires_in_s: int | None = None
) -> tuple[str, ApiKeyRecord]:
    """Make a key for ``user_id`` of the served dataset; returns the key (shown once) and its stored record.

    ``expires_in_s``: the key answers 401 that many seconds from now (``None``: it never expires).
    """
    key_id = secrets.token_hex(6)
    key = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    expires = None if expires_in_s is None else datetime.now(UTC) + timedelta(seconds=expires_in_s)
    record = service.store.add_api_key(key_id, hash_key(key), service.dataset, str(user_id), expires_at=expires)
    return key, record


def _service(request: Request) -> RecommenderService:
    return request.app.state.service


async def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """The caller, from its API key.

    Raises:
        Unauthorized: No key, or an unknown or revoked one.

    """
    key = bearer.credentials if bearer is not None else header
    if not key:
        raise Unauthorized("an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    service = _service(request)
    admin = service.config.admin_key
    if admin is not None and hmac.compare_digest(key.encode(), admin.get_secret_value().encode()):
        _limit(request, "admin")
        return Principal("admin")
    record = None
    if key.startswith(f"{_PREFIX}_"):
        record = await run_in_threadpool(service.store.api_key_by_hash, hash_key(key))
    if record is None or record.dataset != service.dataset:
        _limit(request, f"addr:{request.client.host if request.client else '-'}")  # guessing keys costs too
        raise Unauthorized("unknown API key; ask the admin for one (POST /v1/keys)")
    _limit(request, f"key:{record.key_id}")
    if record.revoked_at is not None:
        raise Unauthorized(f"API key {record.key_id} was revoked; ask the admin for a new one")
    if record.expired:
        raise Unauthorized(f"API key {record.key_id} expired; ask the admin for a new one")
    return Principal("user", record.user_id, record.key_id)


def _limit(request: Request, identity: str) -> None:
    """Count a request of ``identity`` against the app's rate limiter (when one is configured).

    Raises:
        ApiError: 429 ``rate_limited`` with ``Retry-After``.

    """
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.acquire(identity)
    if wait > 0:
        retry = limiter.retry_after(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests with this key; retry in {retry} s (limit: {limiter.rate * 60:g} per minute)",
            headers={"Retry-After": retry},
        )


async def require_admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller, who must hold the admin key.

    Raises:
        Forbidden: A user key.

    """
    if not caller.is_admin:
        raise Forbidden("this needs the admin key")
    return caller


async def require_user_access(user_id: PathId, caller: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller, who must be the admin or hold the key of the path's ``user_id``.

    Raises:
        Forbidden: A key of another user.

    """
    caller.check_user(user_id)
    return caller
