"""Bodies of the data-subject routes: a user's deletion, their export, and the audit log (OpenAPI schemas).

Kept apart from :mod:`llmrec.serve.schemas` so the privacy routes and their shapes live in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from llmrec.serve.schemas import InteractionOut

if TYPE_CHECKING:
    from llmrec.data.store import AuditRecord, ForgetReport

__all__ = [
    "AuditEntryOut",
    "AuditPage",
    "ExportKeyOut",
    "ExportProfileOut",
    "ExportSessionOut",
    "ExportTurnOut",
    "UserDeletedOut",
    "UserExportOut",
]


class UserDeletedOut(BaseModel):
    """A user's data, deleted."""

    deleted: str = Field(description="The user id (no longer stored anywhere).")
    rows: dict[str, int] = Field(description="Rows deleted per table.")
    audit_id: int = Field(description="The audit-log entry recording the deletion.")

    @classmethod
    def of(cls, report: ForgetReport) -> UserDeletedOut:
        """From the store's report."""
        return cls(deleted=report.user_id, rows=report.deleted, audit_id=report.audit_id)


class ExportProfileOut(BaseModel):
    """The stored profile."""

    profile: str = Field(description="The profile as stored: PII replaced by placeholders.")
    profile_raw: str | None = Field(
        description="The profile as typed, when the server keeps raw text (stored encrypted) and holds its key."
    )
    raw_stored_encrypted: bool = Field(description="Whether the raw profile is stored (encrypted).")
    attributes: dict[str, Any]


class ExportTurnOut(BaseModel):
    """One message of a stored conversation."""

    role: str | None
    text: str | None = Field(description="As stored (a user's message scrubbed).")
    items: list[str]
    raw: str | None = Field(description="The message as typed, when kept (stored encrypted).")


class ExportSessionOut(BaseModel):
    """A stored conversation."""

    session_id: str
    created_at: datetime
    updated_at: datetime
    state: dict[str, Any]
    turns: list[ExportTurnOut]


class ExportKeyOut(BaseModel):
    """An API key of the user (its hash is never shown)."""

    key_id: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class AuditEntryOut(BaseModel):
    """One audit-log entry."""

    id: int
    at: datetime
    action: str = Field(description="`delete_user` or `export_user`.")
    actor: str = Field(description="`admin`, `key:<key id>` or `cli`.")
    detail: dict[str, Any] = Field(description="Counts of rows deleted or exported.")
    subject_digest: str | None = Field(
        default=None,
        description="SHA-256 of a per-entry salt, the dataset and the user id: the log never holds the id itself.",
    )

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntryOut:
        """From a store record."""
        return cls(
            id=record.id,
            at=record.at,
            action=record.action,
            actor=record.actor,
            detail=record.detail,
            subject_digest=record.subject_digest,
        )


class UserExportOut(BaseModel):
    """Everything stored about a user."""

    dataset: str
    user_id: str
    profile: ExportProfileOut | None = Field(description="`null` when the user has no row in the users table.")
    interactions: list[InteractionOut] = Field(description="Every interaction and piece of feedback, oldest first.")
    chat_sessions: list[ExportSessionOut]
    api_keys: list[ExportKeyOut]
    audit: list[AuditEntryOut] = Field(description="Earlier exports of this user's data.")
    in_fitted_model: bool = Field(description="Whether the model now serving was fitted on data holding the user.")
    fitted_at: datetime


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    entries: list[AuditEntryOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None
