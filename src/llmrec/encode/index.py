"""Vector search over item embeddings behind one protocol: exact numpy by default, faiss for large catalogues.

Every index stores ``(id, vector)`` pairs (ids are non-negative integers, e.g. dense item indices) and answers
maximum-inner-product queries; with L2-normalised vectors (the encoder's default) the score is the cosine.
Searches take two filters:

* ``exclude``: per query, a set of ids to leave out (the items a user has already seen);
* ``allowed``: a boolean mask indexed by id, one for all queries (shape ``(max_id + 1,)``) or one per query
  (``(n_queries, max_id + 1)``): attribute constraints such as "only comedies" or "only in stock". Ids
  beyond the mask's length are not allowed.

Filtered searches still return exactly ``k`` results per query whenever at least ``k`` ids qualify: the exact
index masks scores before taking the top k; the faiss index over-fetches and fetches again with a larger
window for the queries that came up short. Missing slots (fewer than ``k`` qualifying ids) hold id ``-1`` and
score ``-inf``.

Indexes save to a folder without pickle: ``meta.json`` plus ``index.npz`` (``allow_pickle=False``) for the
exact index, or ``index.faiss`` (``faiss.write_index``) and ``ids.npz`` for faiss. :func:`load_index` reads
either.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np

from llmrec.errors import ConfigError

__all__ = ["ExactIndex", "FaissIndex", "IndexKind", "VectorIndex", "load_index", "make_index"]

log = logging.getLogger(__name__)

IndexKind = Literal["exact", "faiss"]
_FORMAT_VERSION = 1


@runtime_checkable
class VectorIndex(Protocol):
    """A maximum-inner-product index of ``(id, vector)`` pairs with exclude and allowed-mask filters."""

    @property
    def dim(self) -> int | None:
        """Vector dimension (``None`` before the first :meth:`add`)."""
        ...

    @property
    def ids(self) -> np.ndarray:
        """Stored ids, in insertion order (int64)."""
        ...

    def __len__(self) -> int: ...

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new ids (an id already stored is an error)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[set[int] | None] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids and scores per query: ``(n_queries, k)`` int64 and float32, best first."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the index to folder ``path`` (created); returns it."""
        ...


# -- shared helpers --------------------------------------------------------------------------------------
def _as_queries(queries: np.ndarray, dim: int | None) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ConfigError(f"queries must be a (n, dim) array, got shape {q.shape}")
    if dim is not None and q.shape[1] != dim:
        raise ConfigError(f"queries have dimension {q.shape[1]}, the index holds dimension {dim}")
    return np.ascontiguousarray(q)


def _check_filters(
    n_queries: int, exclude: Sequence[set[int] | None] | None, allowed: np.ndarray | None
) -> np.ndarray | None:
    if exclude is not None and len(exclude) != n_queries:
        raise ConfigError(f"exclude needs one set per query: got {len(exclude)} for {n_queries} queries")
    if allowed is None:
        return None
    mask = np.asarray(allowed)
    if mask.dtype != np.bool_:
        raise ConfigError(f"allowed must be a boolean mask indexed by id, got dtype {mask.dtype}")
    if mask.ndim == 2 and mask.shape[0] != n_queries:
        raise ConfigError(f"a 2-d allowed mask needs one row per query: got {mask.shape[0]} for {n_queries}")
    if mask.ndim not in (1, 2):
        raise ConfigError(f"allowed must be 1-d (all queries) or 2-d (per query), got shape {mask.shape}")
    return mask


