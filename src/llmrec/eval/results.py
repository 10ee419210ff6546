"""The results shape shared by ``llmrec evaluate`` and every benchmark (DESIGN.md "Evaluation protocol").

``{"dataset", "protocol", "k", "results": [{"model", "metrics": {"ndcg@10": ...}, "fit_s", ...}]}`` plus
provenance. Written and read as JSON (no pickle), so a report can be rebuilt from the file alone.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from llmrec import __version__

__all__ = ["EvalResults", "ModelResult"]


class ModelResult(BaseModel):
    """One model's evaluation.

    Attributes:
        model: Short scorer name plus qualifier (``"ease"``, ``"sasrec+textinit"``).
        metrics: Test metrics, keys ``name@k`` or plain names (see :mod:`llmrec.eval.metrics`); ``None`` where a
            metric is undefined (e.g. a fairness gap with an empty group), so the JSON stays standard.
        fit_s: Seconds to fit the final model (train + validation data).
        config: The configuration used for the final fit (the best one on validation when tuned).
        valid_metrics: Validation metrics of that configuration.
        tuning: Every configuration tried on validation with its validation NDCG@k.
        recommend_ms_per_user: Mean wall time of ``recommend`` per test user.
        popularity_curve: Share of recommendation slots per item-popularity decile (decile 1 = most popular
            tenth of the catalogue by training interactions), for the popularity-bias plot.
        peak_rss_mb: Peak resident memory of the process that ran this model, when measured.

    """

    model: str
    metrics: dict[str, float | None]
    fit_s: float
    config: dict[str, Any] = Field(default_factory=dict)
    valid_metrics: dict[str, float | None] = Field(default_factory=dict)
    tuning: list[dict[str, Any]] = Field(default_factory=list)
    recommend_ms_per_user: float | None = None
    popularity_curve: list[float] = Field(default_factory=list)
    peak_rss_mb: float | None = None

    @field_validator("metrics", "valid_metrics")
    @classmethod
    def _nan_to_none(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        return {k: None if v is None or math.isnan(v) else float(v) for k, v in value.items()}


class EvalResults(BaseModel):
    """All models evaluated on one dataset, protocol and cut-off ``k``."""

    dataset: str
    protocol: str
    k: int
    results: list[ModelResult]
    split: dict[str, Any] = Field(default_factory=dict)
    llmrec_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def result(self, model: str) -> ModelResult:
        """The result of ``model`` (``KeyError`` if it was not evaluated)."""
        for r in self.results:
            if r.model == model:
                return r
        raise KeyError(f"no result for model {model!r}; have {[r.model for r in self.results]}")

    def write_json(self, path: str | Path) -> Path:
        """Write the results as indented JSON (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> EvalResults:
        """Read results written by :meth:`write_json` (validated)."""
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
