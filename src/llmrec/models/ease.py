"""EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item-item model.

``B = I - P diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹``, which makes ``diag(B) = 0``; scores are ``X_u B``.

Memory and time: ``P`` is dense, ``n²`` floats for ``n`` items (9.7k MovieLens items: 0.38 GB float32, 0.75 GB
float64), inverted in place by Cholesky (LAPACK ``potrf`` + ``potri``): ~6 s for MovieLens on 2 cores in float32,
4x faster than ``numpy.linalg.inv``, with peak memory one ``n x n`` matrix (0.4 GB for MovieLens).
Only items with at least one training interaction enter the matrix. That is exact, not an approximation: an
item without interactions has a zero row and column in ``XᵀX``, so ``XᵀX + λI`` is block diagonal, the other
items' weights do not depend on it, and its own column of ``B`` is zero; such items score exactly 0, as they
would in the full solution.

Memory bound: the fit refuses, with a :class:`~llmrec.errors.CapacityError` before allocating anything, a matrix
larger than ``EASEConfig.max_memory_gb`` (default: half of this machine's memory). The fix it names: keep only
the most popular items (``max_items``; the others then score 0, an approximation), or use ALS or ItemKNN, whose
memory grows linearly with the catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from llmrec.data.dataset import Dataset
from llmrec.errors import CapacityError, ConfigError
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions

__all__ = ["EASE", "EASEConfig"]

log = logging.getLogger(__name__)

#: Rows per block when building the Gram matrix and symmetrising its inverse in place.
_SYM_BLOCK = 1024


class EASEConfig(ScorerConfig):
    """Configuration of :class:`EASE`.

    Attributes:
        l2_reg: The ridge penalty λ added to the diagonal of the Gram matrix; larger = smoother, more popular.
            The default (100) was best on MovieLens-small's leave-last-out validation split (NDCG@10 0.044 vs
            0.040 at 500); the best λ grows with the data (Steck used 200-3000 on larger sets), hence the
            tuning grid.
        dtype: Precision of the dense item-item matrix; float32 halves memory and time, and is accurate enough
            at the usual λ (hundreds).
        max_items: Keep only this many of the most popular items in the matrix (ties: lower index first); the
            others score 0. ``None`` keeps every item with an interaction (exact EASE).
        max_memory_gb: Largest item-item matrix the fit may allocate; ``None`` = half of this machine's memory.

    """

    l2_reg: float = Field(default=100.0, gt=0.0)
    dtype: Literal["float32", "float64"] = "float32"
    max_items: int | None = Field(default=None, ge=1)
    max_memory_gb: float | None = Field(default=None, gt=0.0)


def _machine_memory_bytes() -> int | None:
    """Physical memory of this machine, ``None`` where the OS does not say."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_bound(n: int, n_total: int, config: EASEConfig) -> None:
    """Raise :class:`CapacityError` when an ``n x n`` matrix exceeds the memory bound (nothing allocated yet)."""
    itemsize = np.dtype(config.dtype).itemsize
    if config.max_memory_gb is not None:
        limit = config.max_memory_gb * 1e9
        where = f"max_memory_gb={config.max_memory_gb:g}"
    else:
        machine = _machine_memory_bytes()
        if machine is None:
            return
        limit = machine / 2
        where = f"half of this machine's {machine / 1e9:.1f} GB"
    need = n * n * itemsize
    if need <= limit:
        return
    fits = int(np.sqrt(limit / itemsize))
    raise CapacityError(
        f"EASE needs a dense {n} x {n} {config.dtype} item-item matrix ({need / 1e9:.1f} GB) for the {n} items with "
        f"interactions (of {n_total}), over its bound ({where})",
        field="max_items",
        fix=(
            f"keep the most popular items only (EASEConfig(max_items={fits}) fits the bound), or use als or itemknn "
            "(memory linear in the catalogue), or raise max_memory_gb if the machine has the memory"
        ),
    )


def _gram(x: sp.csr_matrix, dtype: np.dtype) -> np.ndarray:
    """Dense ``XᵀX`` built a block of rows at a time (the sparse product of all rows can exceed the result)."""
    n = x.shape[1]
    xt = x.T.tocsr()
    gram = np.empty((n, n), dtype=dtype)
    for lo in range(0, n, _SYM_BLOCK):
        hi = min(lo + _SYM_BLOCK, n)
        gram[lo:hi] = (xt[lo:hi] @ x).toarray()
    return gram


