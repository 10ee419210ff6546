"""Semantic ids: residual k-means codes of item text embeddings, one short unique code per item.

Level 1 clusters the embeddings, each next level clusters what the levels before it left over, and a last level
numbers the items that still share every code, so the id is a key. Items with similar text share a code prefix:
what a model can learn to write (the TIGER / GPT-2 + SVD sub-identifier idea). Rendered as text an id reads
``"a12 b3 c7 d0"``; :meth:`SemanticIds.save` / :meth:`SemanticIds.load` keep codes and codebooks as plain npz.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.config import config_from
from llmrec.errors import ConfigError, NotFittedError

__all__ = ["SemanticIdConfig", "SemanticIds"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SEMANTIC_FILE = "semantic_ids"
_FORMAT_VERSION = 1


class SemanticIdConfig(BaseModel):
    """Shape of the semantic ids.

    Attributes:
        levels: Number of k-means levels (each quantises what the levels before it left over). More levels make
            finer groups and longer ids.
        codebook_size: Clusters per level (fewer when there are fewer distinct vectors). Codes below 10 are one
            token each with the default model's tokenizer, so small codebooks give shorter ids.
        iterations: Most Lloyd iterations per level (it stops earlier when assignments stop changing).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(default=3, ge=1, le=len(_LETTERS) - 1)
    codebook_size: int = Field(default=16, ge=2, le=4096)
    iterations: int = Field(default=25, ge=1, le=1000)


