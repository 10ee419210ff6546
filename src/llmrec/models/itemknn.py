"""Item-based k-nearest-neighbours collaborative filtering (cosine similarity on the binary matrix).

The item-item similarity is computed a block of items at a time and pruned to each item's ``k_neighbors`` most
similar items before the next block, so memory stays at one dense ``block x n_items`` slab plus the pruned
sparse result (``n_items * k_neighbors`` entries), never the full ``n_items x n_items`` matrix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from llmrec.data.dataset import Dataset
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions

__all__ = ["ItemKNN", "ItemKNNConfig"]

log = logging.getLogger(__name__)

#: Cells in one dense similarity block (4M: 16 MB of float32 plus 32 MB of int64 argpartition output); bounds
#: peak memory for any catalogue size.
_BLOCK_CELLS = 1 << 22


class ItemKNNConfig(ScorerConfig):
    """Configuration of :class:`ItemKNN`.

    Attributes:
        k_neighbors: Neighbours kept per item (the most similar ones); fewer when fewer items co-occur.
        shrinkage: Added to the cosine denominator, ``sim = dot / (|i| |j| + shrinkage)``; damps similarities
            that rest on few co-occurrences (0 = plain cosine).

    """

    k_neighbors: int = Field(default=50, ge=1)
    shrinkage: float = Field(default=0.0, ge=0.0)


class ItemKNN(Scorer):
    """Item-kNN: ``score(u, j) = sum of sim(i, j) over the user's items i among j's k nearest neighbours``.

    Similarity is cosine on the binary user x item matrix; an item is never its own neighbour. Items without
    training interactions have no neighbours and score 0.

    Attributes:
        similarity: Pruned similarity, CSR ``(n_items, n_items)`` float32; row ``j`` holds item ``j``'s at most
            ``k_neighbors`` neighbours (set by ``fit``). Scores are ``X_u @ similarity.T``.

    """

    name: ClassVar[str] = "itemknn"
    memory_bound: ClassVar[str] = (
        "fit: one dense block of at most 4M similarity cells (~48 MB) plus the pruned similarity, I x "
        "k_neighbors (float32 + int32 index: 8 bytes each); state: that pruned matrix. Linear in I: fits "
        "catalogues of millions."
    )
    config_class: ClassVar[type[ScorerConfig]] = ItemKNNConfig
    tuning_grid: ClassVar[dict[str, list]] = {"k_neighbors": [20, 50, 200]}

    config: ItemKNNConfig
    similarity: sp.csr_matrix

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        start = time.perf_counter()
        x = data.matrix("binary")
        with threadpool_limits(options.threads, "blas"):
            self.similarity = self._pruned_similarity(x)
        log.info(
            "itemknn: %d items, %d neighbour pairs kept, %.2f s",
            x.shape[1],
            self.similarity.nnz,
            time.perf_counter() - start,
        )

    def _pruned_similarity(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """Top-``k_neighbors`` cosine neighbours of every item, computed in row blocks."""
        n_items = x.shape[1]
        k = min(self.config.k_neighbors, max(n_items - 1, 1))
        shrink = np.float32(self.config.shrinkage)
        xt = x.T.tocsr()  # items x users
        norms = np.sqrt(np.asarray(x.sum(axis=0), dtype=np.float32).ravel())
        block = max(1, min(n_items, _BLOCK_CELLS // max(n_items, 1)))
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for lo in range(0, n_items, block):
            hi = min(lo + block, n_items)
            sim = (xt[lo:hi] @ x).toarray()  # co-occurrence counts, (b, n_items) float32
            denom = np.outer(norms[lo:hi], norms)
            denom += shrink
            np.divide(sim, denom, out=sim, where=denom > 0)  # where denom == 0 the count is 0 too
            del denom
            sim[np.arange(hi - lo), np.arange(lo, hi)] = 0.0  # never one's own neighbour
            if k < n_items:
                np.negative(sim, out=sim)
                top = np.argpartition(sim, k - 1, axis=1)[:, :k]
                np.negative(sim, out=sim)
            else:
                top = np.broadcast_to(np.arange(n_items), (hi - lo, n_items))
            top_vals = np.take_along_axis(sim, top, axis=1)
            keep = top_vals > 0
            rows.append(np.nonzero(keep)[0] + lo)
            cols.append(top[keep])
            vals.append(top_vals[keep])
        sim_matrix = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items),
            dtype=np.float32,
        )
        sim_matrix.sort_indices()
        return sim_matrix

    def _state(self) -> dict[str, np.ndarray]:
        sim = self.similarity
        return {"sim_data": sim.data, "sim_indices": sim.indices, "sim_indptr": sim.indptr}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        n = self.data.n_items
        parts = (self._array(state, "sim_data"), self._array(state, "sim_indices"))
        indptr = self._array(state, "sim_indptr", (n + 1,))
        self.similarity = sp.csr_matrix((*parts, indptr), shape=(n, n))
        self.similarity.check_format(full_check=True)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self._seen[user_idx] @ self.similarity.T).toarray()

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return (self._history_matrix(histories) @ self.similarity.T).toarray()
