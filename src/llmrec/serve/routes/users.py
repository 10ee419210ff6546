"""Users: create and list (admin); read a user and their interactions (the admin or the user's own key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from llmrec.serve.deps import Admin, ServiceDep, UserAccess
from llmrec.serve.errors import error_responses
from llmrec.serve.schemas import (
    MAX_OFFSET,
    MAX_TIMESTAMP,
    InteractionOut,
    InteractionsOut,
    PathId,
    UserIn,
    UserOut,
    UserPage,
)

__all__ = ["router"]

router = APIRouter(prefix="/users", tags=["users"], responses=error_responses(401, 403, 422))


@router.get("", response_model=UserPage)
def list_users(
    service: ServiceDep,
    _admin: Admin,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> UserPage:
    """List users in the order they were stored."""
    page = service.list_users(offset, limit)
    return UserPage(
        users=[UserOut.of(r) for r in page.records],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        next_offset=page.next_offset,
    )


@router.post("", response_model=UserOut, status_code=201, responses=error_responses(409))
def create_user(body: UserIn, service: ServiceDep, _admin: Admin) -> UserOut:
    """Add a user (they get the cold-start list until their first interactions)."""
    return UserOut.of(service.create_user(body.user_id, body.profile, body.attributes))


@router.get("/{user_id}", response_model=UserOut, responses=error_responses(404))
def get_user(user_id: PathId, service: ServiceDep, _caller: UserAccess) -> UserOut:
    """One user."""
    return UserOut.of(service.get_user(user_id))


@router.get("/{user_id}/interactions", response_model=InteractionsOut, responses=error_responses(404))
def user_interactions(
    user_id: PathId,
    service: ServiceDep,
    _caller: UserAccess,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_TIMESTAMP, description="Only from this time on (seconds since the epoch).")
    ] = None,
) -> InteractionsOut:
    """A user's interactions (feedback included), oldest first."""
    service.get_user(user_id)  # 404 for an unknown user rather than an empty list
    frame = service.user_interactions(user_id, since)
    rows = [
        InteractionOut(item_id=str(i), timestamp=int(t), value=float(v), event=str(e))
        for i, t, v, e in zip(frame["item_id"], frame["timestamp"], frame["value"], frame["event"], strict=True)
    ]
    return InteractionsOut(user_id=user_id, interactions=rows)
