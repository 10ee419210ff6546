"""Most-popular baseline: every user gets the items most training users interacted with.

It is the floor every personalised model must beat, and the ranking the other scorers fall back on for users
they have never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions

__all__ = ["Popular", "PopularConfig"]

log = logging.getLogger(__name__)


class PopularConfig(ScorerConfig):
    """Configuration of :class:`Popular` (it has no parameters)."""


class Popular(Scorer):
    """Score of an item = number of distinct training users who interacted with it.

    Every user gets the same scores, so the ranking is deterministic; ties keep catalogue order (the lower
    dense item index first, as :func:`~llmrec.models.base.top_k` breaks ties).

    Attributes:
        popularity: Distinct training users per item, float64, shape ``(n_items,)`` (set by ``fit``).

    """

    name: ClassVar[str] = "popular"
    memory_bound: ClassVar[str] = "O(I): one count per item."
    config_class: ClassVar[type[ScorerConfig]] = PopularConfig
    tuning_grid: ClassVar[dict[str, list]] = {}

    popularity: np.ndarray

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        self.popularity = data.item_popularity.astype(np.float64)
        log.debug("popular: %d items with at least one user", int((self.popularity > 0).sum()))

    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.popularity = self._array(state, "popularity", (self.data.n_items,))

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity, (len(user_idx), 1))

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.tile(self.popularity, (len(histories), 1))
