"""Published model versions and the deletions serving workers must honour, shared through the store.

Mixed into :class:`~llmrec.data.store.Store`. Several ``llmrec serve`` workers (processes, or nodes on one
PostgreSQL database) serve one dataset coherently through three things kept here:

* ``model_versions``: one row per published version of a dataset's fitted pipelines (a folder of saved pipelines
  under the workers' artifact folder). A refit publishes the next number; the unique (dataset, version) key means
  two publishers can never both claim a number. Workers poll :meth:`VersionAccess.latest_model_version`.
* :meth:`VersionAccess.refit_lock`: single-flight refits across processes and nodes (a PostgreSQL advisory lock,
  or an OS file lock beside a SQLite file), so two refits never fit at once and versions follow the data's order.
* :meth:`VersionAccess.audit_mark` and :meth:`VersionAccess.deletions_after`: where the audit log stood when data
  was read, and the user deletions logged since, so every worker treats a user deleted through any worker (or
  ``llmrec forget``) as unknown at once, although its fitted data still holds them until the next refit. The log
  names users only by salted digests: a worker checks a user id against them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmrec.data.store.models import AuditRow, ModelVersionRow
from llmrec.errors import ConflictError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["AuditMark", "Deletion", "ModelVersion", "VersionAccess"]

_GAP_WINDOW = 64
"""Audit ids below the newest one checked for gaps (ids handed out, not yet committed: see :class:`AuditMark`)."""

_LOCAL_LOCKS: dict[tuple[int, str], threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class AuditMark:
    """Where the audit log stood when data was read: which deletions that data already reflects.

    PostgreSQL hands out row ids before commit, so a deletion committing late can carry a lower id than the newest
    one seen. ``gaps`` are the ids below ``marker`` (within a window) not yet visible then: a deletion with one of
    them, or with an id above ``marker``, happened after the read.

    Attributes:
        marker: The newest audit-log row id (any dataset) visible.
        gaps: Ids below it, within the last ``_GAP_WINDOW``, not visible (in flight, or rolled back).

    """

    marker: int = 0
    gaps: tuple[int, ...] = ()

    def covers(self, deletion_id: int) -> bool:
        """Whether data read at this mark already reflects the deletion logged as ``deletion_id``."""
        return deletion_id <= self.marker and deletion_id not in self.gaps

    @property
    def low(self) -> int:
        """Every deletion with a higher id may be one this mark does not cover."""
        return min(self.gaps) - 1 if self.gaps else self.marker


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a dataset's fitted pipelines (see :class:`~llmrec.data.store.models.ModelVersionRow`).

    Attributes:
        dataset: The dataset it was fitted on.
        version: Its number (1, 2, ... per dataset; the highest is the one served).
        path: Its folder, relative to the artifact folder of the workers.
        store_marker: The newest interaction row id in its fitted data.
        audit: Where the audit log stood when its data was read (deletions after it are not reflected).
        retrievers: The retrievers saved in it (one subfolder each).
        created_by: Which worker published it (``host:pid``).
        created_at: When it was published (UTC).

    """

    dataset: str
    version: int
    path: str
    store_marker: int
    audit: AuditMark
    retrievers: tuple[str, ...]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Deletion:
    """A user deletion from the audit log: its row id and the salted digest naming the user."""

    id: int
    salt: str
    digest: str

    def names(self, dataset: str, user_id: str) -> bool:
        """Whether this deletion was of ``user_id`` in ``dataset``."""
        from llmrec.privacy.at_rest import subject_digest

        return subject_digest(dataset, user_id, self.salt) == self.digest


def _version(row: Any) -> ModelVersion:
    at = row.created_at
    return ModelVersion(
        row.dataset,
        int(row.version),
        row.path,
        int(row.store_marker),
        AuditMark(int(row.audit_marker), tuple(int(g) for g in (row.audit_gaps or ()))),
        tuple(str(r) for r in (row.retrievers or ())),
        row.created_by,
        at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC),
    )


