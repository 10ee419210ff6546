"""Data subject rights in the store: delete everything about a user, export it, and the audit log of both.

Mixed into :class:`~llmrec.data.store.Store`. :meth:`SubjectAccess.forget_user` deletes, in one transaction, every
row that belongs to the user in every table that can hold one (profile, interactions and feedback, chat sessions
with their messages, API keys, and embedding-cache rows of texts derived from the user, which the caller names by
hash) and records the deletion in ``audit_log``. The log names the user by a salted digest only
(:func:`llmrec.privacy.subject_digest`), so after a deletion no row anywhere holds the user's id.

:data:`USER_TABLES` lists the tables the store knows to hold user rows, and :data:`NO_USER_TABLES` those that never
do; a test holds the two against the migrated schema, so a new table has to be placed in one of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from llmrec.data.store.models import (
    ApiKeyRow,
    AuditRow,
    ChatSessionRow,
    InteractionRow,
    RecommendationRow,
    UserRow,
)
from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from llmrec.data.store.records import Page
    from llmrec.privacy.at_rest import TextProtection

__all__ = ["NO_USER_TABLES", "USER_TABLES", "AuditRecord", "ForgetReport", "SubjectAccess"]

AuditAction = Literal["delete_user", "export_user"]

#: Tables holding rows of a user, and how such a row is found: the user's own rows by (dataset, user_id); the
#: embedding cache by the hashes of texts derived from the user (its key is the text, not the user).
USER_TABLES: Mapping[str, str] = {
    "users": "dataset, user_id",
    "interactions": "dataset, user_id (feedback too: its event is the kind)",
    "chat_sessions": "dataset, user_id (state and messages are columns of the row)",
    "api_keys": "dataset, user_id",
    "recommendations": "dataset, user_id (lists precomputed by batch runs)",
    "embeddings": "text_hash of the user's profile and messages (scrubbed and raw)",
}
#: Tables that never hold a user's data (the audit log names users only by a salted digest).
NO_USER_TABLES: frozenset[str] = frozenset(
    {"alembic_version", "datasets", "items", "audit_log", "model_versions"}  # versions: folder paths and markers
)


@dataclass(frozen=True)
class ForgetReport:
    """What :meth:`SubjectAccess.forget_user` deleted.

    Attributes:
        dataset: The dataset.
        user_id: The user (kept in this object only; the store no longer holds it).
        deleted: Rows deleted per table.
        audit_id: The audit-log row recording the deletion.

    """

    dataset: str
    user_id: str
    deleted: dict[str, int] = field(default_factory=dict)
    audit_id: int = 0

    @property
    def found(self) -> bool:
        """Whether anything of the user was stored."""
        return any(self.deleted.values())


@dataclass(frozen=True)
class AuditRecord:
    """One audit-log row (see :class:`~llmrec.data.store.models.AuditRow`)."""

    id: int
    at: datetime
    dataset: str
    action: str
    actor: str
    subject_digest: str
    detail: dict[str, Any]


def _utc(at: datetime) -> datetime:
    """A stored time with its zone (SQLite gives back naive UTC times; PostgreSQL aware ones)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _audit(row: Any) -> AuditRecord:
    detail = dict(row.detail or {})
    return AuditRecord(row.id, _utc(row.at), row.dataset, row.action, row.actor, row.subject_digest, detail)


