"""Embedding cache: one vector per (encoder model, exact text).

The key is the encoder's ``model_id`` (model plus every setting that changes its output) and the sha256 of the
exact text, so unchanged text is never embedded twice and any change to the text or the model misses the cache.
Vectors are float32 little-endian bytes (``BLOB`` in SQLite, ``BYTEA`` in PostgreSQL), ``dim`` values long.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``embeddings`` table."""
    op.create_table(
        "embeddings",
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "text_hash", name="pk_embeddings"),
    )


def downgrade() -> None:
    """Drop the ``embeddings`` table."""
    op.drop_table("embeddings")
