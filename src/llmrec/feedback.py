"""Feedback as interactions: one table for the chat, the HTTP API and the page.

A thumbs-up, a thumbs-down, "seen it" and a rating are stored as ordinary interactions (``event`` = the kind,
``value`` as below), so the next training run learns from them like from any rating. Until then, each one is read
back with :func:`polarity`: liked items join the person's history (the retriever folds them in and the list
re-ranks at once), disliked and seen items are only left out.

The values sit on the 0.5-5 star scale of the bundled MovieLens data: a thumbs-up counts like a 5-star rating, a
thumbs-down like a 1-star one (the person knows the item and did not like it, which ``liked_min_value`` and
value-aware models read as such), "seen" like a neutral 3.

:func:`validate_feedback` is the one check of a piece of feedback: the chat, the HTTP API and the page all call it,
so a value one of them accepts is accepted by all (a rating within the dataset's scale, 0.5-5 by default).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from llmrec.errors import ConfigError

__all__ = [
    "DEFAULT_RATING_RANGE",
    "DISLIKED_AT_MOST",
    "FEEDBACK_KINDS",
    "FEEDBACK_VALUES",
    "LIKED_AT_LEAST",
    "FeedbackKind",
    "Polarity",
    "Taste",
    "polarity",
    "taste_of",
    "validate_feedback",
]

FeedbackKind = Literal["thumbs_up", "thumbs_down", "seen", "rating"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("thumbs_up", "thumbs_down", "seen", "rating")

FEEDBACK_VALUES: dict[str, float] = {"thumbs_up": 5.0, "thumbs_down": 1.0, "seen": 3.0}
"""The interaction ``value`` stored for each kind (a ``rating`` stores the rating itself)."""

LIKED_AT_LEAST = 4.0
"""A rating (or any valued interaction) at least this high means liked."""
DISLIKED_AT_MOST = 2.0
"""A rating at most this high means disliked."""

DEFAULT_RATING_RANGE: tuple[float, float] = (0.5, 5.0)
"""Inclusive range of a ``rating`` when the dataset declares none (the MovieLens star scale)."""

Polarity = Literal["liked", "disliked", "neutral"]


def validate_feedback(
    kind: object, value: object = None, rating_range: tuple[float, float] = DEFAULT_RATING_RANGE
) -> float:
    """The interaction value to store for a piece of feedback; raises when the feedback is invalid.

    Args:
        kind: One of :data:`FEEDBACK_KINDS`.
        value: The rating, for ``kind="rating"`` (a finite number within ``rating_range``); ``None`` otherwise.
        rating_range: Inclusive ``(low, high)`` of a rating: the dataset's scale.

    Raises:
        ConfigError: An unknown kind (``field="kind"``); a rating without a value, with one that is not a finite
            number, or outside ``rating_range``; a value for a kind that takes none (``field="value"``).

    """
    if kind not in FEEDBACK_KINDS:
        raise ConfigError(
            f"{kind!r} is not a kind of feedback", field="kind", fix=f"use one of {', '.join(FEEDBACK_KINDS)}"
        )
    if kind != "rating":
        if value is not None:
            raise ConfigError(f"only a rating takes a value, not {kind}", field="value", fix="leave the value out")
        return FEEDBACK_VALUES[str(kind)]
    low, high = rating_range
    example = f"{min(max(4.0, low), high):g}"
    if value is None:
        raise ConfigError("a rating needs a value", field="value", fix=f"send a value from {low:g} to {high:g}")
    number = _number(value)
    if number is None or not low <= number <= high:
        raise ConfigError(
            f"a rating must be a number from {low:g} to {high:g}, got {value!r}",
            field="value",
            fix=f"send a value from {low:g} to {high:g} (e.g. {example})",
        )
    return number


def _number(value: object) -> float | None:
    """``value`` as a finite float; ``None`` for anything else (text, booleans, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def polarity(event: str | None, value: float | None) -> Polarity:
    """What a stored interaction says about the person's taste.

    Thumbs are read by their kind and "seen" is neutral whatever its value. Anything else (a rating, an ingested
    interaction) is read by its value; an interaction without a value (implicit data: a click, a play) is liked.
    """
    if event == "thumbs_up":
        return "liked"
    if event == "thumbs_down":
        return "disliked"
    if event == "seen":
        return "neutral"
    if value is None or math.isnan(value):
        return "liked"
    if value >= LIKED_AT_LEAST:
        return "liked"
    if value <= DISLIKED_AT_MOST:
        return "disliked"
    return "neutral"


@dataclass(frozen=True)
class Taste:
    """What a person's interactions since the last fit say: every item touched, and which were liked or disliked.

    Attributes:
        touched: Every item, first touch first (never recommend these again).
        liked: Items read as liked (fold them into the person's history).
        disliked: Items read as disliked (drop them from the history).

    """

    touched: list[str] = field(default_factory=list)
    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.touched)


def taste_of(rows: Iterable[tuple[object, str | None, float | None]]) -> Taste:
    """The :class:`Taste` of ``(item_id, event, value)`` rows, oldest first (a later reading of an item wins)."""
    last: dict[str, Polarity] = {}
    for item, event, value in rows:
        last[str(item)] = polarity(event, None if value is None else float(value))  # first touch keeps its place
    return Taste(
        touched=list(last),
        liked=[i for i, p in last.items() if p == "liked"],
        disliked=[i for i, p in last.items() if p == "disliked"],
    )