def _spd_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix by Cholesky, overwriting ``gram``."""
    funcs = sla.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
    assert isinstance(funcs, list)  # a tuple of names gives a list of routines
    potrf, potri = funcs
    # LAPACK works in place only on Fortran-ordered arrays; the transpose of a symmetric C-ordered matrix is
    # the same matrix in Fortran order, so this avoids an n² copy.
    factor, info = potrf(gram.T, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise ConfigError(f"EASE Gram matrix is not positive definite (LAPACK info={info}); increase l2_reg")
    inv, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(f"EASE inversion failed (LAPACK info={info}); increase l2_reg")
    # potri fills the upper triangle only: mirror it into the lower one block by block (no n² temporaries).
    n = inv.shape[0]
    for lo in range(0, n, _SYM_BLOCK):
        hi = min(lo + _SYM_BLOCK, n)
        inv[lo:hi, :lo] = inv[:lo, lo:hi].T
        diag_block = inv[lo:hi, lo:hi]
        inv[lo:hi, lo:hi] = np.triu(diag_block) + np.triu(diag_block, 1).T
    return inv.T  # symmetric: the C-ordered view of the same memory


class EASE(Scorer):
    """EASE item-item regression with a zero diagonal, solved in closed form.

    Attributes:
        active_items: Dense indices of the items with training interactions (the rows/columns of ``weights``).
        weights: ``B`` restricted to ``active_items``, dense ``(n_active, n_active)``, zero diagonal.

    """

    name: ClassVar[str] = "ease"
    memory_bound: ClassVar[str] = (
        "O(I²) for the I items with interactions: one dense item x item matrix (4 bytes per cell in "
        "float32: 100k items = 40 GB) for fit, state and scoring. Bounded by EASEConfig.max_memory_gb "
        "(CapacityError above it); EASEConfig.max_items keeps only the most popular items."
    )
    config_class: ClassVar[type[ScorerConfig]] = EASEConfig
    tuning_grid: ClassVar[dict[str, list]] = {"l2_reg": [50.0, 150.0, 500.0]}

    config: EASEConfig
    active_items: np.ndarray
    weights: np.ndarray

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        start = time.perf_counter()
        dtype = np.dtype(self.config.dtype)
        popularity = data.item_popularity
        active = np.flatnonzero(popularity > 0)
        if self.config.max_items is not None and len(active) > self.config.max_items:
            top = np.lexsort((active, -popularity[active]))[: self.config.max_items]
            log.info("ease: keeping the %d most popular of %d items", self.config.max_items, len(active))
            active = np.sort(active[top])
        _check_bound(len(active), data.n_items, self.config)
        self.active_items = active
        x = data.matrix("binary")[:, self.active_items]
        n = len(self.active_items)
        log.info("ease: inverting a %d x %d %s matrix (%.2f GB)", n, n, dtype, n * n * dtype.itemsize / 1e9)
        gram = _gram(x, dtype)
        gram[np.diag_indices(n)] += dtype.type(self.config.l2_reg)
        with threadpool_limits(options.threads, "blas"):
            p = _spd_inverse(gram)
        # B = -P / diag(P) column-wise, diag(B) = 0; computed in place on P.
        p /= -np.diag(p).copy()
        p[np.diag_indices(n)] = 0.0
        self.weights = p
        log.info("ease: fitted %d items in %.2f s", n, time.perf_counter() - start)

    def _state(self) -> dict[str, np.ndarray]:
        return {"active_items": self.active_items, "weights": self.weights}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.active_items = self._array(state, "active_items", (None,))
        n = len(self.active_items)
        if n and (self.active_items.min() < 0 or self.active_items.max() >= self.data.n_items):
            raise ValueError("active_items holds indices outside the catalogue")
        self.weights = self._array(state, "weights", (n, n))

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self._score_rows(self._seen[user_idx])

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return self._score_rows(self._history_matrix(histories))

    def _score_rows(self, history: sp.csr_matrix) -> np.ndarray:
        out = np.zeros((history.shape[0], self.data.n_items), dtype=np.float64)
        # Same dtype as the weights: a float64 history would make scipy upcast (copy) the whole item-item matrix.
        out[:, self.active_items] = history[:, self.active_items].astype(self.weights.dtype) @ self.weights
        return out
