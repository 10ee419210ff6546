"""The SQL store of datasets: SQLite by default, PostgreSQL by URL, with the schema migrated by alembic.

``Store`` is the one entry point: ingest (validated, bulk, idempotent, transactional), load, list, delete, and
single-record access (get, page, search, update, delete; API keys) for the HTTP API, and a user's data deleted
or exported with an audit log (:mod:`llmrec.data.store.subjects`).
The alembic environment ships in ``migrations/`` inside this package and runs from ``Store.migrate()``.
"""

from llmrec.data.store.core import IngestReport, Store
from llmrec.data.store.records import ApiKeyRecord, ItemRecord, Page, UserRecord
from llmrec.data.store.subjects import AuditRecord, ForgetReport
from llmrec.data.store.versions import AuditMark, Deletion, ModelVersion

__all__ = [
    "ApiKeyRecord",
    "AuditMark",
    "AuditRecord",
    "Deletion",
    "ForgetReport",
    "IngestReport",
    "ItemRecord",
    "ModelVersion",
    "Page",
    "Store",
    "UserRecord",
]
