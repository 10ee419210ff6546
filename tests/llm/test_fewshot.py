"""Few-shot demonstrations: similar training users only, never the served user, never held-out events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.splits import leave_last_out
from llmrec.llm.fewshot import FewShotConfig, FewShotPool


def test_most_similar_users_first_and_never_oneself() -> None:
    rows = [("a", i, t) for t, i in enumerate("xyzw")]
    rows += [("b", i, t) for t, i in enumerate("xyzq")]  # shares three items with a
    rows += [("c", i, t) for t, i in enumerate("xpq")]  # shares one
    rows += [("d", "x", 0)]  # one item: no example to give
    data = Dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), name="tiny")
    titles = [f"T{i}" for i in data.item_vocab.ids]
    pool = FewShotPool(data, titles, FewShotConfig(shots=3, min_value=None))
    a = int(data.user_vocab.index(np.array(["a"]))[0])
    demos = pool.select(pool.liked(a), exclude_user=a)
    assert [d.answer for d in demos] == ["Tq", "Tq"]  # b then c: both end with q; a and d never appear
    assert demos[0].history == ("Tx", "Ty", "Tz")
    assert demos[1].history == ("Tx", "Tp")
    assert FewShotPool(data, titles, FewShotConfig(shots=0)).select(pool.liked(a)) == []


def test_liked_threshold_and_history_length(ml_sample: Dataset) -> None:
    titles = [str(i) for i in ml_sample.item_vocab.ids]
    pool = FewShotPool(ml_sample, titles, FewShotConfig(shots=2, history=3, min_value=4.0))
    user = 0
    liked = pool.liked(user)
    mine = ml_sample.item_idx[(ml_sample.user_idx == user) & (ml_sample.values >= 4.0)]
    np.testing.assert_array_equal(liked, mine)  # time order kept
    demos = pool.select(liked, exclude_user=user)
    assert len(demos) == 2 and all(len(d.history) <= 3 for d in demos)


def test_pool_from_fit_data_never_shows_a_held_out_event(ml_sample: Dataset) -> None:
    split = leave_last_out(ml_sample)
    fit = split.fit_data("test")
    pool = FewShotPool(fit, [str(i) for i in ml_sample.item_vocab.ids], FewShotConfig(min_value=None))
    test = split.targets("test")
    for user, item in zip(test.user_idx, test.item_idx, strict=True):
        assert item not in pool.liked(int(user))  # neither as history nor as an answer
