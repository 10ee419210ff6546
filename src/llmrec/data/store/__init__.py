"""The SQL store of datasets: SQLite by default, PostgreSQL by URL, with the schema migrated by alembic.

``Store`` is the one entry point: ingest (validated, bulk, idempotent, transactional), load, list, delete.
The alembic environment ships in ``migrations/`` inside this package and runs from ``Store.migrate()``.
"""

from llmrec.data.store.core import IngestReport, Store

__all__ = ["IngestReport", "Store"]
