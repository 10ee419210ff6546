"""Batch interaction ingest: validated whole, stored in one transaction; a bad batch stores nothing."""

from __future__ import annotations

import pandas as pd
from fastapi import APIRouter

from llmrec.errors import DataValidationError
from llmrec.serve.deps import Caller, ServiceDep
from llmrec.serve.errors import ApiError, FieldError, Forbidden, data_problem_fields, error_responses
from llmrec.serve.schemas import IngestOut, InteractionsIn

__all__ = ["router"]

router = APIRouter(prefix="/interactions", tags=["interactions"], responses=error_responses(401, 403, 413, 422))


@router.post("", response_model=IngestOut)
def ingest_interactions(body: InteractionsIn, service: ServiceDep, caller: Caller) -> IngestOut:
    """Store a batch of interactions; rows already stored are skipped. A user key may send only its own rows."""
    if not caller.is_admin:
        others = [i for i, row in enumerate(body.interactions) if row.user_id != caller.user_id]
        if others:
            raise Forbidden(
                f"this key may only send user {caller.user_id!r}'s interactions; {len(others)} row(s) are another's",
                [
                    FieldError(loc=["body", "interactions", i, "user_id"], msg="not this key's user")
                    for i in others[:50]
                ],
            )
    rows = [row.model_dump() | {"timestamp": row.seconds()} for row in body.interactions]
    frame = pd.DataFrame(rows, dtype=object)  # a missing value stays None: the service applies the feedback rules
    # A row repeated within the batch is skipped like one already stored (one event per user, item, time, event).
    repeated = frame.duplicated(subset=["user_id", "item_id", "timestamp", "event"])
    frame = frame[~repeated].reset_index(drop=True)
    try:
        report = service.ingest_interactions(frame)
    except DataValidationError as exc:
        fields = data_problem_fields(exc, ("body", "interactions"))
        raise ApiError(422, "data_validation_error", f"the batch was not stored: {exc.first}", fields) from exc
    return IngestOut(inserted=report.inserted, skipped=report.skipped + int(repeated.sum()))
