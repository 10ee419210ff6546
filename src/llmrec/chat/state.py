"""What a conversation has established so far: liked and disliked items, constraints, rejections.

The state is plain data (a pydantic model, stored as JSON with the session), so it can be shown to the person,
edited through the API, and replayed. Each user turn produces a :class:`StateUpdate` (see
:mod:`llmrec.chat.parse`); feedback from buttons produces one too, so both paths change the state the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["DialogueState", "StateUpdate"]


def _merge(first: Sequence[str], more: Sequence[str], without: Sequence[str] = ()) -> list[str]:
    """``first`` then the new entries of ``more``, order kept, minus ``without``."""
    gone = set(without)
    out = [x for x in first if x not in gone]
    out += [x for x in dict.fromkeys(more) if x not in gone and x not in out]
    return out


def _whole(value: object) -> object:
    """A JSON integer (``5`` or ``5.0``) as an int; ``true``, ``"5"`` and ``5.5`` are refused, not read as numbers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a whole number is expected")
    return value


_Whole = Annotated[int, BeforeValidator(_whole)]
_Year = Annotated[int, Field(ge=0, le=9999), BeforeValidator(_whole)]


class _Preferences(BaseModel):
    """The fields a turn can state and the dialogue state keeps (see the two subclasses)."""

    model_config = ConfigDict(extra="forbid")

    liked: list[str] = Field(default_factory=list)
    disliked: list[str] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    genres_include: list[str] = Field(default_factory=list)
    genres_all: list[str] = Field(default_factory=list)
    genres_exclude: list[str] = Field(default_factory=list)
    year_min: _Year | None = None
    year_max: _Year | None = None
    query: str | None = None
    avoid: list[str] = Field(default_factory=list)


class StateUpdate(_Preferences):
    """What one turn (or one feedback click) adds to the state. Empty fields change nothing.

    Attributes:
        liked: Item ids the person likes (they also steer retrieval as a history).
        disliked: Item ids the person dislikes (never recommended again in this session).
        seen: Item ids already seen (not recommended, not taken as liked).
        rejected: Recommended item ids the person turned down ("not that one").
        genres_include: Genres asked for as alternatives (an item must have at least one).
        genres_all: Genres asked for together ("a sci-fi thriller": an item must have every one).
        genres_exclude: Genres ruled out (an item must have none).
        year_min: Earliest release year wanted.
        year_max: Latest release year wanted.
        query: Words describing what is wanted ("a heist set in Europe"), for text search.
        avoid: Words describing what is not wanted ("less violent", "not too long"): they steer text search
            away and are never searched for.
        reset: Forget everything first ("start over").

    """

    reset: bool = False

    @property
    def empty(self) -> bool:
        """Whether the update changes nothing."""
        return self == StateUpdate()


class DialogueState(_Preferences):
    """The state of one conversation (see the module docstring); :meth:`apply` returns the next state.

    Attributes:
        liked, disliked, seen, rejected: Item ids, oldest first.
        genres_include, genres_all, genres_exclude: Genre constraints (canonical names, e.g. ``"Comedy"``).
        year_min, year_max: Release-year constraints.
        query: The latest descriptive request, used for text search.
        avoid: Every word describing what is not wanted so far ("violent"), steering text search away.
        recommended: Item ids already shown in this session (not shown again).
        turns: Number of user turns so far.

    """

    recommended: list[str] = Field(default_factory=list)
    turns: _Whole = Field(default=0, ge=0)

    def apply(self, update: StateUpdate) -> DialogueState:
        """The state after ``update``: later statements win (liking a disliked item moves it to liked)."""
        base = DialogueState(turns=self.turns) if update.reset else self
        liked = _merge(base.liked, update.liked, update.disliked + update.seen)
        disliked = _merge(base.disliked, update.disliked + update.rejected, update.liked)
        include = _merge(base.genres_include, update.genres_include, update.genres_exclude)
        together = _merge(base.genres_all, update.genres_all, update.genres_exclude)
        exclude = _merge(base.genres_exclude, update.genres_exclude, update.genres_include + update.genres_all)
        year_min = update.year_min if update.year_min is not None else base.year_min
        year_max = update.year_max if update.year_max is not None else base.year_max
        if year_min is not None and year_max is not None and year_min > year_max:
            # A new bound that contradicts the old one replaces it rather than leaving nothing to recommend.
            year_min, year_max = (year_min, None) if update.year_min is not None else (None, year_max)
        return DialogueState(
            liked=liked,
            disliked=disliked,
            seen=_merge(base.seen, update.seen, update.liked),
            rejected=_merge(base.rejected, update.rejected, update.liked),
            recommended=list(base.recommended),
            genres_include=include,
            genres_all=together,
            genres_exclude=exclude,
            year_min=year_min,
            year_max=year_max,
            query=update.query if update.query is not None else base.query,
            avoid=_merge(base.avoid, update.avoid),
            turns=base.turns,
        )

    def excluded(self) -> list[str]:
        """Item ids never to recommend now: disliked, seen, rejected, already liked or already shown."""
        return list(dict.fromkeys(self.disliked + self.seen + self.rejected + self.liked + self.recommended))

    def describe(self) -> str:
        """A short plain-English summary of the constraints (for the answer's first sentence)."""
        parts = []
        if self.genres_all:
            parts.append(" and ".join(g.lower() for g in self.genres_all))
        if self.genres_include:
            parts.append(" or ".join(g.lower() for g in self.genres_include))
        if self.genres_exclude:
            parts.append("no " + " or ".join(g.lower() for g in self.genres_exclude))
        if self.year_min is not None and self.year_max is not None:
            parts.append(f"from {self.year_min} to {self.year_max}")
        elif self.year_min is not None:
            parts.append(f"from {self.year_min} on")
        elif self.year_max is not None:
            parts.append(f"up to {self.year_max}")
        return ", ".join(parts)
