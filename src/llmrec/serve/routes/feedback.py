"""Feedback: thumbs up/down, seen, rating; stored as interactions and reflected by the very next list."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.serve.deps import Caller, ServiceDep
from llmrec.serve.errors import FieldError, Forbidden, error_responses
from llmrec.serve.schemas import FeedbackIn, FeedbackOut

__all__ = ["router"]

router = APIRouter(prefix="/feedback", tags=["feedback"], responses=error_responses(400, 401, 403, 404, 422))


@router.post("", response_model=FeedbackOut, status_code=201)
def give_feedback(body: FeedbackIn, service: ServiceDep, caller: Caller) -> FeedbackOut:
    """Record feedback of a user on an item (a user key gives its own user's; ``user_id`` may be left out)."""
    user_id = body.user_id or caller.user_id
    if user_id is None:  # only a user key has a user of its own
        raise Forbidden(
            "the admin key has no user of its own: name the user in user_id",
            [FieldError(loc=["body", "user_id"], msg="required with the admin key")],
        )
    caller.check_user(user_id, ("body", "user_id"))
    result = service.record_feedback(user_id, body.item_id, body.kind, body.value)
    return FeedbackOut(
        user_id=result.user_id,
        item_id=result.item_id,
        kind=result.kind,
        value=result.value,
        timestamp=result.timestamp,
        stored=result.stored,
    )
