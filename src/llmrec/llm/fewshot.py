"""In-context few-shot: demonstrations from the training users most like the one being served.

A demonstration is another user's history and the item that came next for them, shown to the language model as an
earlier question and answer before the real question. Demonstrations come only from the :class:`Dataset` the pool
is built from, which the pipeline makes the fit data of the split (train only, never validation or test targets),
and a user never serves as their own example. Similarity is the cosine between the sets of liked items, so the
chosen examples share taste with the user, which is what makes them informative for a small model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.dataset import Dataset
from llmrec.llm.rerank import Demonstration

__all__ = ["FewShotConfig", "FewShotPool"]


class FewShotConfig(BaseModel):
    """How many demonstrations and how they are drawn.

    Attributes:
        shots: Demonstrations per prompt (0 = zero-shot).
        history: Items shown per demonstration history.
        min_value: Only interactions with ``value >= min_value`` count as liked; ``None`` uses every one.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shots: int = Field(default=2, ge=0, le=10)
    history: int = Field(default=10, ge=1, le=100)
    min_value: float | None = 4.0


class FewShotPool:
    """Candidate demonstrations from every user of ``data`` with at least two liked items.

    Args:
        data: The training data (the pipeline passes the split's fit data only).
        titles: Display title of every item, by item index.
        config: Shots, history length, liked threshold.

    """

    def __init__(self, data: Dataset, titles: Sequence[str], config: FewShotConfig | None = None) -> None:
        self.config = config or FewShotConfig()
        self.titles = titles
        liked = np.ones(len(data), dtype=bool)
        if self.config.min_value is not None and np.isfinite(data.values).all():
            liked = data.values >= self.config.min_value
        users, items = data.user_idx[liked], data.item_idx[liked]  # time order kept (interactions are sorted)
        order = np.argsort(users, kind="stable")
        self._users, self._items = users[order], items[order]
        self._starts = np.searchsorted(self._users, np.arange(data.n_users + 1))
        counts = np.diff(self._starts)
        self._eligible = counts >= 2
        matrix = sp.csr_matrix(
            (np.ones(len(self._items)), (self._users, self._items)), shape=(data.n_users, data.n_items)
        )
        matrix.data[:] = 1.0
        norms = np.sqrt(np.asarray(matrix.sum(axis=1)).ravel())
        self._matrix = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1.0)) @ matrix)

    def liked(self, user_idx: int) -> np.ndarray:
        """Item indices ``user_idx`` liked in the pool's data, oldest first."""
        return self._items[self._starts[user_idx] : self._starts[user_idx + 1]]

    def select(self, history: Sequence[int] | np.ndarray, exclude_user: int | None = None) -> list[Demonstration]:
        """The ``config.shots`` demonstrations from the users most similar to ``history`` (item indices).

        Args:
            history: The served user's item indices.
            exclude_user: The served user's own index (never their own example).

        Returns:
            Most similar first; fewer when the pool is small.
        """
        shots = self.config.shots
        if shots == 0:
            return []
        query = np.zeros(self._matrix.shape[1])
        query[np.asarray(history, dtype=np.int64)] = 1.0
        sims = np.asarray(self._matrix @ query)
        sims[~self._eligible] = -np.inf
        if exclude_user is not None and 0 <= exclude_user < len(sims):
            sims[exclude_user] = -np.inf
        best = np.lexsort((np.arange(len(sims)), -sims))[:shots]  # ties: lower user index first
        demos = []
        for user in best[np.isfinite(sims[best])]:
            items = self.liked(int(user))
            shown = items[:-1][-self.config.history :]
            demos.append(Demonstration(tuple(self.titles[i] for i in shown), self.titles[int(items[-1])]))
        return demos
