import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.splits import PROTOCOLS, cold_item_split, make_split
from llmrec.errors import ConfigError, LeakageError


def test_cold_items_are_held_out_of_training_entirely(ml_sample: Dataset) -> None:
    split = cold_item_split(ml_sample, 0.1, seed=7)
    assert split.protocol == "cold-items"
    assert split.cold_test is not None and split.cold_valid is not None
    pool = np.unique(ml_sample.item_idx)
    assert len(split.cold_test) == len(split.cold_valid) == round(0.1 * len(pool))
    assert not set(split.cold_test) & set(split.cold_valid)
    assert not np.isin(split.train.item_idx, split.cold_test).any()
    assert not np.isin(split.train.item_idx, split.cold_valid).any()
    # Every target is an interaction with a cold item, of a user the fit data knows.
    assert np.isin(split.test.item_idx, split.cold_test).all()
    assert np.isin(split.valid.item_idx, split.cold_valid).all()
    assert np.isin(split.valid.user_idx, split.train.user_idx).all()
    assert np.isin(split.test.user_idx, split.fit_data("test").user_idx).all()
    # Every interaction is in training, with a validation item, or with a test item.
    n_valid_items = np.isin(ml_sample.item_idx, split.cold_valid).sum()
    assert len(split.train) + n_valid_items + np.isin(ml_sample.item_idx, split.cold_test).sum() == len(ml_sample)
    assert len(split.test) == np.isin(ml_sample.item_idx, split.cold_test).sum()  # sample users all have history


def test_final_fit_adds_the_validation_items_but_never_the_test_items(ml_sample: Dataset) -> None:
    split = cold_item_split(ml_sample, 0.1)
    final = split.fit_data("test")
    assert np.isin(final.item_idx, split.cold_valid).sum() == np.isin(ml_sample.item_idx, split.cold_valid).sum()
    assert not np.isin(final.item_idx, split.cold_test).any()
    split.check(split.fit_data("valid"), "valid")
    split.check(final, "test")
    with pytest.raises(LeakageError, match="valid target"):
        split.check(final, "valid")
    with pytest.raises(LeakageError):
        split.check(ml_sample, "test")


def test_leakage_guard_names_a_cold_item_even_without_target_overlap(ml_sample: Dataset) -> None:
    split = cold_item_split(ml_sample, 0.1)
    cold = split.cold_test[0]
    # An interaction with a cold item by a user whose targets do not include it: no key overlap, still leakage.
    row = ml_sample.interactions.iloc[[0]].assign(item_id=ml_sample.item_vocab.id(int(cold)), timestamp=1)
    extra = Dataset(
        pd.concat([split.fit_data("test").interactions, row], ignore_index=True),
        ml_sample.items,
        name="x",
        validate=False,
        user_vocab=ml_sample.user_vocab,
        item_vocab=ml_sample.item_vocab,
    )
    with pytest.raises(LeakageError, match=f"item {ml_sample.item_vocab.id(int(cold))}"):
        split.check(extra, "test")


def test_cold_item_split_is_seeded(ml_sample: Dataset) -> None:
    a, b = cold_item_split(ml_sample, seed=1), cold_item_split(ml_sample, seed=1)
    np.testing.assert_array_equal(a.cold_test, b.cold_test)
    assert not np.array_equal(a.cold_test, cold_item_split(ml_sample, seed=2).cold_test)
    assert make_split(ml_sample, "cold-items").protocol == "cold-items"
    assert "cold-items" in PROTOCOLS
    described = a.describe()
    assert described["cold_test_items"] == len(a.cold_test) and described["protocol"] == "cold-items"


def test_cold_item_split_rejects_bad_fractions(ml_sample: Dataset) -> None:
    for bad in (0.0, 1.0, 0.6):
        with pytest.raises(ConfigError):
            cold_item_split(ml_sample, bad)
    with pytest.raises(ConfigError):
        cold_item_split(ml_sample, 0.1, valid_fraction=0.95)
