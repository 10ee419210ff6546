"""One-record access to the store: items, users, a user's recent interactions, API keys.

Get, page through, search, update and delete items; get, page and add users; read what a user did since a marker.

Bulk ingest (:meth:`Store.ingest_items` and friends) stays the one way rows are created, so a row added one at a
time goes through the same validation as a file. These methods serve the HTTP API and the chat layer, which work
on single records; they are mixed into :class:`~llmrec.data.store.Store`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pandas as pd
import sqlalchemy as sa

from llmrec.data.schema import INTERACTION_COLUMNS
from llmrec.data.store.models import ApiKeyRow, InteractionRow, ItemRow, UserRow
from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from llmrec.data.store.core import IngestReport

__all__ = ["ApiKeyRecord", "ItemRecord", "Page", "RecordAccess", "UserRecord"]

T = TypeVar("T")
_MAX_PAGE = 1000


@dataclass(frozen=True)
class ItemRecord:
    """One stored item: its text fields and its other attributes (``genres``, ``year``...)."""

    item_id: str
    title: str
    text: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserRecord:
    """One stored user: a free-text profile and other attributes."""

    user_id: str
    profile: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored API key (never the key itself: only its SHA-256 is kept)."""

    key_id: str
    dataset: str
    user_id: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def expired(self) -> bool:
        """Whether the key is past its expiry time (a key without one never expires)."""
        if self.expires_at is None:
            return False
        expires = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=UTC)
        return expires <= datetime.now(UTC)

    @property
    def active(self) -> bool:
        """Whether the key still grants access (neither revoked nor expired)."""
        return self.revoked_at is None and not self.expired


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: the records, and how many match in all."""

    records: list[T]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        """Offset of the next page, ``None`` on the last one."""
        following = self.offset + len(self.records)
        return following if following < self.total and self.records else None


def _check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ConfigError(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= _MAX_PAGE:
        raise ConfigError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")


def _like_terms(query: str) -> list[str]:
    """``LIKE`` patterns, one per word of ``query``, with the wildcards ``%`` and ``_`` escaped."""
    words = query.split()
    return ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words]


def _item(row: Any) -> ItemRecord:
    return ItemRecord(str(row.item_id), row.title or "", row.text or "", dict(row.attributes or {}))


def _user(row: Any) -> UserRecord:
    return UserRecord(str(row.user_id), row.profile or "", dict(row.attributes or {}))


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(row.key_id, row.dataset, row.user_id, row.role, row.created_at, row.revoked_at, row.expires_at)


class RecordAccess:
    """Single-record methods of :class:`~llmrec.data.store.Store` (see the module docstring)."""

    if TYPE_CHECKING:
        _transaction: Callable[[str], contextlib.AbstractContextManager[sa.Connection]]

        def ingest_items(  # noqa: D102 - Store's own
            self, dataset: str, df: pd.DataFrame, *, show_progress: bool = False
        ) -> IngestReport: ...

        def ingest_users(  # noqa: D102 - Store's own
            self, dataset: str, df: pd.DataFrame, *, show_progress: bool = False
        ) -> IngestReport: ...

    # -- items ----------------------------------------------------------------------------------------------
    def add_item(
        self, dataset: str, item_id: str, title: str = "", text: str = "", attributes: Mapping[str, Any] | None = None
    ) -> bool:
        """Validate and store one item; returns ``False`` (storing nothing) when the id is already stored.

        Raises:
            DataValidationError: The item is invalid (empty id...); nothing was stored.

        """
        row = {"item_id": item_id, "title": title, "text": text, **_attribute_columns(attributes, "item")}
        return self.ingest_items(dataset, pd.DataFrame([row], dtype=object)).inserted == 1

    def get_item(self, dataset: str, item_id: str) -> ItemRecord | None:
        """The item ``item_id`` of ``dataset``, or ``None`` when it is not stored."""
        with self._transaction(f"read item '{item_id}'") as conn:
            row = conn.execute(
                sa.select(ItemRow).where(ItemRow.dataset == dataset, ItemRow.item_id == str(item_id))
            ).first()
        return _item(row) if row is not None else None

    def stored_item_ids(self, dataset: str, item_ids: Iterable[object]) -> set[str]:
        """Which of ``item_ids`` are stored items of ``dataset`` (one ``IN`` query per 1,000 ids)."""
        wanted = sorted({str(i) for i in item_ids})
        found: set[str] = set()
        with self._transaction("look up item ids") as conn:
            for start in range(0, len(wanted), 1000):
                chunk = wanted[start : start + 1000]
                stmt = sa.select(ItemRow.item_id).where(ItemRow.dataset == dataset, ItemRow.item_id.in_(chunk))
                found.update(str(i) for i in conn.execute(stmt).scalars())
        return found

    def list_items(
        self, dataset: str, *, offset: int = 0, limit: int = 50, query: str | None = None
    ) -> Page[ItemRecord]:
        """Items in catalogue order, a page at a time; with ``query``, those whose title or text holds every word.

        The match is a case-insensitive substring match per word (``ILIKE`` on PostgreSQL, ``LIKE`` with
        ``lower()`` on SQLite), cheap and exact; meaning-based search lives in the content scorer.

        Raises:
            ConfigError: ``offset`` or ``limit`` is out of range.

        """
        _check_page(offset, limit)
        where = [ItemRow.dataset == dataset]
        for term in _like_terms(query or ""):
            where.append(sa.or_(ItemRow.title.ilike(term, escape="\\"), ItemRow.text.ilike(term, escape="\\")))
        with self._transaction("list items") as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(ItemRow).where(*where)).scalar_one())
            rows = conn.execute(
                sa.select(ItemRow).where(*where).order_by(ItemRow.position, ItemRow.item_id).offset(offset).limit(limit)
            ).all()
        return Page([_item(r) for r in rows], total, offset, limit)

    def update_item(
        self,
        dataset: str,
        item_id: str,
        *,
        title: str | None = None,
        text: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        """Change an item's fields in place; ``None`` when it is not stored.

        ``attributes`` are merged into the stored ones; a key given as ``None`` is removed. Fields left as
        ``None`` keep their value.
        """
        with self._transaction(f"update item '{item_id}'") as conn:
            where = (ItemRow.dataset == dataset, ItemRow.item_id == str(item_id))
            row = conn.execute(sa.select(ItemRow).where(*where)).first()
            if row is None:
                return None
            current = _item(row)
            merged = dict(current.attributes)
            for key, value in _attribute_columns(attributes, "item").items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            new_title = current.title if title is None else title
            new_text = current.text if text is None else text
            values = {"title": new_title, "text": new_text, "attributes": merged}
            conn.execute(sa.update(ItemRow).where(*where).values(**values))
        return ItemRecord(current.item_id, new_title, new_text, merged)

    def delete_item(self, dataset: str, item_id: str) -> bool:
        """Delete an item and its interactions (so a reload no longer knows it); returns whether it was stored."""
        with self._transaction(f"delete item '{item_id}'") as conn:
            conn.execute(
                sa.delete(InteractionRow).where(InteractionRow.dataset == dataset, InteractionRow.item_id == item_id)
            )
            deleted = conn.execute(sa.delete(ItemRow).where(ItemRow.dataset == dataset, ItemRow.item_id == item_id))
        return bool(deleted.rowcount)

    # -- users ----------------------------------------------------------------------------------------------
    def add_user(
        self, dataset: str, user_id: str, profile: str = "", attributes: Mapping[str, Any] | None = None
    ) -> bool:
        """Validate and store one user; returns ``False`` (storing nothing) when the id is already stored.

        Raises:
            DataValidationError: The user is invalid; nothing was stored.

        """
        row = {"user_id": user_id, "profile": profile, **_attribute_columns(attributes, "user")}
        return self.ingest_users(dataset, pd.DataFrame([row], dtype=object)).inserted == 1

    def get_user(self, dataset: str, user_id: str) -> UserRecord | None:
        """The user ``user_id`` of ``dataset``, or ``None`` when it is not in the users table."""
        with self._transaction(f"read user '{user_id}'") as conn:
            row = conn.execute(
                sa.select(UserRow).where(UserRow.dataset == dataset, UserRow.user_id == str(user_id))
            ).first()
        return _user(row) if row is not None else None

    def list_users(self, dataset: str, *, offset: int = 0, limit: int = 50) -> Page[UserRecord]:
        """Users in the order they were first stored, a page at a time.

        Raises:
            ConfigError: ``offset`` or ``limit`` is out of range.

        """
        _check_page(offset, limit)
        with self._transaction("list users") as conn:
            count = sa.select(sa.func.count()).select_from(UserRow).where(UserRow.dataset == dataset)
            total = int(conn.execute(count).scalar_one())
            rows = conn.execute(
                sa.select(UserRow)
                .where(UserRow.dataset == dataset)
                .order_by(UserRow.position, UserRow.user_id)
                .offset(offset)
                .limit(limit)
            ).all()
        return Page([_user(r) for r in rows], total, offset, limit)

    # -- interactions ---------------------------------------------------------------------------------------
    def user_interactions(
        self, dataset: str, user_id: str, *, since: int | None = None, after_id: int | None = None
    ) -> pd.DataFrame:
        """A user's stored interactions, oldest first, with the row ``id`` as first column.

        Args:
            dataset: Dataset name.
            user_id: External user id.
            since: Only those with ``timestamp >= since`` (seconds since the epoch).
            after_id: Only rows stored after the row with this id (see :meth:`last_interaction_id`): what arrived
                since a model was fitted, whatever timestamps the rows carry.

        """
        where = [InteractionRow.dataset == dataset, InteractionRow.user_id == str(user_id)]
        if since is not None:
            where.append(InteractionRow.timestamp >= since)
        if after_id is not None:
            where.append(InteractionRow.id > after_id)
        columns = [getattr(InteractionRow, c) for c in ("id", *INTERACTION_COLUMNS)]
        with self._transaction(f"read interactions of user '{user_id}'") as conn:
            rows = conn.execute(
                sa.select(*columns).where(*where).order_by(InteractionRow.timestamp, InteractionRow.id)
            ).all()
        frame = pd.DataFrame(rows, columns=["id", *INTERACTION_COLUMNS])
        return frame.astype({"id": "int64", "timestamp": "int64", "value": "float64"}).astype(
            {"user_id": object, "item_id": object, "event": object}
        )

    def user_events(self, dataset: str, user_id: str, *, after_id: int) -> list[tuple[str, str | None, float | None]]:
        """``(item_id, event, value)`` of a user's interactions stored after row ``after_id``, oldest first.

        The per-request read of the HTTP API (what a user did since the fit): plain tuples, as most users have
        none and building a DataFrame cost ~70% of a recommendation request.
        """
        stmt = (
            sa.select(InteractionRow.item_id, InteractionRow.event, InteractionRow.value)
            .where(
                InteractionRow.dataset == dataset,
                InteractionRow.user_id == str(user_id),
                InteractionRow.id > after_id,
            )
            .order_by(InteractionRow.timestamp, InteractionRow.id)
        )
        with self._transaction(f"read new interactions of user '{user_id}'") as conn:
            return [(str(item), event, value) for item, event, value in conn.execute(stmt)]

    def last_interaction_id(self, dataset: str) -> int:
        """The id of the newest interaction row of ``dataset`` (0 when it has none): a marker for ``after_id``."""
        with self._transaction("read the newest interaction id") as conn:
            stmt = sa.select(sa.func.max(InteractionRow.id)).where(InteractionRow.dataset == dataset)
            return int(conn.execute(stmt).scalar_one() or 0)

    # -- API keys -------------------------------------------------------------------------------------------
    def add_api_key(
        self,
        key_id: str,
        key_hash: str,
        dataset: str,
        user_id: str,
        role: str = "user",
        expires_at: datetime | None = None,
    ) -> ApiKeyRecord:
        """Store an API key's hash for ``user_id`` of ``dataset`` (the dataset row is created when new).

        ``expires_at``: when the key stops granting access (``None``: never).
        """
        from llmrec.data.store.models import DatasetRow

        with self._transaction(f"store an API key for user '{user_id}'") as conn:
            exists = conn.execute(sa.select(DatasetRow.name).where(DatasetRow.name == dataset)).first()
            if exists is None:
                conn.execute(sa.insert(DatasetRow).values(name=dataset))
            conn.execute(
                sa.insert(ApiKeyRow).values(
                    key_id=key_id,
                    key_hash=key_hash,
                    dataset=dataset,
                    user_id=str(user_id),
                    role=role,
                    expires_at=expires_at,
                )
            )
            row = conn.execute(sa.select(ApiKeyRow).where(ApiKeyRow.key_id == key_id)).one()
        return _key(row)

    def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key whose SHA-256 is ``key_hash`` (revoked or not), or ``None``."""
        with self._transaction("look up an API key") as conn:
            row = conn.execute(sa.select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).first()
        return _key(row) if row is not None else None

    def api_keys(self, dataset: str, user_id: str | None = None) -> list[ApiKeyRecord]:
        """The keys of a dataset (of one user when ``user_id`` is given), oldest first."""
        where = [ApiKeyRow.dataset == dataset]
        if user_id is not None:
            where.append(ApiKeyRow.user_id == str(user_id))
        with self._transaction("list API keys") as conn:
            rows = conn.execute(sa.select(ApiKeyRow).where(*where).order_by(ApiKeyRow.created_at)).all()
        return [_key(r) for r in rows]

    def revoke_api_key(self, dataset: str, key_id: str) -> bool:
        """Mark a key revoked; returns whether an active key of that id was found."""
        with self._transaction(f"revoke API key '{key_id}'") as conn:
            result = conn.execute(
                sa.update(ApiKeyRow)
                .where(ApiKeyRow.dataset == dataset, ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return bool(result.rowcount)


_RESERVED = {"item": ("item_id", "title", "text"), "user": ("user_id", "profile")}


def _attribute_columns(attributes: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    """Attributes as extra columns; names of the standard fields are refused (they have their own arguments)."""
    attributes = dict(attributes or {})
    clash = [k for k in attributes if k in _RESERVED[kind]]
    if clash:
        raise ConfigError(f"attribute name(s) {clash} are {kind} fields, not attributes: pass them as their own fields")
    return attributes