def _kmeans(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``(k', d)`` and labels ``(n,)`` of ``x`` (k-means++ start, Lloyd steps; deterministic given rng).

    ``k'`` is ``k`` capped at the number of distinct rows, so no cluster starts empty; a cluster that empties
    during the iterations takes the point farthest from its own centroid.
    """
    n = len(x)
    k = min(k, len(np.unique(x, axis=0)))
    sq = np.einsum("ij,ij->i", x, x)
    centroids = np.empty((k, x.shape[1]), dtype=np.float64)
    centroids[0] = x[rng.integers(n)]
    nearest = np.maximum(sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0], 0.0)
    for c in range(1, k):
        total = nearest.sum()
        pick = int(rng.choice(n, p=nearest / total)) if total > 0 else int(np.argmax(nearest))
        centroids[c] = x[pick]
        nearest = np.minimum(nearest, np.maximum(sq - 2 * x @ centroids[c] + centroids[c] @ centroids[c], 0.0))
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        dist = sq[:, None] - 2 * x @ centroids.T + np.einsum("ij,ij->i", centroids, centroids)[None, :]
        new = np.argmin(dist, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        for c in np.flatnonzero(~filled).tolist():
            own = np.einsum("ij,ij->i", x - centroids[labels], x - centroids[labels])
            far = int(np.argmax(own))
            centroids[c], labels[far] = x[far], c
    return centroids, labels


class SemanticIds:
    """Residual k-means codes of item embeddings, with a last level that makes every id unique.

    Level 1 clusters the embeddings; level 2 clusters what is left after subtracting each item's level-1
    centroid; and so on. Items whose vectors are close get the same first codes. A final level numbers the
    items that still share every code (0, 1, ... in item order), so the id is a key. Rendered as text, level
    ``j`` is a letter (``a``, ``b``, ...) and the code: ``"a12 b3 c7 d0"``; that form never reads like a title,
    and the model's tokenizer splits it into a few short tokens.

    Args:
        config: Levels and codebook size; or pass its fields as keyword arguments.

    Example:
        >>> ids = SemanticIds(levels=2, codebook_size=4).fit(np.eye(6, 8), seed=0)  # doctest: +SKIP
        >>> ids.string(0)  # doctest: +SKIP
        'a1 b0 c0'
    """

    def __init__(self, config: SemanticIdConfig | None = None, **kwargs: Any) -> None:
        self.config = config_from(SemanticIdConfig, config, kwargs)
        self._codes: np.ndarray | None = None
        self._codebooks: list[np.ndarray] = []

    def __repr__(self) -> str:
        fitted = "unfitted" if self._codes is None else f"{len(self)} items"
        return f"SemanticIds(levels={self.config.levels}, codebook_size={self.config.codebook_size}, {fitted})"

    def __len__(self) -> int:
        return 0 if self._codes is None else len(self._codes)

    def fit(self, embeddings: np.ndarray, *, seed: int = 42) -> Self:
        """Learn the codebooks from ``embeddings`` ``(n_items, dim)`` (row ``i`` = item ``i``) and code every item.

        The same embeddings and seed always give the same codes.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ConfigError(f"embeddings must be a non-empty 2-D array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError("embeddings contain NaN or infinite values")
        rng = np.random.default_rng(seed)
        residual = x.copy()
        levels = []
        self._codebooks = []
        for _ in range(self.config.levels):
            centroids, labels = _kmeans(residual, self.config.codebook_size, self.config.iterations, rng)
            self._codebooks.append(centroids.astype(np.float32))
            levels.append(labels)
            residual -= centroids[labels]
        codes = np.stack(levels, axis=1)
        seen: Counter[tuple[int, ...]] = Counter()
        last = np.empty(len(x), dtype=np.int64)
        for i, row in enumerate(map(tuple, codes.tolist())):
            last[i] = seen[row]
            seen[row] += 1
        self._codes = np.concatenate([codes, last[:, None]], axis=1).astype(np.int32)
        return self

    @property
    def codes(self) -> np.ndarray:
        """Codes ``(n_items, levels + 1)`` int32; the last column is the disambiguation level."""
        if self._codes is None:
            raise NotFittedError("SemanticIds is not fitted: call fit(embeddings) or SemanticIds.load(path)")
        return self._codes

    @property
    def codebooks(self) -> list[np.ndarray]:
        """Centroids of each k-means level, ``(clusters, dim)`` float32."""
        self.codes  # noqa: B018 - raises when unfitted
        return list(self._codebooks)

    @staticmethod
    def render(code: Sequence[int]) -> str:
        """The text form of one code row: ``(12, 3, 7, 0)`` -> ``"a12 b3 c7 d0"``."""
        return " ".join(f"{_LETTERS[j]}{int(c)}" for j, c in enumerate(code))

    @staticmethod
    def parse(text: str) -> tuple[int, ...] | None:
        """The code row of a text form made by :meth:`render`; ``None`` when ``text`` is not one."""
        parts = text.split(" ")
        if not parts or len(parts) > len(_LETTERS):
            return None
        out = []
        for j, part in enumerate(parts):
            if not re.fullmatch(rf"{_LETTERS[j]}(0|[1-9][0-9]*)", part):
                return None
            out.append(int(part[1:]))
        return tuple(out)

    def string(self, item: int) -> str:
        """The id of item ``item`` as text."""
        return self.render(self.codes[item].tolist())

    def strings(self) -> list[str]:
        """Every item's id as text, in item order (all distinct)."""
        return [self.render(row) for row in self.codes.tolist()]

    def save(self, path: str | Path) -> Path:
        """Write ``semantic_ids.json`` (config, shapes) and ``semantic_ids.npz`` (codes, codebooks) into ``path``.

        No pickle: the arrays are plain npz and :meth:`load` reads them with ``allow_pickle=False``.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        codes = self.codes
        arrays = {"codes": codes, **{f"codebook_{j}": c for j, c in enumerate(self._codebooks)}}
        np.savez(folder / f"{_SEMANTIC_FILE}.npz", allow_pickle=False, **arrays)
        meta = {
            "format_version": _FORMAT_VERSION,
            "config": self.config.model_dump(),
            "n_items": int(codes.shape[0]),
            "dim": int(self._codebooks[0].shape[1]),
        }
        (folder / f"{_SEMANTIC_FILE}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> SemanticIds:
        """Read what :meth:`save` wrote.

        Raises:
            ConfigError: Files are missing, of another format version, or disagree with each other.
        """
        folder = Path(path)
        meta_file, array_file = folder / f"{_SEMANTIC_FILE}.json", folder / f"{_SEMANTIC_FILE}.npz"
        if not meta_file.is_file() or not array_file.is_file():
            raise ConfigError(f"{folder} has no {meta_file.name} and {array_file.name}: save SemanticIds there first")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ConfigError(f"{meta_file}: format_version {meta.get('format_version')} is not {_FORMAT_VERSION}")
        out = cls(SemanticIdConfig(**meta["config"]))
        with np.load(array_file, allow_pickle=False) as arrays:
            codes = arrays["codes"].astype(np.int32)
            books = [arrays[f"codebook_{j}"].astype(np.float32) for j in range(out.config.levels)]
        if codes.shape != (meta["n_items"], out.config.levels + 1) or any(b.shape[1] != meta["dim"] for b in books):
            raise ConfigError(f"{array_file} does not match {meta_file} (shapes differ): save again")
        out._codes, out._codebooks = codes, books
        return out
