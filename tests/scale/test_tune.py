"""Hyperparameter search on Ray Tune gives the serial search's numbers and choices."""

from __future__ import annotations

from typing import Any

import pytest

from llmrec.data.dataset import Dataset
from llmrec.eval.runner import SerialTrials, evaluate_models
from llmrec.models.base import TrainOptions
from llmrec.scale import RayOptions
from llmrec.scale.tune import RayTuneTrials


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_ray_tune_search_matches_the_serial_search(local_ray: Any, synth_data: Dataset) -> None:
    kwargs: dict[str, Any] = {"k": 10, "options": TrainOptions(seed=3, threads=1)}
    serial = evaluate_models(synth_data, ["itemknn"], trials=SerialTrials(), **kwargs)
    parallel = evaluate_models(synth_data, ["itemknn"], trials=RayTuneTrials(RayOptions(workers=2)), **kwargs)
    (a,), (b,) = serial.results, parallel.results
    assert len(a.tuning) > 1 and a.tuning == b.tuning  # every config, every validation number
    assert a.config == b.config and a.valid_metrics == b.valid_metrics and a.metrics == b.metrics
