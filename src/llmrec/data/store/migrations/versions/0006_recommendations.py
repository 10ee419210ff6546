"""Recommendations: precomputed top-k lists of batch runs (``llmrec batch recommend``), one row per list slot.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``recommendations`` table."""
    op.create_table(
        "recommendations",
        sa.Column("run", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("run", "user_id", "rank", name="pk_recommendations"),
    )
    op.create_index("ix_recommendations_dataset_user", "recommendations", ["dataset", "user_id"])


def downgrade() -> None:
    """Drop the ``recommendations`` table."""
    op.drop_index("ix_recommendations_dataset_user", table_name="recommendations")
    op.drop_table("recommendations")
