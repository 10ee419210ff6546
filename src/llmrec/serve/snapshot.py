"""A snapshot of a served dataset: the data as loaded from the store, and the pipelines fitted on it.

A refit builds a new snapshot and swaps it in at once, as does switching to a model version another worker
published; requests hold on to the snapshot they started with, so a list is never made from half-refitted state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmrec.data.dataset import Dataset
from llmrec.data.filters import ItemFilters
from llmrec.data.store.versions import AuditMark
from llmrec.pipeline import Pipeline

__all__ = ["Snapshot"]


@dataclass
class Snapshot:
    """The dataset as loaded from the store, and what has been fitted on it."""

    data: Dataset
    marker: int
    loaded_at: datetime
    removed: set[str] = field(default_factory=set)
    pipelines: dict[tuple[str, bool], Pipeline] = field(default_factory=dict)
    fit_locks: dict[tuple[str, bool], threading.Lock] = field(default_factory=dict)
    saved: tuple[Pipeline, ...] = ()
    """Saved pipelines this snapshot came from (``ServeConfig.model``, or a published version): their retrievers
    are loaded, not fitted; empty when the data was loaded from the store."""
    version: int | None = None
    """The published model version this snapshot is (``None``: fitted or loaded in this process only)."""
    audit: AuditMark = field(default_factory=AuditMark)
    """Where the audit log stood when the data was read: users deleted after it are still in ``data``."""
    _filters: ItemFilters | None = None
    _records: list[dict[str, Any]] | None = None

    def filters(self) -> ItemFilters:
        """Genre and year masks of the items (built on first use)."""
        if self._filters is None:
            from llmrec.catalogue import Catalogue

            self._filters = Catalogue.of(self.data).filters()
        return self._filters

    def record(self, idx: int) -> dict[str, Any]:
        """Title and JSON-safe attributes of item ``idx``."""
        if self._records is None:
            from llmrec.data.store.core import _json_safe

            items = self.data.items
            attrs = [c for c in items.columns if c not in ("item_id", "title", "text")]
            titles = items["title"].fillna("").astype(str).tolist()
            columns = {c: items[c].tolist() for c in attrs}
            self._records = [
                {"title": titles[i], "attributes": {c: _json_safe(columns[c][i]) for c in attrs}}
                for i in range(len(items))
            ]
        return self._records[idx]
