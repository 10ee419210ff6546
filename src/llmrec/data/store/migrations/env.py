"""Alembic environment of the llmrec store, run programmatically by ``llmrec.data.store.Store.migrate``.

``Store`` hands over an open connection in ``config.attributes["connection"]``, so no ``alembic.ini`` is needed.
For development (e.g. ``alembic revision --autogenerate``) a URL may instead come from the ``sqlalchemy.url``
option or ``LLMREC_DB_URL``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from llmrec.data.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection given by ``Store``, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from llmrec.config import get_settings

    url = config.get_main_option("sqlalchemy.url") or get_settings().db_url
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the llmrec store migrations run online only (Store.migrate())")
run_migrations_online()
