"""Genre and year masks shared by the API's list filters and the chat's constraints."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.catalogue import Catalogue
from llmrec.data.dataset import Dataset
from llmrec.data.filters import ItemFilters
from llmrec.errors import ConfigError


def test_masks_combine_genres_exclusions_and_inclusive_years() -> None:
    filters = ItemFilters.build([("Comedy",), ("Comedy", "Horror"), ("Drama",), ()], [1994, 1999, None, 2001], "toy")
    assert filters.mask() is None
    np.testing.assert_array_equal(filters.mask(genres=["comedy"]), [True, True, False, False])
    np.testing.assert_array_equal(filters.mask(genres=["Comedy"], exclude_genres=["HORROR"]), [1, 0, 0, 0])
    np.testing.assert_array_equal(filters.mask(genres=["Comedy", "Drama"]), [1, 1, 1, 0])
    # Bounds are inclusive; an unknown year meets no bound.
    np.testing.assert_array_equal(filters.mask(year_min=1999), [False, True, False, True])
    np.testing.assert_array_equal(filters.mask(year_max=1999), [True, True, False, False])


def test_strict_masks_name_the_field_and_the_fix() -> None:
    filters = ItemFilters.build([("Comedy",), ()], [1994, None], "toy")
    with pytest.raises(ConfigError, match="unknown genre 'Western'. Fix: use known genres .*comedy") as err:
        filters.mask(exclude_genres=["Western"])
    assert err.value.field == "exclude_genres"
    with pytest.raises(ConfigError, match="is after year_max"):
        filters.mask(year_min=2000, year_max=1990)
    no_facts = ItemFilters.build([(), ()], [None, None], "bare")
    with pytest.raises(ConfigError, match="the items of 'bare' have no genres") as err:
        no_facts.mask(genres=["Comedy"])
    assert err.value.field == "genres"
    with pytest.raises(ConfigError, match="no year to filter on"):
        no_facts.mask(year_min=1990)
    # A conversation asks loosely: an unknown genre matches nothing, excluding it removes nothing.
    np.testing.assert_array_equal(filters.mask(genres=["Western"], strict=False), [False, False])
    np.testing.assert_array_equal(filters.mask(exclude_genres=["Western"], strict=False), [True, True])
    np.testing.assert_array_equal(no_facts.mask(year_min=1990, strict=False), [False, False])


def test_the_catalogue_filters_match_the_movielens_columns(ml_sample: Dataset) -> None:
    filters = Catalogue.of(ml_sample).filters()
    items = ml_sample.items
    comedy = items["genres"].str.split("|").apply(lambda g: "Comedy" in g).to_numpy()
    np.testing.assert_array_equal(filters.mask(genres=["comedy"]), comedy)
    nineties = (items["year"] >= 1990) & (items["year"] <= 1999)
    np.testing.assert_array_equal(filters.mask(year_min=1990, year_max=1999), nineties.to_numpy())
