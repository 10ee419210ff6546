"""What the recommender service is asked and what it answers: request options, lists, feedback, refits, status.

Plain types shared by :class:`~llmrec.serve.service.RecommenderService`, the HTTP schemas and the CLI, kept apart
from the service so reading them does not load the service's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from llmrec.query import RecommendedItem

__all__ = ["FeedbackResult", "RecommendationOptions", "RecommendationResult", "RefitReport", "ServiceStatus"]


def _not_bool(value: object) -> object:
    """Refuse ``true``/``false`` as numbers (pydantic would read them as 1/0); read ``5.0`` as 5.

    Query-string digits are parsed as usual.
    """
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Int = Annotated[int, BeforeValidator(_not_bool)]
_Year = Annotated[int, Field(ge=0, le=9999), BeforeValidator(_not_bool)]


class RecommendationOptions(BaseModel):
    """What a recommendation request may choose (the same fields as the API's query string and JSON body).

    Attributes:
        k: List length.
        retriever: A retriever of ``ServeConfig.retrievers``; the default pipeline's when ``None``.
        rerank: Rerank the retriever's candidates with the language model.
        explain: Add a grounded explanation to each item.
        exclude_seen: Leave out items the user already interacted with.
        exclude_items: Item ids never to recommend in this list.
        genres: Only items with at least one of these genres (case-insensitive).
        exclude_genres: No items with any of these genres.
        year_min: Only items from this year on.
        year_max: Only items up to this year.

    """

    model_config = ConfigDict(extra="forbid")

    k: _Int = Field(default=10, ge=1, le=1000)
    retriever: str | None = None
    rerank: bool = False
    explain: bool = False
    exclude_seen: bool = True
    exclude_items: list[str] = Field(default_factory=list, max_length=10_000)
    genres: list[str] = Field(default_factory=list, max_length=100)
    exclude_genres: list[str] = Field(default_factory=list, max_length=100)
    year_min: _Year | None = None
    year_max: _Year | None = None


@dataclass(frozen=True)
class RecommendationResult:
    """A user's list and how it was made.

    Attributes:
        user_id: The user.
        items: Best first.
        retriever: The retriever used.
        reranked: Whether the language model reranked the candidates.
        known_user: Whether the user was in the fitted data (unknown users get the retriever's cold-start list,
            steered by their stored profile when it names titles, genres or years).
        excluded_recent: Items left out because the user interacted with them after the last fit.
        fitted_at: When the data behind the list was loaded.
        model_version: The published model version the list came from (``None``: fitted in this process only).

    """

    user_id: str
    items: list[RecommendedItem]
    retriever: str
    reranked: bool
    known_user: bool
    excluded_recent: list[str]
    fitted_at: datetime
    model_version: int | None = None


@dataclass(frozen=True)
class FeedbackResult:
    """A stored piece of feedback (``stored`` is false when the identical event was already stored)."""

    user_id: str
    item_id: str
    kind: str
    value: float
    timestamp: int
    stored: bool


@dataclass(frozen=True)
class RefitReport:
    """What a refit loaded and fitted, and the model version it published (``None`` without an artifact folder)."""

    dataset: str
    users: int
    items: int
    interactions: int
    pipelines: list[str]
    seconds: float
    version: int | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """The service's state, for health checks (``model_version``: the published version served, if any)."""

    dataset: str
    loaded: bool
    fitted_at: datetime | None
    pipelines: list[str]
    items: int | None
    users: int | None
    interactions: int | None
    model_version: int | None = None
