"""Every scorer states its memory bound; EASE refuses a catalogue over its bound with a typed error and a fix."""

from __future__ import annotations

import re

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import CapacityError, ConfigError
from llmrec.models import SCORERS, get_scorer


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_states_its_memory_bound(name: str) -> None:
    bound = SCORERS[name].memory_bound
    assert len(bound) > 20 and re.search(r"\b[UIN]\b", bound), bound


def test_ease_over_its_bound_raises_before_allocating_and_names_the_fix(ml_sample: Dataset) -> None:
    n_active = int((ml_sample.item_popularity > 0).sum())
    limit_gb = 0.5 * n_active * n_active * 4 / 1e9  # half of what the full matrix needs
    with pytest.raises(CapacityError) as info:
        get_scorer("ease", max_memory_gb=limit_gb).fit(ml_sample)
    error = info.value
    assert isinstance(error, ConfigError) and error.field == "max_items"
    assert f"{n_active} x {n_active}" in str(error) and "als or itemknn" in str(error)
    suggested = int(re.search(r"max_items=(\d+)", str(error)).group(1))  # type: ignore[union-attr]
    assert suggested < n_active and suggested**2 * 4 <= limit_gb * 1e9
    fitted = get_scorer("ease", max_memory_gb=limit_gb, max_items=suggested).fit(ml_sample)
    assert fitted.weights.shape == (suggested, suggested)


def test_ease_max_items_keeps_the_most_popular_and_the_rest_score_zero(ml_sample: Dataset) -> None:
    model = get_scorer("ease", max_items=50).fit(ml_sample)
    popularity = ml_sample.item_popularity
    assert len(model.active_items) == 50
    assert popularity[model.active_items].min() >= np.sort(popularity)[::-1][49]
    scores = model.score(ml_sample.user_vocab.ids[:3])
    others = np.setdiff1d(np.arange(ml_sample.n_items), model.active_items)
    assert np.all(scores[:, others] == 0.0)
    exact = get_scorer("ease").fit(ml_sample)
    assert len(exact.active_items) == int((popularity > 0).sum())
