"""A user's recommendations through the pipeline: choose the retriever and rerank, filter, explain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import ConfigDict

from llmrec.serve.deps import ServiceDep, UserAccess
from llmrec.serve.errors import error_responses
from llmrec.serve.results import RecommendationOptions
from llmrec.serve.schemas import PathId, RecommendationsOut

__all__ = ["RecommendationBody", "router"]


class RecommendationBody(RecommendationOptions):
    """The options as a JSON body, typed strictly (``0`` is not ``false``, ``"5"`` is not ``5``).

    Unlike the query string, where every value arrives as text and is parsed.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


router = APIRouter(
    prefix="/users/{user_id}/recommendations",
    tags=["recommendations"],
    responses=error_responses(400, 401, 403, 404, 422, 502, 503),
)


@router.get("", response_model=RecommendationsOut)
def recommendations(
    user_id: PathId, options: Annotated[RecommendationOptions, Query()], service: ServiceDep, _caller: UserAccess
) -> RecommendationsOut:
    """Top-k for a user; list parameters repeat (``?genres=Comedy&genres=Drama``).

    Items the user gave feedback on or interacted with since the last fit are left out at once.
    """
    return RecommendationsOut.of(service.recommend(user_id, options))


@router.post("", response_model=RecommendationsOut)
def recommendations_post(
    user_id: PathId, options: RecommendationBody, service: ServiceDep, _caller: UserAccess
) -> RecommendationsOut:
    """Top-k for a user, with the options as a JSON body (for long exclude lists)."""
    return RecommendationsOut.of(service.recommend(user_id, options))
