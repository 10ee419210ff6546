"""Initial schema: datasets, items, users, interactions.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four tables and the interaction indexes."""
    op.create_table(
        "datasets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_datasets"),
    )
    op.create_table(
        "items",
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_items_dataset_datasets", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset", "item_id", name="pk_items"),
    )
    op.create_table(
        "users",
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name="fk_users_dataset_datasets", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset", "user_id", name="pk_users"),
    )
    op.create_table(
        "interactions",
        sa.Column("id", _BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset"], ["datasets.name"], name="fk_interactions_dataset_datasets", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_interactions"),
        sa.UniqueConstraint("dataset", "user_id", "item_id", "timestamp", "event", name="uq_interactions_key"),
    )
    op.create_index("ix_interactions_dataset_time", "interactions", ["dataset", "timestamp"])
    op.create_index("ix_interactions_user_time", "interactions", ["dataset", "user_id", "timestamp"])


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_index("ix_interactions_user_time", table_name="interactions")
    op.drop_index("ix_interactions_dataset_time", table_name="interactions")
    op.drop_table("interactions")
    op.drop_table("users")
    op.drop_table("items")
    op.drop_table("datasets")
