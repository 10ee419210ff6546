"""Fixtures of the Ray batch jobs: one private local Ray per module, saved models, a small synthetic catalogue.

Ray comes with the ``scale`` extra: these tests are skipped without it, and fail under CI (``tests/required.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.synth import synthesize
from llmrec.models.base import TrainOptions
from llmrec.models.registry import get_scorer
from llmrec.pipeline import Pipeline, PipelineConfig
from required import require


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A private local Ray for the module (every job of it reuses the session instead of starting one each)."""
    ray = require("ray", "scale")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def synth_data() -> Dataset:
    """A small synthetic dataset: 150 users, 120 items, 3,000 interactions."""
    return synthesize(users=150, items=120, interactions=3000, seed=11).to_dataset("synth-small")


@pytest.fixture(scope="session")
def saved_pipeline(synth_data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ALS pipeline (no LM rerank) fitted on the synthetic data and saved as `llmrec train` saves it."""
    config = PipelineConfig.model_validate({"retriever": {"name": "als", "config": {"factors": 16}}, "rerank": None})
    folder = tmp_path_factory.mktemp("models") / "als"
    Pipeline(config).fit(synth_data, TrainOptions(seed=1)).save(folder)
    return folder


@pytest.fixture(scope="session")
def saved_scorer(synth_data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ItemKNN scorer saved with Scorer.save."""
    folder = tmp_path_factory.mktemp("models") / "itemknn"
    get_scorer("itemknn").fit(synth_data).save(folder)
    return folder
