"""The SQL store: datasets kept in SQLite (the default, a file) or PostgreSQL, written in bulk and read back whole.

Ingest is one transaction. Interactions are streamed: each validated chunk goes into a temporary staging table
(``executemany`` on SQLite, ``COPY`` on PostgreSQL), then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
moves them into ``interactions`` in input order; items and users are validated whole and inserted in chunks. A
problem in the data or a database failure at any point (a kill -9 included) rolls the whole batch back, so
earlier data stay as they were. Because rows already present are skipped, ingesting the same file twice is
harmless and reports 0 inserted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from llmrec.config import get_settings
from llmrec.data.dataset import Dataset
from llmrec.data.files import validate_safely
from llmrec.data.schema import INTERACTION_COLUMNS, validate_interactions, validate_items, validate_users
from llmrec.data.store.models import (
    ApiKeyRow,
    Base,
    ChatSessionRow,
    DatasetRow,
    InteractionRow,
    ItemRow,
    RecommendationRow,
    UserRow,
)
from llmrec.data.store.records import RecordAccess
from llmrec.data.store.subjects import SubjectAccess
from llmrec.data.store.versions import VersionAccess
from llmrec.errors import ConfigError, DataProblem, DataValidationError, StoreError
from llmrec.progress import progress_group

if TYPE_CHECKING:
    from llmrec.privacy.at_rest import TextProtection

__all__ = ["IngestReport", "Store"]

logger = logging.getLogger(__name__)
# alembic keeps its migration context in module globals: one upgrade at a time in this process, whatever store.
_MIGRATE_LOCK = threading.RLock()

_ADVISORY_LOCK = 0x6C6C6D726563  # "llmrec": serialises concurrent migrations on one PostgreSQL database
_DRIVER_HINT = {
    "postgresql": "install the PostgreSQL driver: pip install 'llmrec[postgres]' (psycopg 3)",
}


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did.

    Attributes:
        dataset: Name of the dataset written to.
        inserted: Rows written (over all tables of this report).
        skipped: Rows skipped because an identical key was already stored (re-ingest is idempotent).
        by_table: ``{"interactions": (inserted, skipped), ...}`` for each table touched.

    """

    dataset: str
    inserted: int = 0
    skipped: int = 0
    by_table: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows offered (inserted + skipped)."""
        return self.inserted + self.skipped

    def __add__(self, other: IngestReport) -> IngestReport:
        if other.dataset != self.dataset:
            raise ValueError("cannot add reports of different datasets")
        by_table = dict(self.by_table)
        for table, (ins, skip) in other.by_table.items():
            old = by_table.get(table, (0, 0))
            by_table[table] = (old[0] + ins, old[1] + skip)
        return IngestReport(self.dataset, self.inserted + other.inserted, self.skipped + other.skipped, by_table)

    def __str__(self) -> str:
        parts = ", ".join(f"{t}: {i} new, {s} already stored" for t, (i, s) in self.by_table.items())
        return f"dataset '{self.dataset}': {self.inserted} row(s) inserted, {self.skipped} already stored ({parts})"


# -- values <-> JSON ---------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    """A JSON-serialisable copy of an attribute value: NaN/NA/NaT become null, numpy scalars Python ones."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray | pd.Series):
        return [_json_safe(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    return str(value)


def _attribute_records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON object per row, holding the row's attribute columns (nulls kept, so columns survive)."""
    if not columns:
        return [{} for _ in range(len(frame))]
    values = {str(c): frame[c].tolist() for c in columns}
    return [{c: _json_safe(values[c][i]) for c in values} for i in range(len(frame))]


def _attribute_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Columns from attribute objects; all-integer columns with gaps become ``Int64`` rather than float."""
    keys: dict[str, None] = {}
    for rec in records:
        keys.update(dict.fromkeys(rec))
    columns: dict[str, Any] = {}
    for key in keys:
        values = [rec.get(key) for rec in records]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            columns[key] = pd.array(values, dtype="Int64")
        elif present and all(isinstance(v, dict | list) for v in present):
            columns[key] = pd.Series(values, dtype=object)
        else:
            columns[key] = pd.Series(values)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


# -- the store ---------------------------------------------------------------------------------------------
class Store(RecordAccess, SubjectAccess, VersionAccess):
    """Datasets in a SQL database (SQLite file by default, PostgreSQL by URL), migrated on first use.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///data/llmrec.db`` or
            ``postgresql+psycopg://user:password@host:5432/db``; ``get_settings().db_url`` (``LLMREC_DB_URL``)
            when ``None``. The folder of a SQLite file is created when missing.
        chunk_size: Rows per bulk insert statement batch.
        protection: How user profiles are stored: scrubbed, and the raw text encrypted only when configured
            (:class:`~llmrec.privacy.TextProtection`; from the settings, ``LLMREC_KEEP_RAW_TEXT`` and
            ``LLMREC_PII_KEY``, when ``None``). Every way a profile enters the store goes through it.

    Raises:
        StoreError: The URL is malformed, names an unsupported database, or its driver is not installed.

    Example:
        >>> store = Store("sqlite:///:memory:")
        >>> store.ingest(load_movielens())  # doctest: +SKIP
        >>> data = store.load("movielens-small")  # doctest: +SKIP

    """

    def __init__(
        self, url: str | URL | None = None, *, chunk_size: int = 10_000, protection: TextProtection | None = None
    ) -> None:
        raw = url if url is not None else get_settings().db_url
        self._protection = protection
        try:
            self._url = make_url(raw)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise StoreError(
                f"'{_mask(str(raw))}' is not a database URL ({exc}). Fix: use e.g. sqlite:///path/to/llmrec.db or "
                "postgresql+psycopg://user:password@host:5432/db (LLMREC_DB_URL)"
            ) from exc
        if chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1")
        self.chunk_size = chunk_size
        backend = self._url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"the store supports SQLite and PostgreSQL, not '{backend}' ({self.display_url}). "
                "Fix: use a sqlite:/// or postgresql+psycopg:// URL"
            )
        connect_args: dict[str, Any] = {}
        if backend == "sqlite":
            self._prepare_sqlite_file()
            connect_args["timeout"] = 30  # wait for a writer in another process instead of failing at once
        elif "connect_timeout" not in self._url.query:
            connect_args["connect_timeout"] = 10
        try:
            self._engine = sa.create_engine(self._url, connect_args=connect_args, pool_pre_ping=backend != "sqlite")
        except ImportError as exc:
            raise StoreError(
                f"no database driver for {self.display_url} ({exc}). "
                f"Fix: {_DRIVER_HINT.get(backend, 'install its driver')}"
            ) from exc
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise StoreError(f"cannot use {self.display_url}: {exc}. Fix: check the URL (LLMREC_DB_URL)") from exc
        if backend == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_on_connect)
            sa.event.listen(self._engine, "begin", _sqlite_on_begin)
        self._migrated = False

    # -- plumbing -------------------------------------------------------------------------------------
    @property
    def protection(self) -> TextProtection:
        """How user-written text is stored (scrubbed; raw text encrypted when kept); from the settings by default."""
        if self._protection is None:
            from llmrec.privacy.at_rest import TextProtection

            self._protection = TextProtection.from_settings()
        return self._protection

    def _user_rows(self, name: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Rows of the users table, the profile scrubbed (and, when raw text is kept, encrypted beside it).

        The scrubber sees the profile exactly as it arrived, before anything else touches it.
        """
        rows = _entity_rows(name, frame, "user_id", ("profile",))
        protection = self.protection
        for row in rows:
            stored = protection.protect(row["profile"])
            row["profile"], row["profile_raw"] = stored.text, stored.raw
        return rows

    @property
    def display_url(self) -> str:
        """The database URL with its password masked (safe to log or show)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for queries the store has no method for)."""
        return self._engine

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection (the store can still be used; it reconnects)."""
        self._engine.dispose()

    def _prepare_sqlite_file(self) -> None:
        database = self._url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the SQLite file {database} ({exc.strerror or exc}). "
                "Fix: choose a writable location in LLMREC_DB_URL"
            ) from exc

    def _detail(self, exc: BaseException) -> str:
        """The first line of the driver's message, with the password masked."""
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc).strip()
        return _mask(text.splitlines()[0] if text else type(exc).__name__, self._url.password)

    @contextlib.contextmanager
    def _begin(self, action: str) -> Iterator[sa.Connection]:
        """A connection in one transaction; database errors become :class:`StoreError` after rollback."""
        try:
            conn = self._engine.connect()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StoreError(
                f"cannot connect to the database at {self.display_url}: {self._detail(exc)}. Fix: check that the "
                "server is running and reachable, and that the URL, user and password (LLMREC_DB_URL) are right"
            ) from exc
        try:
            with conn, conn.begin():
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"could not {action} at {self.display_url}: {self._detail(exc)}. It was rolled back: "
                "nothing of it was stored. Fix: check the database (disk space, permissions, schema version) and retry"
            ) from exc

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sa.Connection]:
        self.ensure_migrated()
        with self._begin(action) as conn:
            yield conn

    def ensure_migrated(self) -> None:
        """Migrate once per store object (what every read and write does first); cheap after the first call.

        Safe from many threads at once (a server's request threads): one runs the migration, the others wait.
        """
        if self._migrated:
            return
        with _MIGRATE_LOCK:
            if not self._migrated:
                self.migrate()

    def migrate(self) -> None:
        """Bring the database schema to the newest version (alembic ``upgrade head``); safe to call again.

        Runs by itself before the first read or write of this store, so calling it is only needed to prepare a
        database ahead of time.

        Raises:
            StoreError: The database cannot be reached or migrated.

        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_migrations_dir()).replace("%", "%%"))
        with _MIGRATE_LOCK, self._begin("migrate the schema") as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except sa.exc.SQLAlchemyError:
                raise
            except Exception as exc:  # alembic's own errors (e.g. a revision this version does not know)
                raise StoreError(
                    f"could not migrate the database at {self.display_url}: {exc}. Fix: use the llmrec version that "
                    "created this database, or point LLMREC_DB_URL at a new one"
                ) from exc
        self._migrated = True
        logger.debug("store %s is at the newest schema", self.display_url)

    # -- writing --------------------------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()

    def _write_rows(
        self,
        conn: sa.Connection,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        advance: Callable[[int], None],
    ) -> int:
        """Insert ``rows`` in chunks, skipping those whose key is stored; returns the number inserted."""
        stmt = self._insert(table)
        # executemany per chunk (sqlite3 and psycopg both batch it; psycopg pipelines a prepared statement);
        # preserve_rowcount keeps the driver's count of rows actually inserted (conflicts count 0).
        options = {"preserve_rowcount": True}
        inserted = 0
        for start in range(0, len(rows), self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            inserted += conn.execute(stmt, chunk, execution_options=options).rowcount
            advance(len(chunk))
        return inserted

    @staticmethod
    def _number(conn: sa.Connection, table: str, name: str, rows: list[dict[str, Any]]) -> None:
        """Give new item/user rows positions after those stored, so loads keep the catalogue's order."""
        model = ItemRow if table == "items" else UserRow
        stmt = sa.select(sa.func.coalesce(sa.func.max(model.position) + 1, 0)).where(model.dataset == name)
        start = int(conn.execute(stmt).scalar_one())
        for i, row in enumerate(rows):
            row["position"] = start + i

    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a dataset name must be a non-empty string, got {name!r}")
        return name.strip()

    def _ingest_tables(
        self,
        name: str,
        tables: Mapping[str, list[dict[str, Any]]],
        show_progress: bool,
        interactions: Iterable[tuple[pd.DataFrame, np.ndarray]] | None = None,
        *,
        source: str = "<dataframe>",
        columns: Mapping[str, str] | None = None,
    ) -> IngestReport:
        """Write already-validated rows of several tables, and interaction chunks, in one transaction.

        ``interactions`` yields canonical frames with the line of each row (a stream that validates as it reads
        may raise at its end: then the whole transaction rolls back); ``source`` and ``columns`` (canonical
        field -> the file's column) name the file in problems the store finds (duplicates across chunks).
        """
        report = IngestReport(name)
        with progress_group(show_progress) as add_bar, self._transaction(f"store dataset '{name}'") as conn:
            conn.execute(self._insert(Base.metadata.tables["datasets"]), {"name": name})
            for table in ("items", "users"):
                if table not in tables:
                    continue
                rows = tables[table]
                self._number(conn, table, name, rows)
                advance = add_bar(f"{name}: {table}", len(rows))
                inserted = self._write_rows(conn, Base.metadata.tables[table], rows, advance)
                report = report + IngestReport(
                    name, inserted, len(rows) - inserted, {table: (inserted, len(rows) - inserted)}
                )
            if interactions is not None:
                advance = add_bar(f"{name}: interactions", None)
                inserted, offered = _write_interactions(conn, name, interactions, advance, source, columns or {})
                report = report + IngestReport(
                    name, inserted, offered - inserted, {"interactions": (inserted, offered - inserted)}
                )
        logger.info("%s", report)
        return report

    def ingest_interactions(self, dataset: str, df: pd.DataFrame, *, show_progress: bool = False) -> IngestReport:
        """Validate interactions and store them under ``dataset``, skipping rows already stored.

        Args:
            dataset: Dataset name (created when new).
            df: Frame with at least ``user_id``, ``item_id``, ``timestamp`` (see :mod:`llmrec.data.schema`).
            show_progress: Show a progress bar.

        Returns:
            Counts of rows inserted and skipped as already stored.

        Raises:
            DataValidationError: ``df`` has problems; nothing was stored.
            StoreError: The database failed; nothing of this call was stored.

        """
        name = self._check_name(dataset)
        frame = _validated(validate_interactions, df)
        return self._ingest_tables(name, {}, show_progress, self._frame_chunks(frame))

    def ingest_items(self, dataset: str, df: pd.DataFrame, *, show_progress: bool = False) -> IngestReport:
        """Validate items and store them under ``dataset``; stored items (same id) are kept as they are.

        Columns other than ``item_id``, ``title`` and ``text`` are stored as JSON attributes.

        Raises:
            DataValidationError: ``df`` has problems; nothing was stored.
            StoreError: The database failed; nothing of this call was stored.

        """
        name = self._check_name(dataset)
        rows = _entity_rows(name, _validated(validate_items, df), "item_id", ("title", "text"))
        return self._ingest_tables(name, {"items": rows}, show_progress)

    def ingest_users(self, dataset: str, df: pd.DataFrame, *, show_progress: bool = False) -> IngestReport:
        """Validate users and store them under ``dataset``; stored users (same id) are kept as they are.

        Columns other than ``user_id`` and ``profile`` are stored as JSON attributes.

        Raises:
            DataValidationError: ``df`` has problems; nothing was stored.
            StoreError: The database failed; nothing of this call was stored.

        """
        name = self._check_name(dataset)
        rows = self._user_rows(name, _validated(validate_users, df))
        return self._ingest_tables(name, {"users": rows}, show_progress)

    def ingest(self, dataset: Dataset, *, name: str | None = None, show_progress: bool = False) -> IngestReport:
        """Store a whole :class:`Dataset` (items, users, interactions) in one transaction.

        The items and users tables are stored whole and in vocabulary order, so :meth:`load` gives back the
        same dataset with the same dense indices.

        Args:
            dataset: The dataset; stored under ``dataset.name`` unless ``name`` is given.
            name: Store under this name instead.
            show_progress: Show a progress bar.

        Raises:
            StoreError: The database failed; nothing of this call was stored.

        """
        key = self._check_name(name or dataset.name)
        tables = {
            "items": _entity_rows(key, dataset.items, "item_id", ("title", "text")),
            "users": self._user_rows(key, dataset.users),
        }
        return self._ingest_tables(key, tables, show_progress, self._frame_chunks(dataset.interactions))

    def _frame_chunks(self, frame: pd.DataFrame) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """A validated interactions frame in chunks of ``chunk_size`` rows, with 1-based row numbers."""
        for start in range(0, len(frame), self.chunk_size):
            part = frame.iloc[start : start + self.chunk_size]
            yield part, np.arange(start + 1, start + 1 + len(part), dtype=np.int64)

    def ingest_files(
        self,
        name: str,
        interactions_path: str | Path | None = None,
        items_path: str | Path | None = None,
        users_path: str | Path | None = None,
        mapping: Mapping[str, str] | None = None,
        *,
        item_mapping: Mapping[str, str] | None = None,
        user_mapping: Mapping[str, str] | None = None,
        format: str | None = None,
        delimiter: str | None = None,
        value_range: tuple[float, float] | None = None,
        default_event: str = "interaction",
        show_progress: bool = False,
        block_bytes: int | None = None,
    ) -> IngestReport:
        """Read, validate and store a dataset's files in one transaction: all or nothing.

        The items and users files (catalogues, read whole) are validated before anything is written; the
        interactions file is streamed (:mod:`llmrec.data.stream`): read in blocks, each validated and written to
        a staging table, then moved into ``interactions`` with one ``INSERT ... SELECT ... ON CONFLICT DO
        NOTHING`` (PostgreSQL loads the staging table with ``COPY``). Memory stays that of one block. A problem
        anywhere rolls the whole transaction back, so a bad file stores nothing, and every problem of the file
        (up to 50) is reported at once. Any one file may be given alone (an items-only update, say).

        Args:
            name: Dataset name (created when new).
            interactions_path: The interactions file, or ``None``.
            items_path: The items file, or ``None``.
            users_path: The users file, or ``None``.
            mapping: Canonical field -> column, for every file where the column exists.
            item_mapping: Mapping for the items file only.
            user_mapping: Mapping for the users file only.
            format: Format of every file, overriding the suffixes.
            delimiter: CSV/TSV delimiter; sniffed from each file when ``None``.
            value_range: The dataset's declared rating scale ``(low, high)``: values outside are problems.
            default_event: Event type of interactions without an ``event`` column.
            show_progress: Show a progress bar.
            block_bytes: Bytes of the interactions file read at a time (default 1 MiB).

        Raises:
            DataValidationError: A file has problems (file, line, field and fix are named); nothing was stored.
            StoreError: The database failed; nothing of this call was stored.
            ConfigError: No file given, or a mapping, format or delimiter is invalid.

        """
        from llmrec.data.files import read_entity_tables
        from llmrec.data.stream import DEFAULT_BLOCK_BYTES, stream_interactions

        key = self._check_name(name)
        if interactions_path is None and items_path is None and users_path is None:
            raise ConfigError(
                "nothing to ingest", field="interactions", fix="give an interactions, items or users file"
            )
        mapping = dict(mapping or {})
        stream = None
        if interactions_path is not None:  # opening it checks its header: a wrong column fails before any reading
            stream = stream_interactions(
                interactions_path,
                {k: v for k, v in mapping.items() if k in INTERACTION_COLUMNS},
                format=format,
                delimiter=delimiter,
                value_range=value_range,
                default_event=default_event,
                block_bytes=block_bytes or DEFAULT_BLOCK_BYTES,
            )
        try:
            items, users = read_entity_tables(
                items_path,
                users_path,
                mapping,
                item_mapping=item_mapping,
                user_mapping=user_mapping,
                format=format,
                delimiter=delimiter,
            )
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        tables: dict[str, list[dict[str, Any]]] = {}
        if items is not None:
            tables["items"] = _entity_rows(key, items, "item_id", ("title", "text"))
        if users is not None:
            tables["users"] = self._user_rows(key, users)
        if stream is None:
            return self._ingest_tables(key, tables, show_progress)
        return self._ingest_tables(key, tables, show_progress, stream, source=stream.source, columns=stream.mapping)

    # -- reading --------------------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        """Names of the stored datasets, sorted."""
        with self._transaction("list datasets") as conn:
            return list(conn.execute(sa.select(DatasetRow.name).order_by(DatasetRow.name)).scalars())

    def counts(self, name: str) -> dict[str, int]:
        """Rows stored for dataset ``name`` in each table (all zero when it is not stored)."""
        out: dict[str, int] = {}
        with self._transaction(f"count rows of '{name}'") as conn:
            for model, table in ((ItemRow, "items"), (UserRow, "users"), (InteractionRow, "interactions")):
                stmt = sa.select(sa.func.count()).select_from(model).where(model.dataset == name)
                out[table] = int(conn.execute(stmt).scalar_one())
        return out

    def load(self, name: str) -> Dataset:
        """The stored dataset ``name`` as a :class:`Dataset`.

        Items and users come back in the order they were first stored, with their JSON attributes as columns;
        interactions are read in the order they were stored, which :class:`Dataset` sorts by time (ties keep
        that order). So a dataset stored with :meth:`ingest` loads with the same vocabularies and dense indices,
        and one stored with :meth:`ingest_files` loads as :func:`~llmrec.data.files.read_dataset` reads it.

        Raises:
            StoreError: No dataset of that name is stored, or the database failed.

        """
        with self._transaction(f"load dataset '{name}'") as conn:
            exists = conn.execute(sa.select(DatasetRow.name).where(DatasetRow.name == name)).first()
            if exists is None:
                have = list(conn.execute(sa.select(DatasetRow.name).order_by(DatasetRow.name)).scalars())
                raise StoreError(
                    f"no dataset '{name}' in the store at {self.display_url} (stored: {have or 'none'}). "
                    "Fix: ingest it first (llmrec ingest), or use one of the stored names"
                )
            inter_rows = conn.execute(
                sa.select(
                    InteractionRow.user_id,
                    InteractionRow.item_id,
                    InteractionRow.timestamp,
                    InteractionRow.value,
                    InteractionRow.event,
                )
                .where(InteractionRow.dataset == name)
                .order_by(InteractionRow.id)
            ).all()
            item_rows = conn.execute(
                sa.select(ItemRow.item_id, ItemRow.title, ItemRow.text, ItemRow.attributes)
                .where(ItemRow.dataset == name)
                .order_by(ItemRow.position, ItemRow.item_id)
            ).all()
            user_rows = conn.execute(
                sa.select(UserRow.user_id, UserRow.profile, UserRow.attributes)
                .where(UserRow.dataset == name)
                .order_by(UserRow.position, UserRow.user_id)
            ).all()
        interactions = _frame(inter_rows, INTERACTION_COLUMNS)
        interactions = interactions.astype({"timestamp": "int64", "value": "float64"})
        items = _entity_frame(item_rows, "item_id", ("title", "text"))
        users = _entity_frame(user_rows, "user_id", ("profile",))
        return Dataset(interactions, items, users, name=name, validate=False)

    def delete_dataset(self, name: str) -> bool:
        """Delete dataset ``name`` and all its rows in one transaction; returns whether it was stored."""
        with self._transaction(f"delete dataset '{name}'") as conn:
            for model in (InteractionRow, ItemRow, UserRow, ApiKeyRow, ChatSessionRow):
                conn.execute(sa.delete(model).where(model.dataset == name))
            deleted = conn.execute(sa.delete(DatasetRow).where(DatasetRow.name == name)).rowcount
        logger.info("deleted dataset '%s' from %s", name, self.display_url)
        return bool(deleted)

    # -- precomputed recommendations (batch runs) ---------------------------------------------------------------
    def replace_recommendations(self, run: str, dataset: str, frames: Iterable[pd.DataFrame]) -> int:
        """Store the top-k lists of batch run ``run`` in one transaction, replacing an earlier run of that name.

        Args:
            run: The run's name (what :meth:`recommendations` reads back).
            dataset: The name of the data the model was fitted on.
            frames: Long frames ``user_id, rank, item_id, score`` (as
                :meth:`~llmrec.models.base.Recommendations.to_frame` gives), written as they come.

        Returns:
            Rows written.

        Raises:
            StoreError: The database failed; the earlier run of that name is left as it was.

        """
        run = self._check_name(run)
        table = Base.metadata.tables["recommendations"]
        written = 0
        with self._transaction(f"store recommendations '{run}'") as conn:
            conn.execute(sa.delete(RecommendationRow).where(RecommendationRow.run == run))
            for frame in frames:
                if not len(frame):
                    continue
                rows = [
                    {"run": run, "dataset": dataset, "user_id": u, "rank": r, "item_id": i, "score": s}
                    for u, r, i, s in zip(
                        frame["user_id"].astype(str).tolist(),
                        frame["rank"].astype("int64").tolist(),
                        frame["item_id"].astype(str).tolist(),
                        frame["score"].astype("float64").tolist(),
                        strict=True,
                    )
                ]
                for start in range(0, len(rows), self.chunk_size):
                    conn.execute(sa.insert(table), rows[start : start + self.chunk_size])
                written += len(rows)
        logger.info("stored %d recommendation rows of run '%s' in %s", written, run, self.display_url)
        return written

    def recommendations(self, run: str) -> pd.DataFrame:
        """The stored lists of batch run ``run``: ``user_id, rank, item_id, score``, by user id then rank.

        Raises:
            ConfigError: No run of that name is stored (the message lists the stored runs).

        """
        columns = [
            RecommendationRow.user_id,
            RecommendationRow.rank,
            RecommendationRow.item_id,
            RecommendationRow.score,
        ]
        with self._transaction(f"read recommendations '{run}'") as conn:
            rows = conn.execute(
                sa.select(*columns)
                .where(RecommendationRow.run == run)
                .order_by(RecommendationRow.user_id, RecommendationRow.rank)
            ).all()
            if not rows:
                runs = conn.execute(sa.select(RecommendationRow.run).distinct()).scalars().all()
                raise ConfigError(
                    f"no recommendations of run {run!r} in {self.display_url}",
                    field="run",
                    fix=f"use one of the stored runs ({', '.join(sorted(runs)) or 'none'}), or run a batch job first",
                )
        frame = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])
        return frame.astype({"user_id": object, "item_id": object, "rank": "int64", "score": "float64"})


