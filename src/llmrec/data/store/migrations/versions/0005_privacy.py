"""Privacy: the encrypted raw profile beside the scrubbed one, and the audit log of deletions and exports.

``users.profile_raw`` holds the profile as typed, as a Fernet token, only when a deployment keeps raw text
(``LLMREC_KEEP_RAW_TEXT``); ``users.profile`` always holds the scrubbed text. ``audit_log`` records who deleted or
exported a user's data and when; it names the user by a salted SHA-256 only, so a deleted user leaves no id behind.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add ``users.profile_raw`` and create ``audit_log``."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("profile_raw", sa.Text(), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("subject_salt", sa.String(32), nullable=False),
        sa.Column("subject_digest", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_dataset_at", "audit_log", ["dataset", "at"])


def downgrade() -> None:
    """Drop ``audit_log`` and ``users.profile_raw``."""
    op.drop_index("ix_audit_log_dataset_at", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("profile_raw")
