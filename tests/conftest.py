"""Shared fixtures: the bundled MovieLens data, full and as a small sample for fast tests."""

from __future__ import annotations

import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.movielens import load_movielens


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
