"""Embedding cache: unchanged text is never embedded twice.

Vectors are keyed by the encoder's ``model_id`` (the model and every setting that changes its output) and the
sha256 of the exact text. :class:`EmbeddingCache` keeps them in the store's ``embeddings`` table (SQLite or
PostgreSQL, created by migration ``0002_embeddings``), so they survive the process and are shared by every
process using the same database; without a store it keeps them in memory. :class:`CachedEncoder` wraps any
encoder: it looks every text up in one bulk query, embeds only the missing unique texts, and writes them back in
one transaction.

Example:
    >>> from llmrec.data.store import Store
    >>> from llmrec.encode.encoder import TextEncoder
    >>> encoder = CachedEncoder(TextEncoder(), EmbeddingCache(Store("sqlite:///llmrec.db")))  # doctest: +SKIP
    >>> vectors = encoder.encode(["Toy Story (1995)", "Heat (1995)"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import sqlalchemy as sa

from llmrec.errors import ConfigError, StoreError
from llmrec.progress import progress

if TYPE_CHECKING:
    from llmrec.data.store import Store

__all__ = [
    "EMBEDDINGS",
    "CacheStats",
    "CachedEncoder",
    "EmbeddingCache",
    "SupportsEncode",
    "memory_cache",
    "text_hash",
]

log = logging.getLogger(__name__)

#: The ``embeddings`` table as migration ``0002_embeddings`` creates it (tests compare the two).
EMBEDDINGS = sa.Table(
    "embeddings",
    sa.MetaData(naming_convention={"pk": "pk_%(table_name)s"}),
    sa.Column("model_id", sa.Text(), primary_key=True),
    sa.Column("text_hash", sa.String(64), primary_key=True),
    sa.Column("dim", sa.Integer(), nullable=False),
    sa.Column("vector", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)

_VECTOR_DTYPE = np.dtype("<f4")  # float32, little-endian: the stored byte layout on every platform


def text_hash(text: str) -> str:
    """The cache key of ``text``: hex sha256 of its exact UTF-8 bytes (any change to the text changes it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@runtime_checkable
class SupportsEncode(Protocol):
    """What :class:`CachedEncoder` needs from an encoder (:class:`~llmrec.encode.encoder.TextEncoder` has it)."""

    @property
    def model_id(self) -> str:
        """Identifies the model and every setting that changes its vectors."""
        ...

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        ...

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors in input order."""
        ...


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class EmbeddingCache:
    """Vectors by (model id, text hash), in the store's ``embeddings`` table or in memory.

    Args:
        store: The store to keep vectors in (its schema is migrated on first use); ``None`` keeps them in this
            object's memory only.
        chunk_size: Keys per ``IN (...)`` lookup and rows per insert batch.

    """

    def __init__(self, store: Store | None = None, *, chunk_size: int = 1000) -> None:
        if chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1")
        self.store = store
        self.chunk_size = chunk_size
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.store.display_url if self.store is not None else "memory"
        return f"EmbeddingCache({where})"

    @property
    def persistent(self) -> bool:
        """Whether vectors outlive this object (kept in a store)."""
        return self.store is not None

    # -- store plumbing -----------------------------------------------------------------------------------
    def _engine(self) -> sa.Engine:
        assert self.store is not None
        self.store.ensure_migrated()
        return self.store.engine

    def _fail(self, action: str, exc: Exception) -> StoreError:
        assert self.store is not None
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        password = self.store.engine.url.password
        if password:
            detail = detail.replace(str(password), "***")
        rolled_back = " It was rolled back: nothing of it was stored." if action == "write" else ""
        return StoreError(
            f"could not {action} the embedding cache at {self.store.display_url}: {detail}.{rolled_back} "
            "Fix: check the database (reachable, disk space, schema version), or use an in-memory cache "
            "(EmbeddingCache(None))"
        )

    # -- reading and writing --------------------------------------------------------------------------------
    def get(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` for ``model_id`` (missing keys are absent), in bulk queries.

        Raises:
            StoreError: The database cannot be read.

        """
        wanted = list(dict.fromkeys(hashes))
        if self.store is None:
            with self._lock:
                return {h: self._memory[(model_id, h)] for h in wanted if (model_id, h) in self._memory}
        found: dict[str, np.ndarray] = {}
        table = EMBEDDINGS
        try:
            with self._engine().connect() as conn:
                for chunk in _chunks(wanted, self.chunk_size):
                    rows = conn.execute(
                        sa.select(table.c.text_hash, table.c.dim, table.c.vector).where(
                            table.c.model_id == model_id, table.c.text_hash.in_(list(chunk))
                        )
                    )
                    for key, dim, blob in rows:
                        vector = np.frombuffer(bytes(blob), dtype=_VECTOR_DTYPE)
                        if len(vector) != dim:
                            log.warning("embedding cache: corrupt entry %s/%s ignored", model_id, key)
                            continue
                        found[key] = vector.astype(np.float32)
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("read", exc) from exc
        return found

    def put(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> int:
        """Store ``{text_hash: vector}`` for ``model_id`` in one transaction; returns the number written.

        Keys already stored are left as they are (concurrent writers of the same text are harmless).

        Raises:
            StoreError: The database cannot be written; nothing of this call is stored.

        """
        if not vectors:
            return 0
        if self.store is None:
            with self._lock:
                new = {(model_id, h): np.asarray(v, dtype=np.float32) for h, v in vectors.items()}
                written = sum(1 for key in new if key not in self._memory)
                for key, value in new.items():
                    self._memory.setdefault(key, value)
            return written
        rows = [
            {
                "model_id": model_id,
                "text_hash": key,
                "dim": int(np.size(vector)),
                "vector": np.ascontiguousarray(vector, dtype=_VECTOR_DTYPE).tobytes(),
            }
            for key, vector in vectors.items()
        ]
        engine = self._engine()
        statement: sa.Insert
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement = pg_insert(EMBEDDINGS).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert

            statement = insert(EMBEDDINGS).on_conflict_do_nothing()
        written = 0
        try:
            with engine.begin() as conn:
                for chunk in _chunks(rows, self.chunk_size):
                    written += max(conn.execute(statement, list(chunk)).rowcount, 0)
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("write", exc) from exc
        return written

    def count(self, model_id: str | None = None) -> int:
        """Number of cached vectors (of ``model_id``, or of every model)."""
        if self.store is None:
            with self._lock:
                return sum(1 for m, _ in self._memory if model_id is None or m == model_id)
        query = sa.select(sa.func.count()).select_from(EMBEDDINGS)
        if model_id is not None:
            query = query.where(EMBEDDINGS.c.model_id == model_id)
        try:
            with self._engine().connect() as conn:
                return int(conn.execute(query).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("count", exc) from exc

    def clear(self, model_id: str | None = None) -> int:
        """Delete cached vectors (of ``model_id``, or all); returns how many were deleted."""
        if self.store is None:
            with self._lock:
                keys = [k for k in self._memory if model_id is None or k[0] == model_id]
                for key in keys:
                    del self._memory[key]
                return len(keys)
        statement = sa.delete(EMBEDDINGS)
        if model_id is not None:
            statement = statement.where(EMBEDDINGS.c.model_id == model_id)
        try:
            with self._engine().begin() as conn:
                return max(int(conn.execute(statement).rowcount), 0)
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("clear", exc) from exc


_MEMORY = EmbeddingCache()


def memory_cache() -> EmbeddingCache:
    """The process-wide in-memory cache (shared by every scorer that is given no store).

    Fitting several configurations of a text model (tuning) then embeds the catalogue once per process.
    """
    return _MEMORY


@dataclass
class CacheStats:
    """Counts of one :meth:`CachedEncoder.encode` call, or summed over all calls.

    Attributes:
        texts: Texts asked for.
        unique: Distinct texts among them.
        hits: Distinct texts found in the cache.
        embedded: Distinct texts embedded by the encoder (cache misses).

    """

    texts: int = 0
    unique: int = 0
    hits: int = 0
    embedded: int = 0

    def __iadd__(self, other: CacheStats) -> CacheStats:
        self.texts += other.texts
        self.unique += other.unique
        self.hits += other.hits
        self.embedded += other.embedded
        return self


class CachedEncoder:
    """An encoder that embeds each distinct text once per model, ever (as long as the cache keeps it).

    Args:
        encoder: The encoder doing the work (anything with ``model_id``, ``dim`` and ``encode``).
        cache: Where vectors are kept; ``None`` = a new, private in-memory cache.
        chunk_size: Texts per call to the encoder (the progress bar advances per chunk).

    Attributes:
        last: Counts of the latest :meth:`encode` call.
        total: Counts summed over every call.

    """

    def __init__(self, encoder: SupportsEncode, cache: EmbeddingCache | None = None, *, chunk_size: int = 512) -> None:
        if chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1")
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.chunk_size = chunk_size
        self.last = CacheStats()
        self.total = CacheStats()

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder.model_id!r}, {self.cache!r})"

    @property
    def model_id(self) -> str:
        """The wrapped encoder's model id (the cache key's first part)."""
        return self.encoder.model_id

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.encoder.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` through the cache: an ``(len(texts), dim)`` float32 array, in input order.

        Every text is looked up in one bulk query; only distinct texts missing from the cache reach the
        encoder (in chunks, with a progress bar when ``show_progress``), and their vectors are stored in one
        transaction before returning.

        Raises:
            StoreError: The cache's database cannot be read or written.

        """
        texts = [str(t) for t in texts]
        model_id = self.model_id
        keys = [text_hash(t) for t in texts]
        first: dict[str, int] = {}
        for position, key in enumerate(keys):
            first.setdefault(key, position)
        found = self.cache.get(model_id, list(first))
        missing = [key for key in first if key not in found]
        if missing:
            new: dict[str, np.ndarray] = {}
            with progress(show_progress, f"embedding {len(missing)} new text(s)", len(missing)) as advance:
                for chunk in _chunks(missing, self.chunk_size):
                    batch = [texts[first[k]] for k in chunk]
                    vectors = np.asarray(self.encoder.encode(batch, show_progress=False), dtype=np.float32)
                    if vectors.shape[0] != len(chunk):
                        raise ConfigError(f"encoder {model_id} returned {vectors.shape[0]} vectors for {len(chunk)}")
                    new.update(zip(chunk, vectors, strict=True))
                    advance(len(chunk))
            self.cache.put(model_id, new)
            found.update(new)
        stats = CacheStats(texts=len(texts), unique=len(first), hits=len(first) - len(missing), embedded=len(missing))
        self.last = stats
        self.total += stats
        log.debug("%s: %d text(s), %d distinct, %d cached, %d embedded", model_id, *vars(stats).values())
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        dims = {len(v) for v in found.values()}
        if len(dims) != 1:
            raise StoreError(
                f"the embedding cache holds vectors of sizes {sorted(dims)} for model {model_id}. Fix: clear it "
                f"(EmbeddingCache.clear({model_id!r}))"
            )
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
