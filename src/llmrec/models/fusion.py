"""Fusion of any registered scorers: weighted score fusion or reciprocal-rank fusion (RRF).

Weighted fusion z-normalises each component's scores per user (so a dot-product model and a popularity count
are on one scale) and adds them with weights. RRF (Cormack et al. 2009) adds ``weight / (rrf_k + rank)`` and
ignores score scales altogether. Weights are chosen on validation targets by :meth:`Fusion.search_config`:
every component is fitted once, its validation scores are kept, and a simplex grid of weights is searched
without refitting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError, ConfigError
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions, top_k

__all__ = ["Fusion", "FusionComponent", "FusionConfig", "fuse_scores", "weight_grid"]


class FusionComponent(BaseModel):
    """One fused scorer: its registry name, its config and its weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0.0)


class FusionConfig(ScorerConfig):
    """Fusion settings.

    Attributes:
        components: The scorers to fuse (at least two), each with a weight.
        method: ``"weighted"`` (z-scored scores, weighted sum) or ``"rrf"`` (reciprocal-rank fusion).
        rrf_k: RRF's rank offset (60 in the original paper); larger flattens the top ranks.
        weight_step: Grid step of the weight search on validation (weights sum to 1).
    """

    components: tuple[FusionComponent, ...] = (FusionComponent(name="ease"), FusionComponent(name="als"))
    method: Literal["weighted", "rrf"] = "weighted"
    rrf_k: int = Field(default=60, ge=1)
    weight_step: float = Field(default=0.1, gt=0.0, le=0.5)

    @field_validator("components")
    @classmethod
    def _at_least_two(cls, value: tuple[FusionComponent, ...]) -> tuple[FusionComponent, ...]:
        if len(value) < 2:
            raise ValueError("fusion needs at least two components")
        if any(c.name == "fusion" for c in value):
            raise ValueError("a fusion cannot contain another fusion")
        return value


def _normalise(scores: np.ndarray, method: str, rrf_k: int) -> np.ndarray:
    """Per-user z-scores (weighted) or reciprocal ranks (rrf) of one component's scores."""
    scores = np.where(np.isfinite(scores), scores, np.nan)
    if method == "rrf":
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
        return 1.0 / (rrf_k + ranks)
    mean = np.nanmean(scores, axis=1, keepdims=True)
    std = np.nanstd(scores, axis=1, keepdims=True)
    z = (scores - mean) / np.where(std > 0, std, 1.0)
    # Items a component cannot score go below everything it can score, not to the middle.
    floor = np.nan_to_num(np.nanmin(z, axis=1, keepdims=True), nan=0.0) - 1.0
    return np.where(np.isnan(z), floor, z)


def fuse_scores(parts: list[np.ndarray], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weighted sum of already-normalised component scores."""
    out = np.zeros_like(parts[0])
    for part, weight in zip(parts, weights, strict=True):
        if weight:
            out += weight * part
    return out


def weight_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of ``n`` non-negative multiples of ``step`` that sum to 1."""
    units = round(1 / step)
    out = []
    for combo in itertools.product(range(units + 1), repeat=n):
        if sum(combo) == units:
            out.append(tuple(round(c / units, 6) for c in combo))
    return out


class Fusion(Scorer):
    """Fuses the scores of several scorers (see the module docstring)."""

    name: ClassVar[str] = "fusion"
    memory_bound: ClassVar[str] = (
        "The sum of its members' bounds, plus one (batch_size x I) score block per member while fusing."
    )
    config_class: ClassVar[type[ScorerConfig]] = FusionConfig
    config: FusionConfig

    def depends_on_seed(self) -> bool:
        """A fusion is as stochastic as its most stochastic component."""
        from llmrec.models.registry import scorer_class

        return any(scorer_class(c.name).stochastic for c in self.config.components)

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        from llmrec.models.registry import get_scorer

        self.models = [get_scorer(c.name, **c.config).fit(data, options) for c in self.config.components]

    def _state(self) -> dict[str, np.ndarray]:
        return {}  # the fitted state is the members', saved in sub-folders by _save_extra

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.models = []

    @staticmethod
    def _member_dir(folder: Path, position: int, name: str) -> Path:
        return folder / "members" / f"{position}-{name}"

    def _save_extra(self, folder: Path) -> None:
        for position, model in enumerate(self.models):
            model._save_to(self._member_dir(folder, position, model.name), data_dir=None)  # shares the fusion's data

    def _load_extra(self, folder: Path) -> None:
        models = []
        for position, component in enumerate(self.config.components):
            member = self._member_dir(folder, position, component.name)
            if not member.is_dir():
                raise ArtifactError(f"{member} is missing: the saved fusion {folder} is incomplete. Fix: save it again")
            models.append(Scorer._load_from(member, self.data))
        self.models = models

    def _parts(self, user_idx: np.ndarray) -> list[np.ndarray]:
        return [_normalise(m._score_idx(user_idx), self.config.method, self.config.rrf_k) for m in self.models]

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return fuse_scores(self._parts(user_idx), [c.weight for c in self.config.components])

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        parts = [_normalise(m.score_histories(histories), self.config.method, self.config.rrf_k) for m in self.models]
        return fuse_scores(parts, [c.weight for c in self.config.components])

    @classmethod
    def search_config(
        cls,
        config: dict[str, Any],
        fit: Dataset,
        users: np.ndarray,
        truth: sp.csr_matrix,
        *,
        k: int,
        options: TrainOptions,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Fit the components once on ``fit`` and pick the weights with the best validation NDCG@k."""
        from llmrec.eval.metrics import ndcg_at_k

        try:
            base = FusionConfig(**config)
        except ValueError as exc:
            raise ConfigError(f"invalid fusion config: {exc}") from exc
        model = cls(base).fit(fit, options)
        uidx = fit.user_vocab.index(users, missing="negative")
        parts = model._parts(uidx)
        seen = fit.matrix("binary")[np.maximum(uidx, 0)].tocoo()
        tried = []
        best: tuple[float, tuple[float, ...]] | None = None
        for weights in weight_grid(len(parts), base.weight_step):
            fused = fuse_scores(parts, weights)
            fused[seen.row, seen.col] = -np.inf
            ranked, _ = top_k(fused, k)
            score = float(np.nanmean(ndcg_at_k(ranked, truth, k)))
            tried.append({"config": {"weights": list(weights)}, f"ndcg@{k}": score})
            if best is None or score > best[0]:
                best = (score, weights)
        assert best is not None
        chosen = base.model_dump()
        for component, weight in zip(chosen["components"], best[1], strict=True):
            component["weight"] = weight
        return chosen, tried