# -- helpers -----------------------------------------------------------------------------------------------
def _migrations_dir() -> Path:
    return Path(str(resources.files("llmrec.data.store") / "migrations"))


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Enforce foreign keys, and leave transactions to SQLAlchemy (see :func:`_sqlite_on_begin`)."""
    dbapi_connection.isolation_level = None  # sqlite3 would otherwise run DDL outside any transaction
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    """Start a real transaction, so migrations (DDL) roll back as a whole too (SQLAlchemy's pysqlite recipe).

    ``IMMEDIATE`` takes the write lock at the start: a deferred transaction that reads and then writes while
    another writes cannot wait for it (SQLite answers "database is locked" at once, whatever the busy timeout), so
    concurrent API writes failed with 503. Now a transaction waits its turn (up to the connection's 30 s timeout).
    Every transaction takes the lock, reads too, so SQLite serves one transaction at a time; many concurrent
    writers are what PostgreSQL is for.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _mask(text: str, password: str | None = None) -> str:
    """``text`` with the password of any URL in it (and ``password`` itself) replaced by ``***``."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    if password:
        text = text.replace(password, "***")
    return text


def _validated(validate: Callable[..., pd.DataFrame], df: pd.DataFrame) -> pd.DataFrame:
    """Validate an in-memory frame; problems name the 1-based row (there is no file line)."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"expected a pandas DataFrame, got {type(df).__name__}")
    return validate_safely(validate, df, "<dataframe>", np.arange(1, len(df) + 1))


_STAGE = "llmrec_ingest_stage"


def _write_interactions(
    conn: sa.Connection,
    name: str,
    chunks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    advance: Callable[[int], None],
    source: str,
    columns: Mapping[str, str],
) -> tuple[int, int]:
    """Stage validated interaction chunks, then move them into ``interactions`` with one statement.

    The staging table is temporary and lives in the caller's transaction: SQLite gets each chunk through one
    ``executemany``, PostgreSQL through ``COPY``. The final ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` keeps
    the file's order (so loads number rows as the file does) and skips rows already stored (re-ingest is
    harmless). Rows repeated inside the input are a problem, found here across chunks (each chunk checked its
    own): when fewer rows went in than were offered, the staging table is searched for repeated keys.

    Returns:
        ``(inserted, offered)``.

    Raises:
        DataValidationError: The input repeats rows (line of each repeat, up to 50); the caller rolls back.

    """
    postgres = conn.dialect.name == "postgresql"
    raw = conn.connection.driver_connection
    assert raw is not None
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {'pg_temp' if postgres else 'temp'}.{_STAGE}")  # never a real table
    if postgres:
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {_STAGE} (line BIGINT, user_id TEXT, item_id TEXT, timestamp BIGINT, "
            "value DOUBLE PRECISION, event TEXT) ON COMMIT DROP"
        )
    else:
        conn.exec_driver_sql("PRAGMA cache_size=-16384")  # 16 MiB of pages for the index inserts; more is RSS
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {_STAGE} (line INTEGER PRIMARY KEY, user_id TEXT, item_id TEXT, timestamp INTEGER, "
            "value REAL, event TEXT)"
        )
    offered = 0
    for frame, lines in chunks:
        if not len(frame):
            continue
        if postgres:
            _copy_chunk(raw, frame, lines)
        else:
            rows = zip(
                lines.tolist(),
                frame["user_id"].astype(str).tolist(),
                frame["item_id"].astype(str).tolist(),
                frame["timestamp"].astype("int64").tolist(),
                frame["value"].astype("float64").tolist(),
                frame["event"].astype(str).tolist(),
                strict=True,
            )
            cursor = raw.cursor()
            try:
                cursor.executemany(f"INSERT INTO {_STAGE} VALUES (?, ?, ?, ?, ?, ?)", rows)
            finally:
                cursor.close()
        offered += len(frame)
        advance(len(frame))
    result = conn.exec_driver_sql(
        "INSERT INTO interactions (dataset, user_id, item_id, timestamp, value, event) "
        f"SELECT %(name)s, user_id, item_id, timestamp, value, event FROM {_STAGE} WHERE true ORDER BY line "
        "ON CONFLICT DO NOTHING"
        if postgres
        else "INSERT INTO interactions (dataset, user_id, item_id, timestamp, value, event) "
        f"SELECT ?, user_id, item_id, timestamp, value, event FROM {_STAGE} WHERE true ORDER BY line "
        "ON CONFLICT DO NOTHING",
        {"name": name} if postgres else (name,),
    )
    inserted = max(int(result.rowcount), 0)
    if inserted < offered:
        _raise_repeats(conn, source, columns)
    if not postgres:
        conn.exec_driver_sql(f"DROP TABLE temp.{_STAGE}")
        conn.exec_driver_sql("PRAGMA cache_size=-2000")
    return inserted, offered


def _copy_chunk(raw: Any, frame: pd.DataFrame, lines: np.ndarray) -> None:
    """One chunk into the staging table through PostgreSQL's ``COPY ... FROM STDIN (FORMAT csv)``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {
            "line": pa.array(lines, pa.int64()),
            "user_id": pa.array(frame["user_id"].astype(str).to_numpy(object), pa.string()),
            "item_id": pa.array(frame["item_id"].astype(str).to_numpy(object), pa.string()),
            "timestamp": pa.array(frame["timestamp"].to_numpy("int64"), pa.int64()),
            "value": pa.array(frame["value"].to_numpy("float64"), pa.float64()),
            "event": pa.array(frame["event"].astype(str).to_numpy(object), pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    # Every value quoted: an empty string stays an empty string (unquoted empty means NULL in COPY's CSV).
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    with raw.cursor() as cursor, cursor.copy(f"COPY {_STAGE} FROM STDIN (FORMAT csv)") as copy:
        copy.write(sink.getvalue().to_pybytes())


def _raise_repeats(conn: sa.Connection, source: str, columns: Mapping[str, str]) -> None:
    """Raise a problem for each key the staging table holds more than once (none: rows were already stored)."""
    rows = conn.exec_driver_sql(
        f"SELECT min(line), max(line), user_id, item_id, timestamp, count(*) FROM {_STAGE} "
        "GROUP BY user_id, item_id, timestamp, event HAVING count(*) > 1 ORDER BY max(line) LIMIT 50"
    ).all()
    if not rows:
        return
    field = ",".join(columns.get(f, f) for f in ("user_id", "item_id", "timestamp"))
    problems = [
        DataProblem(
            source,
            int(last),
            field,
            f"duplicate interaction (user {user}, item {item}, time {ts}), first on line {first}"
            + (f", {count} times in all" if count > 2 else ""),
            "remove the repeated row; one event per user, item and time",
        )
        for first, last, user, item, ts, count in rows
    ]
    raise DataValidationError(problems)


def _entity_rows(name: str, frame: pd.DataFrame, id_col: str, text_cols: tuple[str, ...]) -> list[dict[str, Any]]:
    attributes = [c for c in frame.columns if c not in (id_col, *text_cols)]
    records = _attribute_records(frame, attributes)
    ids = frame[id_col].astype(str).tolist()
    texts = {c: frame[c].fillna("").astype(str).tolist() if c in frame else [""] * len(frame) for c in text_cols}
    return [
        {"dataset": name, id_col: ids[i], **{c: texts[c][i] for c in text_cols}, "attributes": records[i]}
        for i in range(len(frame))
    ]


def _frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    data = list(zip(*rows, strict=True))
    # object columns, like the validated frames (pandas 3 would otherwise infer its "str" dtype)
    return pd.DataFrame({c: pd.Series(data[i], dtype=object) for i, c in enumerate(columns)})


def _entity_frame(rows: Sequence[Any], id_col: str, text_cols: tuple[str, ...]) -> pd.DataFrame | None:
    if not rows:
        return None
    base = _frame([r[:-1] for r in rows], (id_col, *text_cols))
    attrs = _attribute_frame([r[-1] or {} for r in rows])
    return pd.concat([base, attrs], axis=1)