def _allowed_by_position(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Translate an id-indexed mask (1-d or 2-d) to the stored positions; ids past its end are not allowed."""
    width = mask.shape[-1]
    inside = ids < width
    safe = np.where(inside, ids, 0)
    return mask[..., safe] & inside


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")


def _top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the ``k`` largest finite entries per row, best first; ties by position."""
    n, m = scores.shape
    k_eff = min(k, m)
    if k_eff == 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
    if k_eff < m:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    pos = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    pos[~np.isfinite(vals)] = -1
    vals[pos < 0] = -np.inf
    if k_eff < k:
        pos = np.hstack([pos, np.full((n, k - k_eff), -1, dtype=np.int64)])
        vals = np.hstack([vals, np.full((n, k - k_eff), -np.inf, dtype=np.float32)])
    return pos, vals


class _IdMap:
    """Ids in insertion order, with a vectorised id -> position lookup (ids may be sparse and large)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._sorted = np.zeros(0, dtype=np.int64)

    def extend(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        new = np.asarray(ids, dtype=np.int64).ravel()
        if len(new) and new.min() < 0:
            raise ConfigError("index ids must be non-negative integers")
        if len(np.unique(new)) != len(new):
            raise ConfigError("ids passed to add() must be distinct")
        clash = new[self.positions(new) >= 0]
        if len(clash):
            raise ConfigError(f"id {int(clash[0])} is already in the index ({len(clash)} clash(es))")
        self.ids = np.concatenate([self.ids, new])
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        return new

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Position of each id, -1 where it is not stored."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self._sorted) or not ids.size:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.searchsorted(self._sorted, ids).clip(0, len(self._sorted) - 1)
        return np.where(self._sorted[at] == ids, self._order[at], -1)


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"format": _FORMAT_VERSION, **meta}, indent=2))


def _read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a saved vector index (no meta.json); save one with index.save(folder)")
    meta = json.loads(path.read_text())
    if meta.get("format") != _FORMAT_VERSION:
        raise ConfigError(f"{path}: index format {meta.get('format')} is not supported (expected {_FORMAT_VERSION})")
    return meta


# -- exact -------------------------------------------------------------------------------------------------
class ExactIndex:
    """Brute-force inner product with numpy (float32 matmul): exact, no extra dependency, the default.

    Fast enough for catalogues up to ~10^5 items (one query against 10^4 items of dimension 384 is a 4 MB
    matrix-vector product). Queries run in blocks so the score matrix stays within ``block_bytes``.

    Args:
        block_bytes: Upper bound of one block's score matrix, in bytes.

    """

    kind = "exact"

    def __init__(self, *, block_bytes: int = 64 * 2**20) -> None:
        self.block_bytes = block_bytes
        self._idmap = _IdMap()
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ExactIndex(n={self._n}, dim={self.dim})"

    @property
    def dim(self) -> int | None:
        """Vector dimension (``None`` before the first :meth:`add`)."""
        return self._vectors.shape[1] if self._vectors.shape[1] else None

    @property
    def ids(self) -> np.ndarray:
        """Stored ids, in insertion order (int64)."""
        return self._idmap.ids

    @property
    def vectors(self) -> np.ndarray:
        """Stored vectors in insertion order, ``(len(self), dim)`` float32 (a view: do not modify)."""
        return self._vectors[: self._n]

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (``(n, dim)``) under ``ids``; the buffer grows geometrically, so adds are cheap."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != len(np.asarray(ids).ravel()):
            raise ConfigError(f"add() needs one id per vector row; got {len(np.asarray(ids).ravel())} and {x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ConfigError(f"vectors have dimension {x.shape[1]}, the index holds dimension {self.dim}")
        self._idmap.extend(ids)
        need = self._n + len(x)
        if need > self._vectors.shape[0] or self.dim is None:
            grown = np.zeros((max(need, 2 * self._vectors.shape[0]), x.shape[1]), dtype=np.float32)
            if self._n:
                grown[: self._n] = self._vectors[: self._n]
            self._vectors = grown
        self._vectors[self._n : need] = x
        self._n = need

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[set[int] | None] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product (see the module docstring for the filters and padding).

        Returns:
            ``(ids, scores)``: ``(n_queries, k)`` int64 ids (-1 padding) and float32 scores (-inf padding),
            best first; ties go to the earlier-added id.

        """
        _check_k(k)
        q = _as_queries(queries, self.dim)
        mask = _check_filters(len(q), exclude, allowed)
        pos_allowed = _allowed_by_position(mask, self.ids) if mask is not None else None
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if self._n == 0 or len(q) == 0:
            return out_ids, out_scores
        vectors = self.vectors
        block = max(1, self.block_bytes // (4 * self._n))
        for start in range(0, len(q), block):
            rows = slice(start, start + block)
            scores = q[rows] @ vectors.T
            if pos_allowed is not None:
                if pos_allowed.ndim == 1:
                    scores[:, ~pos_allowed] = -np.inf
                else:
                    scores[~pos_allowed[rows]] = -np.inf
            if exclude is not None:
                for r, excluded in enumerate(exclude[rows]):
                    if excluded:
                        pos = self._idmap.positions(np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
                        scores[r, pos[pos >= 0]] = -np.inf
            pos, vals = _top_k_rows(scores, k)
            out_ids[rows] = np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)
            out_scores[rows] = vals
        return out_ids, out_scores

    def save(self, path: str | Path) -> Path:
        """Write ``meta.json`` and ``index.npz`` (no pickle) into folder ``path``."""
        folder = Path(path)
        _write_meta(folder, {"kind": self.kind, "dim": self.dim, "n": self._n})
        np.savez(folder / "index.npz", ids=self.ids, vectors=self.vectors)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read an index written by :meth:`save`."""
        meta = _read_meta(Path(path))
        if meta["kind"] != cls.kind:
            raise ConfigError(f"{path} holds a {meta['kind']} index, not an exact one; use load_index()")
        with np.load(Path(path) / "index.npz", allow_pickle=False) as data:
            index = cls()
            if len(data["ids"]):
                index.add(data["ids"], data["vectors"])
        return index


# -- faiss -------------------------------------------------------------------------------------------------
def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("FaissIndex needs faiss: pip install 'llmrec[text]' (faiss-cpu)") from exc
    return faiss


class FaissIndex:
    """faiss inner-product search: ``IndexFlatIP`` (exact) or HNSW (approximate, for very large catalogues).

    HNSW pays off from ~10^5 items, where a flat scan per query gets slow; below that the flat index is exact
    and fast enough.

    Filters are applied to an over-fetched candidate list: the first fetch takes ``k`` plus the largest
    exclude set, scaled up by how selective the ``allowed`` mask is; queries still short of ``k`` results
    are searched again with a window four times larger, up to the whole index. If HNSW cannot find ``k``
    qualifying ids even then (its graph search may stop early), the remaining rows fall back to an exact scan.

    Args:
        kind: ``"flat"``, ``"hnsw"``, or ``"auto"`` (HNSW when the first :meth:`add` has at least
            ``hnsw_threshold`` vectors, else flat).
        hnsw_m: Neighbours per HNSW node (memory and build time against recall).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW query-time beam width (raised to the fetch size when that is larger).
        hnsw_threshold: Size from which ``"auto"`` builds HNSW.

    """

    kind = "faiss"

    def __init__(
        self,
        kind: Literal["flat", "hnsw", "auto"] = "auto",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        hnsw_threshold: int = 100_000,
    ) -> None:
        if kind not in ("flat", "hnsw", "auto"):
            raise ConfigError(f"FaissIndex kind must be 'flat', 'hnsw' or 'auto', got {kind!r}")
        self.structure = kind
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.hnsw_threshold = hnsw_threshold
        self._idmap = _IdMap()
        self._index: Any = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"FaissIndex({self.structure!r}, n={len(self)}, dim={self.dim})"

    @property
    def dim(self) -> int | None:
        """Vector dimension (``None`` before the first :meth:`add`)."""
        return None if self._index is None else int(self._index.d)

    @property
    def ids(self) -> np.ndarray:
        """Stored ids, in insertion order (int64)."""
        return self._idmap.ids

    def _build(self, dim: int, n: int) -> Any:
        faiss = _faiss()
        if self.structure == "auto":
            self.structure = "hnsw" if n >= self.hnsw_threshold else "flat"
        if self.structure == "flat":
            return faiss.IndexFlatIP(dim)
        index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (``(n, dim)``) under ``ids``."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != len(np.asarray(ids).ravel()):
            raise ConfigError(f"add() needs one id per vector row; got {len(np.asarray(ids).ravel())} and {x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ConfigError(f"vectors have dimension {x.shape[1]}, the index holds dimension {self.dim}")
        if self._index is None:
            self._index = self._build(x.shape[1], len(x))
        self._idmap.extend(ids)
        self._index.add(x)

    def _raw(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        if self.structure == "hnsw":
            self._index.hnsw.efSearch = max(self.ef_search, fetch)
        scores, pos = self._index.search(q, fetch)
        return pos.astype(np.int64), scores.astype(np.float32)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[set[int] | None] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product (exact with ``"flat"``); see the class docstring for the filters.

        Returns:
            ``(ids, scores)``: ``(n_queries, k)`` int64 ids (-1 padding) and float32 scores (-inf padding).

        """
        _check_k(k)
        q = _as_queries(queries, self.dim)
        mask = _check_filters(len(q), exclude, allowed)
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        n = len(self)
        if n == 0 or len(q) == 0:
            return out_ids, out_scores
        pos_allowed = _allowed_by_position(mask, self.ids) if mask is not None else None
        excluded_pos = [
            self._excluded_positions(ex) if ex else None for ex in (exclude if exclude is not None else [None] * len(q))
        ]
        # Qualifying positions per query: how many exist bounds what a query can return.
        n_ok = np.full(len(q), n, dtype=np.int64)
        if pos_allowed is not None:
            n_ok = np.broadcast_to(pos_allowed.sum(axis=-1), (len(q),)).astype(np.int64).copy()
        for r, ex in enumerate(excluded_pos):
            if ex is not None and len(ex):
                ok = ex if pos_allowed is None else ex[(pos_allowed if pos_allowed.ndim == 1 else pos_allowed[r])[ex]]
                n_ok[r] -= len(ok)
        want = np.minimum(k, n_ok)
        max_excluded = max((len(e) for e in excluded_pos if e is not None), default=0)
        qualifying = n_ok[n_ok > 0]
        selectivity = 1.0 if pos_allowed is None or not len(qualifying) else n / int(qualifying.min())
        fetch = min(n, math.ceil(k * selectivity * 1.5) + max_excluded)
        pending = np.flatnonzero(want > 0)
        got = np.zeros(len(q), dtype=np.int64)
        while len(pending):
            pos, vals = self._raw(q[pending], fetch)
            for j, r in enumerate(pending.tolist()):
                keep = pos[j] >= 0
                if pos_allowed is not None:
                    row_ok = pos_allowed if pos_allowed.ndim == 1 else pos_allowed[r]
                    keep &= row_ok[np.maximum(pos[j], 0)]
                ex = excluded_pos[r]
                if ex is not None and len(ex):
                    keep &= ~np.isin(pos[j], ex)
                chosen = pos[j][keep][:k]
                out_ids[r, : len(chosen)] = self.ids[chosen]
                out_scores[r, : len(chosen)] = vals[j][keep][:k]
                got[r] = len(chosen)
            pending = pending[got[pending] < want[pending]]
            if not len(pending):
                break
            if fetch >= n:
                self._exact_fallback(q, pending, k, out_ids, out_scores, pos_allowed, excluded_pos)
                break
            fetch = min(n, fetch * 4)
        return out_ids, out_scores

    def _excluded_positions(self, excluded: set[int]) -> np.ndarray:
        pos = self._idmap.positions(np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
        return np.unique(pos[pos >= 0])

    def _exact_fallback(
        self,
        q: np.ndarray,
        rows: np.ndarray,
        k: int,
        out_ids: np.ndarray,
        out_scores: np.ndarray,
        pos_allowed: np.ndarray | None,
        excluded_pos: list[np.ndarray | None],
    ) -> None:
        """Exact scan for queries the approximate index could not fill (rare; HNSW only)."""
        log.debug("faiss: exact fallback for %d filtered queries", len(rows))
        vectors = self._index.reconstruct_n(0, len(self))
        scores = q[rows] @ vectors.T
        for j, r in enumerate(rows):
            if pos_allowed is not None:
                scores[j, ~(pos_allowed if pos_allowed.ndim == 1 else pos_allowed[r])] = -np.inf
            if excluded_pos[r] is not None:
                scores[j, excluded_pos[r]] = -np.inf
        pos, vals = _top_k_rows(scores, k)
        out_ids[rows] = np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)
        out_scores[rows] = vals

    def save(self, path: str | Path) -> Path:
        """Write ``meta.json``, ``index.faiss`` (``faiss.write_index``) and ``ids.npz`` into folder ``path``."""
        folder = Path(path)
        meta = {
            "kind": self.kind,
            "structure": self.structure,
            "dim": self.dim,
            "n": len(self),
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "hnsw_threshold": self.hnsw_threshold,
        }
        _write_meta(folder, meta)
        np.savez(folder / "ids.npz", ids=self.ids)
        if self._index is not None:
            _faiss().write_index(self._index, str(folder / "index.faiss"))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read an index written by :meth:`save`."""
        folder = Path(path)
        meta = _read_meta(folder)
        if meta["kind"] != cls.kind:
            raise ConfigError(f"{path} holds a {meta['kind']} index, not a faiss one; use load_index()")
        index = cls(
            meta["structure"],
            hnsw_m=meta["hnsw_m"],
            ef_construction=meta["ef_construction"],
            ef_search=meta["ef_search"],
            hnsw_threshold=meta["hnsw_threshold"],
        )
        with np.load(folder / "ids.npz", allow_pickle=False) as data:
            ids = data["ids"]
        if (folder / "index.faiss").is_file():
            index._index = _faiss().read_index(str(folder / "index.faiss"))
            if index._index.ntotal != len(ids):
                raise ConfigError(f"{folder}: index.faiss holds {index._index.ntotal} vectors but ids.npz {len(ids)}")
            index._idmap.extend(ids)
        return index


def make_index(kind: IndexKind = "exact", **options: Any) -> VectorIndex:
    """A new, empty index of ``kind``: ``"exact"`` (:class:`ExactIndex`) or ``"faiss"`` (:class:`FaissIndex`).

    ``options`` go to the class's constructor; for faiss, ``structure="flat" | "hnsw" | "auto"`` picks the
    faiss index type (default ``"auto"``).
    """
    if kind == "exact":
        return ExactIndex(**options)
    if kind == "faiss":
        structure = options.pop("structure", "auto")
        return FaissIndex(structure, **options)
    raise ConfigError(f"unknown index kind {kind!r}; choose 'exact' or 'faiss'")


def load_index(path: str | Path) -> VectorIndex:
    """Read an index saved by :meth:`ExactIndex.save` or :meth:`FaissIndex.save` (no pickle involved)."""
    kind = _read_meta(Path(path))["kind"]
    if kind == "exact":
        return ExactIndex.load(path)
    if kind == "faiss":
        return FaissIndex.load(path)
    raise ConfigError(f"{path}: unknown index kind {kind!r}")
