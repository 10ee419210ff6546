"""What goes into :meth:`llmrec.pipeline.Pipeline.recommend` and what comes out for people to see.

Every caller that recommends (the chat, the HTTP API, the CLI, batch jobs and the evaluation runner) describes
each person as one :class:`Query` and calls the same ``Pipeline.recommend(queries, k)``. A query carries
everything that decides a list: who the person is in the fitted data, what they liked or disliked since (a chat
session, feedback after the last fit), what must never be shown, which items are allowed, and what they asked for
in words. The pipeline turns it into one candidate mask and one ranking, so what is measured is what is served.

:class:`RecommendedItem` is the one shape a recommended item takes when it is shown (a web page, an API answer, a
chat reply): id, rank, score, display facts and, on request, a grounded explanation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from llmrec.llm.explain import Explanation

__all__ = ["ANONYMOUS", "Query", "RecommendedItem", "as_queries"]

ANONYMOUS = "anonymous"
"""The row label of a query without a user (see :attr:`Query.label`)."""


def _ids(values: Iterable[object] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in values) if values is not None else ()


@dataclass(frozen=True)
class Query:
    """One person to recommend for.

    Attributes:
        user: External id of a user in the fitted data (``None``: someone known only by ``liked``; a user the
            fitted data does not know starts cold, like ``None``).
        liked: Item ids the person liked since the fit, oldest first (a chat session's, feedback after the last
            fit, or a whole history for someone the model never saw). They are folded into the fitted retriever
            without a refit and shown to the language model.
        disliked: Item ids the person now dislikes: dropped from the history and never recommended.
        exclude: Item ids never to recommend in this list (items already shown, touched since the fit...).
        candidates: Recommend only among these item ids (``None``: the whole catalogue).
        exclude_seen: Leave out what the person interacted with: their fitted items and ``liked``.
        text_scores: Scores of what the person asked for in words, one per catalogue item in index order (e.g. a
            text search's similarities); standardised and mixed with the retriever's standardised scores.
        text_weight: The share of ``text_scores`` in that mix, 0..1 (1 when the person has no history at all).

    Example:
        >>> Query(user="1", exclude=("296",))
        Query(user='1', ...)  # doctest: +SKIP
    """

    user: str | None = None
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    candidates: tuple[str, ...] | None = None
    exclude_seen: bool = True
    text_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    text_weight: float = 0.5

    def __post_init__(self) -> None:
        # Ids of any type are accepted and kept as strings, so numpy arrays and ints do not change the answer.
        if self.user is not None:
            object.__setattr__(self, "user", str(self.user))
        for name in ("liked", "disliked", "exclude"):
            object.__setattr__(self, name, _ids(getattr(self, name)))
        if self.candidates is not None:
            object.__setattr__(self, "candidates", _ids(self.candidates))
        if not 0.0 <= self.text_weight <= 1.0:
            raise ConfigError(
                f"text_weight must be within 0..1, got {self.text_weight}", field="text_weight", fix="use 0..1"
            )
        if self.text_scores is not None and np.ndim(self.text_scores) != 1:
            raise ConfigError(
                f"text_scores must be one score per catalogue item, got shape {np.shape(self.text_scores)}",
                field="text_scores",
                fix="pass a 1-d array in item index order",
            )

    @property
    def folds_in(self) -> bool:
        """Whether the retriever must fold a history in (anything beyond a fitted user as they were fitted)."""
        return self.user is None or bool(self.liked or self.disliked) or self.text_scores is not None

    @property
    def label(self) -> str:
        """The user id the returned row carries (:data:`ANONYMOUS` without one)."""
        return self.user if self.user is not None else ANONYMOUS


def as_queries(
    queries: Query | Sequence[Query | object] | np.ndarray,
) -> list[Query]:
    """Queries from queries or bare user ids (a bare id is ``Query(user=id)``)."""
    if isinstance(queries, Query):
        return [queries]
    if isinstance(queries, str):
        raise ConfigError(
            f"queries must be a list, got the string {queries!r}",
            field="queries",
            fix=f"pass [{queries!r}] or [Query(user={queries!r})]",
        )
    return [q if isinstance(q, Query) else Query(user=str(q)) for q in queries]


@dataclass(frozen=True)
class RecommendedItem:
    """One recommended item as a person sees it (a page, an API answer, a chat reply).

    Attributes:
        item_id: External item id.
        rank: Position in the list, from 1.
        score: The pipeline's final score (``None`` when not finite).
        title: Display title.
        year: Release year, when the catalogue knows it.
        genres: Genres, when the catalogue knows them.
        attributes: The item's stored attributes.
        explanation: A grounded explanation, when one was asked for.
    """

    item_id: str
    rank: int
    score: float | None
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    explanation: Explanation | None = None

    @property
    def reason(self) -> str:
        """The explanation's text ("" without one)."""
        return self.explanation.text if self.explanation is not None else ""

    def with_explanation(self, explanation: Explanation | None) -> RecommendedItem:
        """The same item with ``explanation``."""
        return RecommendedItem(
            self.item_id, self.rank, self.score, self.title, self.year, self.genres, self.attributes, explanation
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields of a chat item: id, title, year, genres (a list), reason and score."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "year": self.year,
            "genres": list(self.genres),
            "reason": self.reason,
            "score": self.score,
        }
