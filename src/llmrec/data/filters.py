"""Hard item constraints (genres, release years) as boolean masks over a dataset's item indices.

One implementation behind the API's list filters (``?genres=Comedy&year_min=1990``) and a conversation's
constraints ("something funny from the 90s, no horror"), so both read a catalogue the same way. Both build it from
the catalogue's key facts (:meth:`llmrec.catalogue.Catalogue.filters`: the ``genres`` field or genre words in
the text; the ``year`` column or a bracketed year in the title), matched in any case; an item of unknown year
meets no year bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmrec.errors import ConfigError

__all__ = ["ItemFilters"]


@dataclass(frozen=True)
class ItemFilters:
    """Genre and year masks of one dataset's items (build with :meth:`build`; cheap to query).

    Attributes:
        n_items: Number of items (the masks' length).
        genres: Lower-cased genre -> mask of the items that have it (empty when items have no genres).
        years: Each item's year as float, NaN when unknown; ``None`` when items have no ``year`` at all.
        dataset: The dataset's name, for error messages.

    """

    n_items: int
    genres: dict[str, np.ndarray]
    years: np.ndarray | None
    dataset: str = ""

    @classmethod
    def build(cls, genres: Sequence[Sequence[str]], years: Sequence[int | None], dataset: str = "") -> ItemFilters:
        """The filters of items with these genres and years (one entry per item index)."""
        n = len(genres)
        if len(years) != n:
            raise ValueError(f"one year per item: {len(years)} years for {n} items")
        masks: dict[str, np.ndarray] = {}
        for idx, names in enumerate(genres):
            for genre in names:
                masks.setdefault(genre.lower(), np.zeros(n, dtype=bool))[idx] = True
        known = np.array([np.nan if y is None else float(y) for y in years], dtype=float)
        return cls(n, masks, known if np.isfinite(known).any() else None, dataset)

    def mask(
        self,
        *,
        genres: Sequence[str] = (),
        exclude_genres: Sequence[str] = (),
        year_min: int | None = None,
        year_max: int | None = None,
        strict: bool = True,
        all_genres: Sequence[str] = (),
    ) -> np.ndarray | None:
        """Items with at least one of ``genres``, every one of ``all_genres``, none of ``exclude_genres``, in years.

        Args:
            genres: Keep items with at least one of these (any case).
            exclude_genres: Drop items with any of these.
            year_min: Keep items from this year on.
            year_max: Keep items up to this year.
            strict: Raise for a genre or year the catalogue lacks (an API request: the caller mistyped it);
                ``False`` lets an unknown genre or a year-less catalogue match no item (a conversation).
            all_genres: Keep only items with every one of these ("a sci-fi thriller": both).

        Returns:
            A boolean mask over item indices, or ``None`` when nothing was asked (every item passes).

        Raises:
            ConfigError: With ``strict``, a genre the catalogue does not have, genres or years asked of a catalogue
                without them; always, ``year_min`` after ``year_max`` (each names its field).

        """
        keep: np.ndarray | None = None
        for field_name, wanted, include in (("genres", genres, True), ("exclude_genres", exclude_genres, False)):
            if not wanted:
                continue
            hit = np.logical_or.reduce([self._genre(field_name, g, strict) for g in wanted])
            keep = _and(keep, hit if include else ~hit)
        for genre in all_genres:
            keep = _and(keep, self._genre("all_genres", genre, strict))
        if year_min is not None or year_max is not None:
            low = -np.inf if year_min is None else year_min
            high = np.inf if year_max is None else year_max
            if low > high:
                raise ConfigError(
                    f"year_min ({year_min}) is after year_max ({year_max})",
                    field="year_min",
                    fix="give a year_min no later than year_max",
                )
            if self.years is None and strict:
                raise ConfigError(
                    f"the items of {self.dataset!r} have no year to filter on",
                    field="year_min/year_max",
                    fix="leave the year bounds out",
                )
            years = self.years if self.years is not None else np.full(self.n_items, np.nan)
            keep = _and(keep, (years >= low) & (years <= high))  # NaN (unknown) meets no bound
        return keep

    def _genre(self, field_name: str, genre: str, strict: bool) -> np.ndarray:
        found = self.genres.get(genre.strip().lower())
        if found is not None:
            return found
        if not strict:
            return np.zeros(self.n_items, dtype=bool)
        if not self.genres:
            raise ConfigError(
                f"the items of {self.dataset!r} have no genres to filter on",
                field=field_name,
                fix="leave the genre filter out",
            )
        raise ConfigError(
            f"unknown genre {genre!r}",
            field=field_name,
            fix=f"use known genres (any case): {', '.join(sorted(self.genres))}",
        )


def _and(mask: np.ndarray | None, other: np.ndarray) -> np.ndarray:
    return other if mask is None else mask & other
