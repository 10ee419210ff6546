"""Data subject rights: delete a user's data, export it, and read the audit log of both.

``DELETE /v1/users/{user_id}`` and ``GET /v1/users/{user_id}/export`` take the admin key or the user's own key:
erasure and access are the user's rights, so a user needs no admin to use them (a deletion with the user's own key
deletes that key too, so it answers 401 afterwards). ``GET /v1/audit`` is the admin's only: who (``admin`` or
``key:<key id>``) deleted or exported whose data and when, with users named by salted digest.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from llmrec.serve.auth import Principal
from llmrec.serve.deps import Admin, ServiceDep, UserAccess
from llmrec.serve.errors import error_responses
from llmrec.serve.privacy_schemas import AuditEntryOut, AuditPage, UserDeletedOut, UserExportOut
from llmrec.serve.schemas import MAX_OFFSET

__all__ = ["router"]

router = APIRouter(tags=["privacy"], responses=error_responses(401, 403, 422))


def _actor(caller: Principal) -> str:
    return "admin" if caller.is_admin else f"key:{caller.key_id}"


@router.delete("/users/{user_id}", response_model=UserDeletedOut, responses=error_responses(404))
def delete_user(user_id: str, service: ServiceDep, caller: UserAccess) -> UserDeletedOut:
    """Delete everything stored about a user.

    Profile, interactions and feedback, chat sessions, API keys, cached embeddings of their texts. Lists stop using
    their history at once (a deleted id is unknown: 404; created again, it starts cold); the next refit has no trace.
    """
    return UserDeletedOut.of(service.forget_user(user_id, _actor(caller)))


@router.get("/users/{user_id}/export", response_model=UserExportOut, responses=error_responses(404))
def export_user(user_id: str, service: ServiceDep, caller: UserAccess) -> UserExportOut:
    """Everything stored about a user, as JSON (the export is recorded in the audit log)."""
    return UserExportOut.model_validate(service.export_user(user_id, _actor(caller)))


@router.get("/audit", response_model=AuditPage)
def audit_log(
    service: ServiceDep,
    _admin: Admin,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=256, description="Only entries about this user.")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> AuditPage:
    """Who deleted or exported whose data, and when, newest first."""
    page = service.audit_log(user_id, offset, limit)
    return AuditPage(
        entries=[AuditEntryOut.of(r) for r in page.records],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        next_offset=page.next_offset,
    )
