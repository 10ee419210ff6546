"""API keys may expire: an optional ``expires_at`` per key (a key past it answers 401, like a revoked one).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``api_keys.expires_at`` (existing keys never expire)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ``api_keys.expires_at``."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
