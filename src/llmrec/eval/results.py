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

__all__ = ["Comparison", "EvalResults", "ModelResult"]


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
        ci95: 95% bootstrap interval over users of every metric (:func:`llmrec.eval.stats.metric_intervals`).
        seeds: The seeds the model was fitted with; with more than one, ``metrics`` are means over seeds.
        per_seed: Test metrics of each seed, in ``seeds`` order.
        metrics_sd: Standard deviation over seeds of each metric (sample sd; only with several seeds).
        per_user: ``{"users": [external ids], "ndcg@10": [value or None], ...}``: per-user accuracy values
            (mean over seeds), so comparisons can be recomputed from the file alone (after a merge, say).
        privacy: What a private or federated fit guaranteed (:class:`~llmrec.models.base.PrivacyReport` as a
            dict: mechanism, epsilon spent, delta, noise, clipping, ...); ``None`` for an ordinary fit. With
            several seeds, the report of the first; ``epsilon_per_seed`` lists each seed's spent epsilon.

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
    ci95: dict[str, list[float]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)
    per_seed: list[dict[str, float | None]] = Field(default_factory=list)
    metrics_sd: dict[str, float | None] = Field(default_factory=dict)
    per_user: dict[str, list[Any]] = Field(default_factory=dict)
    privacy: dict[str, Any] | None = None

    @field_validator("metrics", "valid_metrics", "metrics_sd")
    @classmethod
    def _nan_to_none(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        return {k: None if v is None or math.isnan(v) else float(v) for k, v in value.items()}


class Comparison(BaseModel):
    """``a - b`` on one metric over the users both evaluated (see :func:`llmrec.eval.stats.paired_comparison`).

    ``verdict`` is ``"better"``/``"worse"`` when the 95% interval excludes zero (for a higher-is-better
    metric), otherwise ``"within noise"``.
    """

    a: str
    b: str
    metric: str
    diff: float
    ci95: list[float]
    p_value: float
    n_users: int
    verdict: str = ""


class EvalResults(BaseModel):
    """All models evaluated on one dataset, protocol and cut-off ``k``.

    ``comparisons`` hold every model against ``reference``; ``provenance`` says how the file was made (git
    commit, command line, cores, load average, wall time; :func:`llmrec.eval.provenance.provenance`).
    """

    dataset: str
    protocol: str
    k: int
    results: list[ModelResult]
    split: dict[str, Any] = Field(default_factory=dict)
    reference: str | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)
    llmrec_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def result(self, model: str) -> ModelResult:
        """The result of ``model`` (``KeyError`` if it was not evaluated)."""
        for r in self.results:
            if r.model == model:
                return r
        raise KeyError(f"no result for model {model!r}; have {[r.model for r in self.results]}")

    def write_json(self, path: str | Path) -> Path:
        """Write the results as indented JSON (parent folders are created), stamped with provenance."""
        from llmrec.eval.provenance import provenance

        if not self.provenance:
            self.provenance = provenance()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> EvalResults:
        """Read results written by :meth:`write_json` (validated)."""
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
