"""Matrix factorisation for implicit feedback via the ``implicit`` library: ALS and BPR.

Both learn user and item factors from the binary user x item matrix; ``score(u, i) = user_factors[u] ·
item_factors[i]``. ``implicit`` is imported inside ``fit`` so importing llmrec stays cheap, and the CPU classes
(``implicit.cpu``) are used directly so a machine with CUDA gives the same model as one without.

Threads: ``implicit`` runs its own thread pool (``TrainOptions.threads``, all cores when ``None``) and asks for
the BLAS pool to be single-threaded (nested pools oversubscribe the CPU and can be 10x slower); ``fit`` does that
with ``threadpoolctl.threadpool_limits(1, "blas")``, which also silences implicit's OpenBLAS warning.

Determinism (measured with implicit 0.7.3 on MovieLens, seed fixed): ALS gives bit-identical factors with any
thread count (each user/item solve is independent of the others). BPR's multi-threaded SGD is Hogwild-style
(threads update shared item factors without locks), so with more than one thread two runs differ (max score
difference ~0.1); with one thread they are identical and, on MovieLens, barely slower (2.0 s vs 1.96 s on 2
cores). :class:`BPRConfig` therefore trains on one thread unless ``deterministic=False``.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import Field
from threadpoolctl import threadpool_limits

from llmrec.data.dataset import Dataset
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions

__all__ = ["ALS", "BPR", "ALSConfig", "BPRConfig", "ImplicitMF"]

log = logging.getLogger(__name__)


class ALSConfig(ScorerConfig):
    """Configuration of :class:`ALS` (weighted matrix factorisation, Hu, Koren & Volinsky 2008).

    Attributes:
        factors: Latent dimensions.
        regularization: L2 penalty on the factors.
        alpha: Confidence scaling of observed interactions (``implicit``'s ``alpha``); higher trusts each
            observed interaction more relative to the unobserved ones.
        iterations: Alternating sweeps over users and items.

    """

    factors: int = Field(default=64, ge=1)
    regularization: float = Field(default=0.1, ge=0.0)
    alpha: float = Field(default=1.0, gt=0.0)
    iterations: int = Field(default=15, ge=1)


class BPRConfig(ScorerConfig):
    """Configuration of :class:`BPR` (Bayesian Personalised Ranking, Rendle et al. 2009).

    Attributes:
        factors: Latent dimensions (``implicit`` adds one more for the item bias).
        learning_rate: SGD step size.
        regularization: L2 penalty on the factors.
        iterations: Epochs of sampled (user, positive, negative) triples.
        deterministic: Train on one thread so a fixed seed gives identical factors; multi-threaded BPR in
            ``implicit`` is lock-free and differs run to run.

    """

    factors: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=0.01, gt=0.0)
    regularization: float = Field(default=0.01, ge=0.0)
    iterations: int = Field(default=100, ge=1)
    deterministic: bool = True


class ImplicitMF(Scorer):
    """Shared fit/score of the ``implicit`` factorisation models.

    Attributes:
        user_factors: ``(n_users, d)`` float32 (set by ``fit``).
        item_factors: ``(n_items, d)`` float32 (set by ``fit``).

    """

    memory_bound: ClassVar[str] = (
        "O((U + I) x factors) float32 factors, plus the interaction matrix and its transpose (O(N)) during "
        "fit. Linear in users and items."
    )
    stochastic: ClassVar[bool] = True
    config: ALSConfig | BPRConfig

    user_factors: np.ndarray
    item_factors: np.ndarray

    @abstractmethod
    def _make_model(self, seed: int, num_threads: int) -> Any:
        """The unfitted ``implicit`` model (called inside the single-threaded BLAS context)."""

    def _num_threads(self, options: TrainOptions) -> int:
        """Threads for implicit's own pool (0 = all cores)."""
        return options.threads or 0

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        start = time.perf_counter()
        user_items = data.matrix("binary").copy()  # implicit may sort indices in place: keep the cache intact
        with threadpool_limits(1, "blas"):
            model = self._make_model(options.seed, self._num_threads(options))
            model.fit(user_items, show_progress=options.show_progress)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        log.info(
            "%s: %d users x %d items, %d factors, %.2f s",
            self.name,
            *user_items.shape,
            self.item_factors.shape[1],
            time.perf_counter() - start,
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.user_factors = self._array(state, "user_factors", (self.data.n_users, None))
        self.item_factors = self._array(state, "item_factors", (self.data.n_items, self.user_factors.shape[1]))

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors[user_idx] @ self.item_factors.T

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """One ALS user step per history against the fitted item factors (the standard fold-in).

        Solves ``(YᵀY + (α - 1)Y_hᵀY_h + λI) x = α Y_hᵀ1`` as ``implicit`` does: every item is a zero-preference
        observation of weight 1 and each history item a positive one of confidence ``α`` (its binary value scaled
        by ``alpha``). BPR's factors are folded in the same way, with confidence 1.
        """
        y = self.item_factors.astype(np.float64)
        alpha = float(getattr(self.config, "alpha", 1.0))
        reg = max(float(self.config.regularization), 1e-6)
        gram = y.T @ y + reg * np.eye(y.shape[1])
        users = np.empty((len(histories), y.shape[1]))
        for row, items in enumerate(histories):
            yh = y[np.unique(items)]
            users[row] = np.linalg.solve(gram + (alpha - 1.0) * yh.T @ yh, alpha * yh.sum(axis=0))
        return users @ y.T


class ALS(ImplicitMF):
    """Alternating least squares with confidence weights (``implicit.cpu.als``, conjugate-gradient solver)."""

    name: ClassVar[str] = "als"
    config_class: ClassVar[type[ScorerConfig]] = ALSConfig
    tuning_grid: ClassVar[dict[str, list]] = {"factors": [32, 64], "alpha": [1.0, 5.0]}

    # implicit's penalty is not scaled by interaction counts: regularization 0.01 and 0.1 gave the same top-10
    # lists on MovieLens-small, while alpha and factors moved validation NDCG, so those are what we search.
    config: ALSConfig

    def _make_model(self, seed: int, num_threads: int) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.config.factors,
            regularization=self.config.regularization,
            alpha=self.config.alpha,
            iterations=self.config.iterations,
            num_threads=num_threads,
            random_state=seed,
        )


class BPR(ImplicitMF):
    """Bayesian personalised ranking by SGD over sampled triples (``implicit.cpu.bpr``).

    The user factors carry a constant 1 in the last column and the item factors a learned bias there, so the
    plain dot product is the model's score.
    """

    name: ClassVar[str] = "bpr"
    config_class: ClassVar[type[ScorerConfig]] = BPRConfig
    tuning_grid: ClassVar[dict[str, list]] = {"factors": [32, 64], "learning_rate": [0.01, 0.05]}

    config: BPRConfig

    def _num_threads(self, options: TrainOptions) -> int:
        if self.config.deterministic:
            if options.threads not in (None, 1):
                log.debug("bpr: deterministic=True, training on 1 thread instead of %s", options.threads)
            return 1
        return options.threads or 0

    def _make_model(self, seed: int, num_threads: int) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.config.factors,
            learning_rate=self.config.learning_rate,
            regularization=self.config.regularization,
            iterations=self.config.iterations,
            num_threads=num_threads,
            random_state=seed,
        )

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """Fold-in by BPR's own objective: gradient ascent on one user vector, item factors fixed.

        Maximises the mean of ``log σ(x·y_i - x·y_j)`` over every history item ``i`` (the most recent
        :data:`FOLD_IN_ITEMS`) and every catalogue item ``j``, minus the L2 penalty, from the mean of the history's
        factors; the last component stays 1 (it multiplies the item bias). A least-squares step, right for ALS,
        agrees poorly with BPR's fitted users (3 of 20 top items shared on MovieLens; this reaches ~13).
        """
        y = self.item_factors.astype(np.float64)
        out = np.empty((len(histories), y.shape[0]))
        for row, items in enumerate(histories):
            h = np.unique(items[-FOLD_IN_ITEMS:])
            x = y[h].mean(axis=0)
            x[-1] = 1.0
            for _ in range(FOLD_IN_STEPS):
                s = y @ x
                weight = 1.0 / (1.0 + np.exp(s[h][:, None] - s[None, :]))  # σ(s_j - s_i): the gradient's weights
                grad = (weight.sum(axis=1) @ y[h] - weight.sum(axis=0) @ y) / weight.size
                x += FOLD_IN_RATE * (grad - self.config.regularization * x)
                x[-1] = 1.0
            out[row] = y @ x
        return out


FOLD_IN_ITEMS = 256
"""How many of a history's most recent items BPR's fold-in fits (bounds its cost on long histories)."""
FOLD_IN_STEPS = 200
FOLD_IN_RATE = 0.5
