"""Model versions: the published fitted pipelines of each dataset, which every serving worker switches to.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``model_versions`` table (one row per published version; unique per dataset and number)."""
    op.create_table(
        "model_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("store_marker", sa.BigInteger(), nullable=False),
        sa.Column("audit_marker", sa.BigInteger(), nullable=False),
        sa.Column("audit_gaps", sa.JSON(), nullable=False),
        sa.Column("retrievers", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], name="fk_model_versions_dataset_datasets", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("dataset", "version", name="uq_model_versions_version"),
    )


def downgrade() -> None:
    """Drop the ``model_versions`` table."""
    op.drop_table("model_versions")
