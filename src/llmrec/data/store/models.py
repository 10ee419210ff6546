"""The store's tables, as SQLAlchemy 2 declarative models.

These models describe the schema for queries and for checking that the migrations match; the tables themselves
are created by the alembic migrations shipped in ``llmrec/data/store/migrations`` (run by ``Store.migrate``).
A change here needs a new migration beside it.

Every row belongs to a dataset (by name), so one database holds many datasets and deleting one is a
``WHERE dataset = ...`` on each table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "Base",
    "ChatSessionRow",
    "DatasetRow",
    "InteractionRow",
    "ItemRow",
    "ModelVersionRow",
    "RecommendationRow",
    "UserRow",
]

# An autoincrementing 64-bit key; SQLite only autoincrements an INTEGER PRIMARY KEY (which is 64-bit there).
BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the store's tables (``Base.metadata`` is the migrations' target)."""

    metadata = sa.MetaData(
        naming_convention={
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: sa.JSON()}  # noqa: RUF012


class DatasetRow(Base):
    """One named dataset; items, users and interactions refer to it."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


def _dataset_fk() -> sa.ForeignKey:
    return sa.ForeignKey("datasets.name", ondelete="CASCADE")


class ItemRow(Base):
    """An item of a dataset: its text fields, and every other attribute as a JSON object.

    ``position`` is the item's place in the dataset's catalogue (first ingest wins), so a loaded dataset numbers
    its items as the stored one did.
    """

    __tablename__ = "items"

    dataset: Mapped[str] = mapped_column(sa.Text, _dataset_fk(), primary_key=True)
    item_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    title: Mapped[str] = mapped_column(sa.Text, default="")
    text: Mapped[str] = mapped_column(sa.Text, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class UserRow(Base):
    """A user of a dataset: a free-text profile, and every other attribute as a JSON object.

    ``position`` is the user's place in the dataset's user list (first ingest wins), as for items. ``profile`` is
    stored PII-scrubbed; ``profile_raw`` holds the profile as typed, Fernet-encrypted, only when the deployment
    keeps raw text and the scrubber changed something (see :mod:`llmrec.privacy`).
    """

    __tablename__ = "users"

    dataset: Mapped[str] = mapped_column(sa.Text, _dataset_fk(), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    profile: Mapped[str] = mapped_column(sa.Text, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    profile_raw: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class InteractionRow(Base):
    """One event (a rating, a click, a purchase...) of a user on an item at a time.

    The unique key (dataset, user, item, time, event) is what makes ingest idempotent: a row already stored
    is skipped. It also serves per-user reads; a (dataset, timestamp) index serves per-dataset reads in time
    order, and a (dataset, user_id, timestamp) index a user's history in time order.
    """

    __tablename__ = "interactions"
    __table_args__ = (
        sa.UniqueConstraint("dataset", "user_id", "item_id", "timestamp", "event", name="uq_interactions_key"),
        sa.Index("ix_interactions_dataset_time", "dataset", "timestamp"),
        sa.Index("ix_interactions_user_time", "dataset", "user_id", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(sa.Text, _dataset_fk())
    user_id: Mapped[str] = mapped_column(sa.Text)
    item_id: Mapped[str] = mapped_column(sa.Text)
    timestamp: Mapped[int] = mapped_column(sa.BigInteger)
    value: Mapped[float] = mapped_column(sa.Float, default=1.0)
    event: Mapped[str] = mapped_column(sa.Text, default="interaction")


class ChatSessionRow(Base):
    """One conversation: its dialogue state and its turns, as JSON (see :mod:`llmrec.chat.sessions`).

    ``user_id`` is set when the conversation belongs to a user of the dataset (their feedback then becomes
    interactions); anonymous sessions leave it empty.
    """

    __tablename__ = "chat_sessions"
    __table_args__ = (sa.Index("ix_chat_sessions_user", "dataset", "user_id"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.Text)
    user_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    turns: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class ApiKeyRow(Base):
    """An API key of the HTTP API, bound to one user of one dataset; only its SHA-256 is stored.

    Keys are long random strings (not passwords), so an unsalted SHA-256 is enough to make a stolen table useless
    while a key is still found with one indexed lookup. ``revoked_at`` is set instead of deleting the row, so a
    revoked key stays explainable in logs.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.Index("ix_api_keys_user", "dataset", "user_id"),
    )

    key_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    dataset: Mapped[str] = mapped_column(sa.Text, _dataset_fk())
    user_id: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text, default="user")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)


class AuditRow(Base):
    """Who deleted or exported a user's data, and when.

    ``actor`` is ``admin``, ``key:<key id>`` (a user key) or ``cli``. The user is named only by
    ``subject_digest``, the SHA-256 of ``subject_salt``, dataset and user id (:func:`llmrec.privacy.subject_digest`),
    so a deleted user's id appears nowhere in the store; whoever knows the id can still find its rows. ``detail``
    holds counts (rows deleted per table), never data.
    """

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_dataset_at", "dataset", "at"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    dataset: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.Text)
    subject_salt: Mapped[str] = mapped_column(sa.String(32))
    subject_digest: Mapped[str] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RecommendationRow(Base):
    """One slot of a precomputed top-k list: a batch job's output (``llmrec batch recommend``), kept by run name.

    ``run`` names one batch run (a later run of the same name replaces it in one transaction); ``dataset`` is the
    name of the data the model was fitted on. It is not a foreign key: a model fitted on a built-in dataset
    (``movielens-small``) has no ``datasets`` row.
    """

    __tablename__ = "recommendations"
    __table_args__ = (sa.Index("ix_recommendations_dataset_user", "dataset", "user_id"),)

    run: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    rank: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.Text)
    item_id: Mapped[str] = mapped_column(sa.Text)
    score: Mapped[float] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class ModelVersionRow(Base):
    """One published version of a dataset's fitted pipelines: a folder of saved pipelines, and what it covers.

    Serving workers poll for the newest ``version`` of their dataset and load its folder (no refit), so one refit
    reaches every worker. ``path`` is relative to the workers' artifact folder (so nodes may mount a shared folder
    at different places). ``store_marker`` is the newest interaction row id the fitted data holds (later rows are
    "recent" to every worker); ``audit_marker`` and ``audit_gaps`` where the audit log stood when the data was read
    (:class:`~llmrec.data.store.versions.AuditMark`: users deleted after it are still in the fitted data, so every
    worker treats them as unknown). No user data: the folder holds
    the fitted data, and pruning drops folders that predate a deletion.
    """

    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("dataset", "version", name="uq_model_versions_version"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(sa.Text, _dataset_fk())
    version: Mapped[int] = mapped_column(sa.BigInteger)
    path: Mapped[str] = mapped_column(sa.Text)
    store_marker: Mapped[int] = mapped_column(sa.BigInteger)
    audit_marker: Mapped[int] = mapped_column(sa.BigInteger)
    audit_gaps: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    retrievers: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    created_by: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