def _lock_key(dataset: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for refits of ``dataset``."""
    digest = hashlib.sha256(f"llmrec-refit\x00{dataset}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class VersionAccess:
    """Model versions, refit lock and deletions of :class:`~llmrec.data.store.Store` (see the module docstring)."""

    if TYPE_CHECKING:
        _transaction: Callable[[str], contextlib.AbstractContextManager[sa.Connection]]
        _url: URL

        @property
        def engine(self) -> sa.Engine: ...  # noqa: D102 - Store's own

        @property
        def display_url(self) -> str: ...  # noqa: D102 - Store's own

        def ensure_migrated(self) -> None: ...  # noqa: D102 - Store's own

    # -- versions -----------------------------------------------------------------------------------------------
    def latest_model_version(self, dataset: str) -> ModelVersion | None:
        """The newest published version of ``dataset`` (``None`` when none was published): one indexed read."""
        stmt = (
            sa.select(*ModelVersionRow.__table__.columns)
            .where(ModelVersionRow.dataset == dataset)
            .order_by(ModelVersionRow.version.desc())
            .limit(1)
        )
        with self._transaction(f"read the newest model version of '{dataset}'") as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _version(row)

    def model_versions(self, dataset: str) -> list[ModelVersion]:
        """Every published version of ``dataset``, newest first."""
        stmt = (
            sa.select(*ModelVersionRow.__table__.columns)
            .where(ModelVersionRow.dataset == dataset)
            .order_by(ModelVersionRow.version.desc())
        )
        with self._transaction(f"list the model versions of '{dataset}'") as conn:
            return [_version(r) for r in conn.execute(stmt).all()]

    def add_model_version(
        self,
        dataset: str,
        version: int,
        path: str,
        *,
        store_marker: int,
        audit: AuditMark,
        retrievers: Sequence[str],
        created_by: str,
    ) -> ModelVersion | None:
        """Publish ``version`` of ``dataset`` (its folder must be complete already); ``None`` if the number is taken.

        The unique (dataset, version) key decides between two publishers of one number: exactly one row is
        written, the other gets ``None`` and should take the next number.
        """
        values = {
            "dataset": dataset,
            "version": int(version),
            "path": path,
            "store_marker": int(store_marker),
            "audit_marker": int(audit.marker),
            "audit_gaps": list(audit.gaps),
            "retrievers": list(retrievers),
            "created_by": created_by,
        }
        with self._transaction(f"publish model version {version} of '{dataset}'") as conn:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(ModelVersionRow).values(**values))
            except sa.exc.IntegrityError:
                return None
            row = conn.execute(
                sa.select(*ModelVersionRow.__table__.columns).where(
                    ModelVersionRow.dataset == dataset, ModelVersionRow.version == int(version)
                )
            ).one()
        return _version(row)

    def delete_model_versions(self, dataset: str, versions: Iterable[int]) -> int:
        """Unpublish versions of ``dataset`` (their folders are the caller's to remove); returns rows deleted."""
        numbers = sorted({int(v) for v in versions})
        if not numbers:
            return 0
        stmt = sa.delete(ModelVersionRow).where(
            ModelVersionRow.dataset == dataset, ModelVersionRow.version.in_(numbers)
        )
        with self._transaction(f"delete model versions of '{dataset}'") as conn:
            return int(conn.execute(stmt).rowcount or 0)

    # -- deletions ----------------------------------------------------------------------------------------------
    def audit_mark(self) -> AuditMark:
        """Where the audit log stands now (read before loading data: later deletions are not reflected in it)."""
        with self._transaction("read the audit log's position") as conn:
            marker = int(conn.execute(sa.select(sa.func.max(AuditRow.id))).scalar_one() or 0)
            low = max(0, marker - _GAP_WINDOW)
            seen = set(conn.execute(sa.select(AuditRow.id).where(AuditRow.id > low)).scalars())
        return AuditMark(marker, tuple(i for i in range(low + 1, marker) if i not in seen))

    def deletions_after(self, dataset: str, after_id: int) -> list[Deletion]:
        """User deletions of ``dataset`` logged after audit row ``after_id``, oldest first (a range read on the key)."""
        stmt = (
            sa.select(AuditRow.id, AuditRow.subject_salt, AuditRow.subject_digest)
            .where(AuditRow.id > int(after_id), AuditRow.dataset == dataset, AuditRow.action == "delete_user")
            .order_by(AuditRow.id)
        )
        with self._transaction(f"read the deletions of '{dataset}'") as conn:
            return [Deletion(int(r.id), r.subject_salt, r.subject_digest) for r in conn.execute(stmt).all()]

    # -- single-flight refits -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def refit_lock(self, dataset: str, *, timeout_s: float = 900.0) -> Iterator[None]:
        """Hold the refit lock of ``dataset`` across processes and nodes while the block runs.

        PostgreSQL: a session advisory lock (every node on the database). A SQLite file: an OS lock on a file
        beside it (SQLite is one machine's). In-memory SQLite, or where OS file locks are missing: a lock of this
        process. The lock goes with the process if it dies.

        Raises:
            ConflictError: Another refit held it for longer than ``timeout_s``.

        """
        self.ensure_migrated()
        deadline = time.monotonic() + timeout_s
        if self.engine.dialect.name == "postgresql":
            with self._advisory_lock(dataset, deadline):
                yield
            return
        database = self._url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not POSIX
                pass
            else:
                name = hashlib.sha256(dataset.encode()).hexdigest()[:16]
                path = Path(f"{Path(database).expanduser()}.refit-{name}.lock")
                with path.open("a+b") as handle:
                    while True:
                        try:
                            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            self._wait_or_fail(dataset, deadline)
                    try:
                        yield
                    finally:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return
        with _LOCAL_LOCKS_GUARD:
            lock = _LOCAL_LOCKS.setdefault((id(self.engine), dataset), threading.Lock())
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._wait_or_fail(dataset, 0.0)
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def _advisory_lock(self, dataset: str, deadline: float) -> Iterator[None]:
        key = _lock_key(dataset)
        with self.engine.connect() as conn:
            while True:
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
                conn.commit()  # a session lock: no transaction stays open while the refit runs
                if got:
                    break
                self._wait_or_fail(dataset, deadline)
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()

    def _wait_or_fail(self, dataset: str, deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise ConflictError(
                f"another refit of dataset '{dataset}' on {self.display_url} is still running. "
                "Fix: retry when it is done (the workers switch to its version by themselves)"
            )
        time.sleep(0.1)


def worker_name() -> str:
    """This process as a publisher of versions: ``host:pid``."""
    return f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}:{os.getpid()}"