class SubjectAccess:
    """Deletion, export and audit methods of :class:`~llmrec.data.store.Store` (see the module docstring)."""

    if TYPE_CHECKING:
        _transaction: Callable[[str], contextlib.AbstractContextManager[sa.Connection]]

        @property
        def protection(self) -> TextProtection: ...  # noqa: D102 - Store's own

    def _log(
        self, conn: sa.Connection, dataset: str, action: AuditAction, actor: str, user_id: str, detail: Any
    ) -> int:
        from llmrec.privacy.at_rest import new_salt, subject_digest

        salt = new_salt()
        values = {
            "dataset": dataset,
            "action": action,
            "actor": check_actor(actor),
            "subject_salt": salt,
            "subject_digest": subject_digest(dataset, str(user_id), salt),
            "detail": detail,
        }
        return int(conn.execute(sa.insert(AuditRow).values(**values).returning(AuditRow.id)).scalar_one())

    def forget_user(self, dataset: str, user_id: str, *, actor: str, text_hashes: Iterable[str] = ()) -> ForgetReport:
        """Delete every row of ``user_id`` in ``dataset`` and record who did it, in one transaction.

        Args:
            dataset: The dataset.
            user_id: The user.
            actor: Who asks (``admin``, ``key:<id>``, ``cli``), written to the audit log.
            text_hashes: Embedding-cache keys (:func:`llmrec.encode.cache.text_hash`) of texts derived from the
                user, deleted for every encoder model.

        Returns:
            Rows deleted per table (all zero when nothing was stored; the audit row is written all the same).

        """
        user_id = str(user_id)
        hashes = sorted(set(text_hashes))
        deleted: dict[str, int] = {}
        with self._transaction(f"delete the data of user '{user_id}'") as conn:
            for table, model in (
                ("interactions", InteractionRow),
                ("chat_sessions", ChatSessionRow),
                ("api_keys", ApiKeyRow),
                ("recommendations", RecommendationRow),
                ("users", UserRow),
            ):
                stmt = sa.delete(model).where(model.dataset == dataset, model.user_id == user_id)
                deleted[table] = int(conn.execute(stmt).rowcount or 0)
            deleted["embeddings"] = 0
            if hashes:
                embeddings = sa.table("embeddings", sa.column("text_hash"))
                for start in range(0, len(hashes), 500):
                    chunk = hashes[start : start + 500]
                    stmt = sa.delete(embeddings).where(embeddings.c.text_hash.in_(chunk))
                    deleted["embeddings"] += int(conn.execute(stmt).rowcount or 0)
            audit_id = self._log(conn, dataset, "delete_user", actor, user_id, {"deleted": deleted})
        return ForgetReport(dataset, user_id, deleted, audit_id)

    def user_texts(self, dataset: str, user_id: str) -> list[str]:
        """Every text the store holds from or about a user, to find the cache rows derived from them.

        The profile (scrubbed, and raw when kept and the key is configured) and each chat message and query.
        """
        texts: list[str] = []
        protection = self.protection
        with self._transaction(f"read the texts of user '{user_id}'") as conn:
            user = conn.execute(
                sa.select(UserRow.profile, UserRow.profile_raw).where(
                    UserRow.dataset == dataset, UserRow.user_id == str(user_id)
                )
            ).first()
            sessions = conn.execute(
                sa.select(ChatSessionRow.state, ChatSessionRow.turns).where(
                    ChatSessionRow.dataset == dataset, ChatSessionRow.user_id == str(user_id)
                )
            ).all()
        if user is not None:
            texts.append(user.profile or "")
            if user.profile_raw and protection.can_decrypt:
                texts.append(protection.decrypt(user.profile_raw))
        for state, turns in sessions:
            query = (state or {}).get("query")
            if query:
                texts.append(str(query))
            for turn in turns or []:
                texts.append(str(turn.get("text", "")))
                if turn.get("raw") and protection.can_decrypt:
                    texts.append(protection.decrypt(turn["raw"]))
        return [t for t in dict.fromkeys(texts) if t]

    def export_user(self, dataset: str, user_id: str, *, actor: str) -> dict[str, Any]:
        """Everything the store holds about a user, as JSON-ready data, and an audit row saying who asked.

        Raw text kept encrypted is decrypted when the key is configured (it is the user's own text); API keys are
        listed without their hashes. The audit entries about the user (found by recomputing their digests) come too.

        Returns:
            ``{"dataset", "user_id", "profile", "interactions", "chat_sessions", "api_keys", "audit"}``; ``profile``
            is ``None`` when the user has no row in the users table.

        """
        from llmrec.privacy.at_rest import subject_digest

        user_id = str(user_id)
        protection = self.protection
        with self._transaction(f"export the data of user '{user_id}'") as conn:
            user = conn.execute(
                sa.select(UserRow).where(UserRow.dataset == dataset, UserRow.user_id == user_id)
            ).first()
            interactions = conn.execute(
                sa.select(InteractionRow.item_id, InteractionRow.timestamp, InteractionRow.value, InteractionRow.event)
                .where(InteractionRow.dataset == dataset, InteractionRow.user_id == user_id)
                .order_by(InteractionRow.timestamp, InteractionRow.id)
            ).all()
            sessions = conn.execute(
                sa.select(ChatSessionRow)
                .where(ChatSessionRow.dataset == dataset, ChatSessionRow.user_id == user_id)
                .order_by(ChatSessionRow.created_at, ChatSessionRow.id)
            ).all()
            keys = conn.execute(
                sa.select(ApiKeyRow)
                .where(ApiKeyRow.dataset == dataset, ApiKeyRow.user_id == user_id)
                .order_by(ApiKeyRow.created_at)
            ).all()
            audit_rows = conn.execute(
                sa.select(AuditRow).where(AuditRow.dataset == dataset).order_by(AuditRow.id)
            ).all()
            audit = [
                _audit(r) for r in audit_rows if subject_digest(dataset, user_id, r.subject_salt) == r.subject_digest
            ]
            detail = {"interactions": len(interactions), "chat_sessions": len(sessions), "api_keys": len(keys)}
            self._log(conn, dataset, "export_user", actor, user_id, {"exported": detail})

        def opened(token: str | None) -> str | None:
            return protection.decrypt(token) if token and protection.can_decrypt else None

        profile = None
        if user is not None:
            profile = {
                "profile": user.profile or "",
                "profile_raw": opened(user.profile_raw),
                "raw_stored_encrypted": user.profile_raw is not None,
                "attributes": dict(user.attributes or {}),
            }
        return {
            "dataset": dataset,
            "user_id": user_id,
            "profile": profile,
            "interactions": [
                {"item_id": str(i), "timestamp": int(t), "value": float(v), "event": str(e)}
                for i, t, v, e in interactions
            ],
            "chat_sessions": [
                {
                    "session_id": s.id,
                    "created_at": _utc(s.created_at),
                    "updated_at": _utc(s.updated_at),
                    "state": dict(s.state or {}),
                    "turns": [
                        {
                            "role": t.get("role"),
                            "text": t.get("text"),
                            "items": list(t.get("items") or []),
                            "raw": opened(t.get("raw")),
                        }
                        for t in s.turns or []
                    ],
                }
                for s in sessions
            ],
            "api_keys": [
                {
                    "key_id": k.key_id,
                    "role": k.role,
                    "created_at": _utc(k.created_at),
                    "revoked_at": _utc(k.revoked_at) if k.revoked_at is not None else None,
                }
                for k in keys
            ],
            "audit": [
                {"id": a.id, "at": a.at, "action": a.action, "actor": a.actor, "detail": a.detail} for a in audit
            ],
        }

    def audit_log(
        self, dataset: str, *, user_id: str | None = None, offset: int = 0, limit: int = 50
    ) -> Page[AuditRecord]:
        """Audit-log rows of a dataset, newest first (only those about ``user_id`` when given).

        Raises:
            ConfigError: ``offset`` or ``limit`` is out of range.

        """
        from llmrec.data.store.records import Page, _check_page
        from llmrec.privacy.at_rest import subject_digest

        _check_page(offset, limit)
        where = [AuditRow.dataset == dataset]
        with self._transaction("read the audit log") as conn:
            if user_id is None:
                total = int(conn.execute(sa.select(sa.func.count()).select_from(AuditRow).where(*where)).scalar_one())
                rows = conn.execute(
                    sa.select(AuditRow).where(*where).order_by(AuditRow.id.desc()).offset(offset).limit(limit)
                ).all()
                return Page([_audit(r) for r in rows], total, offset, limit)
            every = conn.execute(sa.select(AuditRow).where(*where).order_by(AuditRow.id.desc())).all()
        mine = [_audit(r) for r in every if subject_digest(dataset, str(user_id), r.subject_salt) == r.subject_digest]
        return Page(mine[offset : offset + limit], len(mine), offset, limit)


def check_actor(actor: str) -> str:
    """``actor`` if it is a non-empty string (what the audit log records as who acted).

    Raises:
        ConfigError: It is empty.

    """
    if not isinstance(actor, str) or not actor.strip():
        raise ConfigError("an audit entry needs an actor (who deleted or exported)", field="actor")
    return actor.strip()
