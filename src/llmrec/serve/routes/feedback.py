"""Feedback: thumbs up/down, seen, rating; stored as interactions and reflected by the very next list."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.serve.deps import Caller, ServiceDep
from llmrec.serve.errors import ApiError, FieldError, error_responses
from llmrec.serve.schemas import FeedbackIn, FeedbackOut

__all__ = ["router"]

router = APIRouter(prefix="/feedback", tags=["feedback"], responses=error_responses(400, 401, 403, 404, 422))


@router.post("", response_model=FeedbackOut, status_code=201)
def give_feedback(body: FeedbackIn, service: ServiceDep, caller: Caller) -> FeedbackOut:
    """Record feedback of a user on an item (a user key gives its own user's; ``user_id`` may be left out)."""
    user_id = body.user_id or caller.user_id
    if user_id is None:
        raise ApiError(
            422,
            "validation_error",
            "user_id is required with the admin key",
            [FieldError(loc=["body", "user_id"], msg="required")],
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
