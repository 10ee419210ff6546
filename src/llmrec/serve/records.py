"""The service's records: items, users, stored interactions, and the data subject's rights (delete, export).

These methods check requests against the served dataset and pass them to the store; they share the service's
state (the snapshot, its lock, the users deleted since the fit), which :class:`RecordsMixin` declares and
:class:`~llmrec.serve.service.RecommenderService` provides.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from llmrec.data.store import AuditRecord, ForgetReport, IngestReport, ItemRecord, Page, Store, UserRecord
from llmrec.errors import ConfigError, ConflictError, UnknownIdError
from llmrec.feedback import validate_feedback
from llmrec.serve.config import ServeConfig
from llmrec.serve.snapshot import Snapshot

__all__ = ["RecordsMixin"]

log = logging.getLogger("llmrec.serve.service")


class RecordsMixin:
    """Item, user and interaction records of the served dataset, and deletion and export of a user's data."""

    _store: Store
    config: ServeConfig
    _lock: threading.RLock
    _snapshot: Snapshot | None
    _forgotten: dict[str, int]
    _forget_seq: int

    @property
    def dataset(self) -> str:
        """The served dataset's name."""
        return self.config.dataset

    def snapshot(self) -> Snapshot:
        """The served snapshot (see :meth:`RecommenderService.snapshot`)."""
        raise NotImplementedError

    def user_exists(self, user_id: str) -> bool:
        """Whether the user is known (see :meth:`RecommenderService.user_exists`)."""
        raise NotImplementedError

    def _is_forgotten(self, snap: Snapshot, user_id: str) -> bool:
        """Whether the user was deleted since the snapshot's data was read (see the service's own)."""
        raise NotImplementedError

    def ingest_interactions(self, rows: pd.DataFrame) -> IngestReport:
        """Validate and store a batch of interactions in one transaction (a bad batch stores nothing).

        The rules of feedback apply to every row: the item must be in the catalogue (an unknown id would otherwise
        become an item at the next refit, around the admin-only item routes); a row whose ``event`` is a feedback
        kind gets the value :func:`llmrec.feedback.validate_feedback` gives it (a rating within
        ``config.rating_range``, no value for the others); any other value must lie within ``rating_range``.
        A missing value (NaN) is 1 for events that are not feedback.

        Raises:
            DataValidationError: Rows have problems (row and field named); nothing was stored.

        """
        return self._store.ingest_interactions(self.dataset, self._checked_interactions(rows))

    def _checked_interactions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with their values settled by the feedback rules; a :class:`DataValidationError` otherwise."""
        from llmrec.errors import DataProblem, DataValidationError
        from llmrec.feedback import FEEDBACK_KINDS

        if not isinstance(rows, pd.DataFrame) or "item_id" not in rows:
            return rows  # the store's own validation names what is missing
        rows = rows.copy()
        low, high = self.config.rating_range
        items = rows["item_id"].astype(str).tolist()
        stored = self._store.stored_item_ids(self.dataset, items)
        events = rows["event"].tolist() if "event" in rows else ["interaction"] * len(rows)
        given = rows["value"].tolist() if "value" in rows else [None] * len(rows)
        values: list[float] = []
        problems: list[DataProblem] = []
        for line, (item, event, value) in enumerate(zip(items, events, given, strict=True), 1):
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            if item not in stored:
                problems.append(
                    DataProblem("<request>", line, "item_id", f"item {item!r} is not in the catalogue", "check the id")
                )
            try:
                if event in FEEDBACK_KINDS:
                    values.append(validate_feedback(event, None if missing else value, (low, high)))
                elif missing:
                    values.append(1.0)
                else:
                    values.append(validate_feedback("rating", value, (low, high)))
            except ConfigError as exc:
                problems.append(DataProblem("<request>", line, "value", exc.reason, exc.fix or "check the value"))
                values.append(1.0)
        if problems:
            raise DataValidationError(problems)
        rows["value"] = values
        return rows

    def user_interactions(self, user_id: str, since: int | None = None) -> pd.DataFrame:
        """A user's stored interactions, oldest first (from ``since`` on, seconds since the epoch)."""
        return self._store.user_interactions(self.dataset, str(user_id), since=since)

    def create_item(self, item_id: str, title: str, text: str, attributes: Mapping[str, Any]) -> ItemRecord:
        """Store a new item (recommendable after the next refit).

        Raises:
            ConflictError: An item with that id is stored.
            DataValidationError: The item is invalid.

        """
        if not self._store.add_item(self.dataset, item_id, title, text, attributes):
            raise ConflictError(f"item {item_id!r} already exists; update it with PATCH /v1/items/{item_id}")
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.removed.discard(str(item_id))
        record = self._store.get_item(self.dataset, item_id)
        assert record is not None
        return record

    def get_item(self, item_id: str) -> ItemRecord:
        """A stored item.

        Raises:
            UnknownIdError: It is not stored.

        """
        record = self._store.get_item(self.dataset, str(item_id))
        if record is None:
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        return record

    def update_item(
        self, item_id: str, *, title: str | None, text: str | None, attributes: Mapping[str, Any] | None
    ) -> ItemRecord:
        """Change a stored item's fields (attributes merge; ``None`` removes one). Lists use it after a refit.

        Raises:
            UnknownIdError: It is not stored.

        """
        record = self._store.update_item(self.dataset, str(item_id), title=title, text=text, attributes=attributes)
        if record is None:
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        return record

    def delete_item(self, item_id: str) -> None:
        """Delete a stored item and its interactions; it is never recommended again.

        Raises:
            UnknownIdError: It is not stored.

        """
        if not self._store.delete_item(self.dataset, str(item_id)):
            raise UnknownIdError(
                f"item {item_id!r} is not in dataset {self.dataset!r}", field="item_id", fix="check the id"
            )
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.removed.add(str(item_id))

    def list_items(self, offset: int = 0, limit: int = 50, query: str | None = None) -> Page[ItemRecord]:
        """Stored items in catalogue order; with ``query``, those whose title or text holds every word."""
        return self._store.list_items(self.dataset, offset=offset, limit=limit, query=query)

    def create_user(self, user_id: str, profile: str, attributes: Mapping[str, Any]) -> UserRecord:
        """Store a new user (until their first interactions, recommendations follow what their profile says).

        Raises:
            ConflictError: A user with that id is stored.

        """
        if not self._store.add_user(self.dataset, user_id, profile, attributes):
            raise ConflictError(f"user {user_id!r} already exists")
        record = self._store.get_user(self.dataset, user_id)
        assert record is not None
        return record

    def get_user(self, user_id: str) -> UserRecord:
        """A stored user (one known only from interactions gets an empty profile).

        Raises:
            UnknownIdError: The user is not known.

        """
        record = self._store.get_user(self.dataset, str(user_id))
        if record is not None:
            return record
        if self.user_exists(str(user_id)):
            return UserRecord(str(user_id), "", {})
        raise UnknownIdError(
            f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
        )

    def list_users(self, offset: int = 0, limit: int = 50) -> Page[UserRecord]:
        """Stored users in the order they were first stored."""
        return self._store.list_users(self.dataset, offset=offset, limit=limit)

    def _may_chat(self, user_id: str) -> bool:
        """Whether a session may belong to ``user_id``: a known user not deleted since the fit.

        A chat folds in the fitted history, so a user deleted and created again chats only after the next refit.
        """
        return not self._is_forgotten(self.snapshot(), str(user_id)) and self.user_exists(user_id)

    def forget_user(self, user_id: str, actor: str) -> ForgetReport:
        """Delete everything stored about a user and stop using their fitted data at once.

        Deletes their profile, interactions and feedback, chat sessions, API keys and embedding-cache rows of their
        texts, with an audit row naming ``actor`` (:func:`llmrec.privacy.forget_user`). Until the next refit the
        fitted data still holds them, so from now on every path treats them as unknown, on every worker of the store
        (each checks the audit log's deletions): their lists are cold-start lists, explanations and chats refuse
        them; the next refit loads no trace of them, and removes the published versions that still hold them. Kept
        language-model prompts are dropped.

        Args:
            user_id: The user.
            actor: Who asks, for the audit log (``admin``, ``key:<id>``).

        Raises:
            UnknownIdError: The user is not known (nothing was deleted).

        """
        from llmrec.privacy import forget_user

        user_id = str(user_id)
        if not self.user_exists(user_id):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
            )
        with self._lock:  # before the rows go, so no request folds in a half-deleted history
            self._forget_seq += 1
            seq = self._forget_seq
            self._forgotten[user_id] = seq
        try:
            report = forget_user(self._store, self.dataset, user_id, actor=actor)
        finally:  # committed: the audit log tells every worker (this one too); rolled back: nothing was deleted
            with self._lock:
                if self._forgotten.get(user_id) == seq:
                    del self._forgotten[user_id]
        local = sys.modules.get("llmrec.llm.local")
        if local is not None:
            local.clear_prompt_caches()
        log.info("deleted the data of a user of %s (audit entry %d)", self.dataset, report.audit_id)
        return report

    def export_user(self, user_id: str, actor: str) -> dict[str, Any]:
        """Everything stored about a user (:meth:`Store.export_user`), with an audit row naming ``actor``.

        Raises:
            UnknownIdError: The user is not known.

        """
        from llmrec.privacy import export_user

        user_id = str(user_id)
        if not self.user_exists(user_id):
            raise UnknownIdError(
                f"user {user_id!r} is not in dataset {self.dataset!r}", field="user_id", fix="check the id"
            )
        data = export_user(self._store, self.dataset, user_id, actor=actor)
        data["in_fitted_model"] = user_id in self.snapshot().data.user_vocab
        data["fitted_at"] = self.snapshot().loaded_at
        return data

    def audit_log(self, user_id: str | None = None, offset: int = 0, limit: int = 50) -> Page[AuditRecord]:
        """Who deleted or exported whose data, newest first (about ``user_id`` only, when given)."""
        return self._store.audit_log(self.dataset, user_id=user_id, offset=offset, limit=limit)
