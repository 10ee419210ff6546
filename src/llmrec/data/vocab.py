"""Mapping between external ids (strings, at the API edges) and dense integer indices (inside models)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from llmrec.errors import UnknownIdError

__all__ = ["Vocabulary"]


class Vocabulary:
    """An ordered set of external ids; the position of an id is its dense index.

    External ids are always strings: ``Vocabulary([1, 2]).index([1])`` and ``.index(["1"])`` agree, so ids read
    from a CSV, a database or an HTTP request map to the same index.

    Args:
        ids: External ids, unique. Order is kept.
        kind: What the ids name (``"user"`` or ``"item"``), used in error messages.

    """

    def __init__(self, ids: Iterable[object], kind: str = "id") -> None:
        index = pd.Index([str(i) for i in ids], dtype=object)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ValueError(f"{kind} vocabulary has duplicate id {dup!r}")
        self._index = index
        self.kind = kind

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, ext_id: object) -> bool:
        return str(ext_id) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index.equals(other._index)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, size={len(self)})"

    @property
    def ids(self) -> np.ndarray:
        """All external ids in index order (object array of str)."""
        return self._index.to_numpy()

    def index(
        self, ext_ids: Sequence[object] | np.ndarray, missing: Literal["error", "negative"] = "error"
    ) -> np.ndarray:
        """Dense indices of ``ext_ids``.

        Args:
            ext_ids: External ids (any type; compared as strings).
            missing: ``"error"`` raises :class:`UnknownIdError` naming the unknown ids; ``"negative"`` maps them
                to -1.

        """
        keys = pd.Index([str(i) for i in ext_ids], dtype=object)
        idx = self._index.get_indexer(keys).astype(np.int64)
        if missing == "error" and (idx < 0).any():
            unknown = list(keys[idx < 0][:5])
            raise UnknownIdError(
                f"unknown {self.kind} id(s) {unknown}: not in the data the model was built from. "
                f"Check the id, or ingest the {self.kind} first"
            )
        return idx

    def known(self, ext_ids: Sequence[object] | np.ndarray) -> np.ndarray:
        """Dense indices of those ``ext_ids`` that are known (unknown ones are dropped, order kept)."""
        if len(ext_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        idx = self.index(ext_ids, missing="negative")
        return idx[idx >= 0]

    def mask(self, ext_ids: Sequence[object] | np.ndarray) -> np.ndarray:
        """Boolean ``(len(self),)``: True at the index of every known id of ``ext_ids`` (unknown ones are ignored)."""
        out = np.zeros(len(self), dtype=bool)
        out[self.known(ext_ids)] = True
        return out

    def id(self, idx: int) -> str:
        """External id at dense index ``idx``."""
        return str(self._index[idx])

    def ids_of(self, idx: np.ndarray) -> np.ndarray:
        """External ids at dense indices ``idx`` (any shape); negative indices give ``None``."""
        idx = np.asarray(idx)
        out = np.empty(idx.shape, dtype=object)
        ok = idx >= 0
        out[ok] = self._index.to_numpy()[idx[ok]]
        out[~ok] = None
        return out
