"""Reading feedback back: polarity of one interaction, and the taste of a person's interactions since the fit."""

from __future__ import annotations

import math

from llmrec.feedback import FEEDBACK_VALUES, polarity, taste_of


def test_polarity_reads_thumbs_by_kind_and_everything_else_by_value() -> None:
    assert polarity("thumbs_up", FEEDBACK_VALUES["thumbs_up"]) == "liked"
    assert polarity("thumbs_down", 5.0) == "disliked"  # the kind wins over a value
    assert polarity("seen", 5.0) == "neutral"
    assert [polarity("rating", v) for v in (4.0, 3.5, 2.0)] == ["liked", "neutral", "disliked"]
    assert polarity(None, None) == "liked" and polarity("play", math.nan) == "liked"  # implicit data


def test_taste_keeps_first_touch_order_and_the_latest_reading() -> None:
    rows = [("a", "thumbs_down", 1.0), ("b", "rating", 4.5), ("c", "seen", 3.0), ("a", "thumbs_up", 5.0), (7, None, 2)]
    taste = taste_of(rows)
    assert taste.touched == ["a", "b", "c", "7"]
    assert taste.liked == ["a", "b"] and taste.disliked == ["7"]
    assert taste and not taste_of([])
