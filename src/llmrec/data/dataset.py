"""The in-memory dataset every model trains on: pandas frames at the edges, a scipy CSR matrix inside."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec.data.schema import validate_interactions, validate_items, validate_users
from llmrec.data.vocab import Vocabulary

__all__ = ["Dataset"]

MatrixKind = Literal["binary", "value", "count"]


class Dataset:
    """Interactions plus item and user tables, with dense index vocabularies.

    The item vocabulary covers the whole catalogue (items table and every interacted item), so an item with
    text but no interactions yet (cold start) still has an index. Subsets made by :meth:`subset` share the
    vocabularies and tables, which is what makes train/validation/test matrices line up.

    Args:
        interactions: Frame with the canonical interaction columns (see :mod:`llmrec.data.schema`).
        items: Optional items frame (``item_id``, ``title``, ``text``, attributes...).
        users: Optional users frame (``user_id``, ``profile``, attributes...).
        name: Dataset name used in reports (e.g. ``"movielens-small"``).
        validate: Run schema validation (turn off only for frames that are already canonical).
        user_vocab, item_vocab: Reuse existing vocabularies (used by :meth:`subset`).

    """

    def __init__(
        self,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        name: str = "dataset",
        validate: bool = True,
        user_vocab: Vocabulary | None = None,
        item_vocab: Vocabulary | None = None,
    ) -> None:
        if validate:
            interactions = validate_interactions(interactions)
            items = validate_items(items) if items is not None else None
            users = validate_users(users) if users is not None else None
        self.name = name
        if item_vocab is None:
            known = items["item_id"].tolist() if items is not None else []
            item_vocab = Vocabulary(
                pd.unique(pd.Series(known + interactions["item_id"].tolist(), dtype=object)), kind="item"
            )
        if user_vocab is None:
            known = users["user_id"].tolist() if users is not None else []
            user_vocab = Vocabulary(
                pd.unique(pd.Series(known + interactions["user_id"].tolist(), dtype=object)), kind="user"
            )
        self.item_vocab = item_vocab
        self.user_vocab = user_vocab
        self.items = self._aligned(items, item_vocab, "item_id", ("title", "text"))
        self.users = self._aligned(users, user_vocab, "user_id", ("profile",))
        order = np.lexsort((interactions["timestamp"].to_numpy(),))  # stable: ties keep input order
        self.interactions = interactions.iloc[order].reset_index(drop=True)
        self.user_idx = user_vocab.index(self.interactions["user_id"].to_numpy()).astype(np.int32)
        self.item_idx = item_vocab.index(self.interactions["item_id"].to_numpy()).astype(np.int32)
        self.timestamps = self.interactions["timestamp"].to_numpy(np.int64)
        self.values = self.interactions["value"].to_numpy(np.float64)

    @staticmethod
    def _aligned(
        frame: pd.DataFrame | None, vocab: Vocabulary, id_col: str, text_cols: tuple[str, ...]
    ) -> pd.DataFrame:
        """Table with one row per vocabulary entry, in index order (rows missing from ``frame`` get "")."""
        base = pd.DataFrame({id_col: vocab.ids})
        if frame is None:
            for col in text_cols:
                base[col] = ""
            return base
        if len(frame) == len(vocab) and (frame[id_col].to_numpy() == vocab.ids).all():
            return frame.reset_index(drop=True)
        merged = base.merge(frame, on=id_col, how="left")
        for col in text_cols:
            merged[col] = merged[col].fillna("") if col in merged else ""
        return merged

    # -- sizes ---------------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Number of users in the vocabulary."""
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return len(self.item_vocab)

    def __len__(self) -> int:
        return len(self.interactions)

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, users={self.n_users}, items={self.n_items}, interactions={len(self)})"

    # -- views ---------------------------------------------------------------------------------------
    def matrix(self, kind: MatrixKind = "binary") -> sp.csr_matrix:
        """User x item CSR matrix (float32).

        Args:
            kind: ``"binary"`` (1 where the user interacted), ``"count"`` (number of events) or ``"value"``
                (the latest event's value).

        """
        return self._matrices[kind]

    @cached_property
    def _matrices(self) -> dict[str, sp.csr_matrix]:
        shape = (self.n_users, self.n_items)
        ones = np.ones(len(self), dtype=np.float32)
        count = sp.csr_matrix((ones, (self.user_idx, self.item_idx)), shape=shape, dtype=np.float32)
        count.sum_duplicates()
        binary = count.copy()
        binary.data[:] = 1.0
        # Latest value wins: interactions are time-sorted, so keep the last occurrence of each pair.
        pairs = pd.DataFrame({"u": self.user_idx, "i": self.item_idx, "v": self.values})
        last = pairs.drop_duplicates(["u", "i"], keep="last")
        value = sp.csr_matrix((last["v"].to_numpy(np.float32), (last["u"], last["i"])), shape=shape)
        return {"binary": binary, "count": count, "value": value}

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item (int64, length ``n_items``)."""
        return np.asarray(self.matrix("binary").sum(axis=0)).ravel().astype(np.int64)

    @cached_property
    def user_activity(self) -> np.ndarray:
        """Number of distinct items per user (int64, length ``n_users``)."""
        return np.asarray(self.matrix("binary").sum(axis=1)).ravel().astype(np.int64)

    def subset(self, mask: np.ndarray, name: str | None = None) -> Dataset:
        """A dataset with only the interactions where ``mask`` is true, sharing vocabularies and tables."""
        mask = np.asarray(mask, dtype=bool)
        out = Dataset.__new__(Dataset)
        out.name = name or self.name
        out.user_vocab, out.item_vocab = self.user_vocab, self.item_vocab
        out.items, out.users = self.items, self.users
        out.interactions = self.interactions[mask].reset_index(drop=True)
        out.user_idx, out.item_idx = self.user_idx[mask], self.item_idx[mask]
        out.timestamps, out.values = self.timestamps[mask], self.values[mask]
        return out

    def union(self, other: Dataset, name: str | None = None) -> Dataset:
        """Interactions of both datasets (which must share vocabularies), time-sorted."""
        if other.user_vocab is not self.user_vocab or other.item_vocab is not self.item_vocab:
            raise ValueError("union needs datasets with the same vocabularies (made by subset of one dataset)")
        frame = pd.concat([self.interactions, other.interactions], ignore_index=True)
        return Dataset(
            frame,
            self.items,
            self.users,
            name=name or self.name,
            validate=False,
            user_vocab=self.user_vocab,
            item_vocab=self.item_vocab,
        )
