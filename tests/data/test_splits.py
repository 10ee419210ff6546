import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.splits import leave_last_out, make_split, temporal_split
from llmrec.errors import ConfigError, LeakageError


def _toy() -> Dataset:
    rows = [
        ("a", "i1", 10), ("a", "i2", 20), ("a", "i3", 30), ("a", "i4", 40),
        ("b", "i1", 15), ("b", "i3", 25), ("b", "i5", 35),
        ("c", "i2", 12), ("c", "i4", 50),  # only two events: stays in training
    ]  # fmt: skip
    return Dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), name="toy")


def test_leave_last_out_holds_out_last_and_second_last_per_user() -> None:
    split = leave_last_out(_toy())
    test = set(zip(split.test.interactions.user_id, split.test.interactions.item_id, strict=True))
    valid = set(zip(split.valid.interactions.user_id, split.valid.interactions.item_id, strict=True))
    assert test == {("a", "i4"), ("b", "i5")}
    assert valid == {("a", "i3"), ("b", "i3")}
    assert len(split.train) == 9 - 4
    assert set(split.train.interactions.user_id) == {"a", "b", "c"}
    # All parts share one vocabulary, so matrices line up.
    assert split.train.item_vocab is split.test.item_vocab


def test_leave_last_out_on_movielens_has_one_target_per_user_and_no_leakage(ml: Dataset) -> None:
    split = leave_last_out(ml)
    assert len(split.test) == len(split.valid) == ml.n_users
    assert len(split.train) + len(split.valid) + len(split.test) == len(ml)
    last_train = pd.Series(split.train.timestamps).groupby(split.train.user_idx).max()
    first_test = pd.Series(split.test.timestamps).groupby(split.test.user_idx).min()
    assert (last_train <= first_test.reindex(last_train.index)).all()
    split.check(split.fit_data("valid"), "valid")
    split.check(split.fit_data("test"), "test")
    assert len(split.fit_data("test")) == len(split.train) + len(split.valid)


def test_guard_refuses_training_on_test_targets(ml: Dataset) -> None:
    split = leave_last_out(ml)
    with pytest.raises(LeakageError, match="test target"):
        split.check(ml, "test")
    # Validation stage must not see validation targets either (train + valid is only for the final fit).
    with pytest.raises(LeakageError, match="valid target"):
        split.check(split.fit_data("test"), "valid")


def test_guard_refuses_later_interactions_of_a_user() -> None:
    data = _toy()
    split = leave_last_out(data)
    # A training event of user "a" after a's test target (time 40), on an item not in the targets.
    later = pd.DataFrame([{"user_id": "a", "item_id": "i5", "timestamp": 99, "value": 1.0, "event": "interaction"}])
    fit = Dataset(
        pd.concat([split.train.interactions, later], ignore_index=True),
        validate=False,
        user_vocab=data.user_vocab,
        item_vocab=data.item_vocab,
    )
    with pytest.raises(LeakageError, match="after their test target"):
        split.check(fit, "test")


def test_temporal_split_is_a_global_cut_with_warm_targets(ml: Dataset) -> None:
    split = temporal_split(ml, valid_fraction=0.1, test_fraction=0.1)
    assert split.train.timestamps.max() < split.valid.timestamps.min()
    assert split.valid.timestamps.max() < split.test.timestamps.min()
    assert np.isin(split.valid.user_idx, split.train.user_idx).all()
    assert np.isin(split.test.user_idx, split.fit_data("test").user_idx).all()
    split.check(split.fit_data("test"), "test")
    assert len(split.fit_data("test")) == int((ml.timestamps < split.test.timestamps.min()).sum())
    with pytest.raises(LeakageError, match="future|target"):
        split.check(ml.subset(ml.timestamps <= split.test.timestamps.min()), "test")


def test_bad_protocol_and_fractions_are_config_errors(ml: Dataset) -> None:
    with pytest.raises(ConfigError, match="leave-last-out"):
        make_split(ml, "random")
    with pytest.raises(ConfigError):
        temporal_split(ml, valid_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError):
        leave_last_out(ml, min_interactions=2)


def test_unseen_targets_drop_an_item_the_user_already_had() -> None:
    rows = [
        ("a", "i1", 10), ("a", "i2", 20), ("a", "i3", 30), ("a", "i4", 40),
        ("b", "i1", 15), ("b", "i3", 25), ("b", "i4", 30), ("b", "i1", 35),  # b's test target i1 is a re-watch
    ]  # fmt: skip
    split = leave_last_out(Dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), name="rewatch"))
    users = split.train.user_vocab.index(["a", "b"])
    truth = split.unseen_targets("test", users)
    items = split.train.item_vocab.ids
    assert [list(items[truth[r].indices]) for r in range(2)] == [["i4"], []]
    assert truth.nnz == 1  # the dropped target is gone, not stored as an explicit zero
    fit = split.fit_data("test")
    assert (split.unseen_targets("test", users, fit) != truth).nnz == 0  # passing the fit data changes nothing
