"""Item and user text builders: field order, cleaning, history order, and PII never leaving user text."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, UnknownIdError
from llmrec.text import (
    ItemTextConfig,
    PiiKind,
    ScrubPolicy,
    UserTextConfig,
    detect_pii,
    item_text,
    item_texts,
    user_text,
    user_text_with_report,
    user_texts,
    user_texts_with_report,
)


@pytest.fixture
def small() -> Dataset:
    """Three users, four items; u1 has PII in the profile and a history with a repeat."""
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2", "u3"],
            "item_id": ["a", "b", "c", "a", "d", "b"],
            "timestamp": [10, 20, 30, 40, 15, 50],
            "value": [5.0, 2.0, 4.0, 5.0, 3.0, 1.0],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["21 Jump Street (2012)", "Heat (1995)", "Amélie (2001)", "What's Up, Doc? (1972)"],
            "text": [
                "<p>Two cops go undercover at a high school.</p><p>Read more</p>",
                "A &amp; B: a heist in Los Angeles.",
                "",
                None,
            ],
            "genres": ["Action|Comedy|Crime", "Action|Crime|Thriller", "Comedy|Romance", "Comedy"],
            "tags": ["undercover|Undercover|buddy cop", "", "paris", "screwball"],
            "director": ["Phil Lord|Christopher Miller", "Michael Mann", "Jean-Pierre Jeunet", ""],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "profile": [
                "I loved 21 Jump Street! Mail me at jane.doe@example.com or call +44 20 7946 0958. "
                "I live at 221B Baker Street, London NW1 6XE.",
                "<b>Heist</b> films   fan.",
                "",
            ],
        }
    )
    return Dataset(interactions, items, users, name="small")


# -- items -----------------------------------------------------------------------------------------------


def test_default_item_text_keeps_the_first_format(ml: Dataset) -> None:
    toy = ml.items[ml.items["item_id"] == "1"].iloc[0]
    assert (
        item_text(toy) == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun"
    )


def test_item_texts_cover_the_catalogue_in_index_order(ml: Dataset) -> None:
    texts = item_texts(ml)
    assert len(texts) == ml.n_items
    assert all(texts)
    i = int(ml.item_vocab.index(["1"])[0])
    assert texts[i].startswith("Toy Story (1995)")


def test_item_text_cleans_and_dedupes(small: Dataset) -> None:
    texts = item_texts(small)
    assert texts[0] == (
        "21 Jump Street (2012). Genres: Action, Comedy, Crime. Tags: undercover, buddy cop. "
        "Two cops go undercover at a high school."
    )
    assert texts[1] == "Heat (1995). Genres: Action, Crime, Thriller. A & B: a heist in Los Angeles."
    # A title ending a sentence is not followed by ". ".
    assert texts[3] == "What's Up, Doc? (1972). Genres: Comedy. Tags: screwball"
    assert item_text({"title": "What's Up, Doc?", "genres": "Comedy"}) == "What's Up, Doc? Genres: Comedy"


def test_item_text_config_order_labels_and_attributes(small: Dataset) -> None:
    config = ItemTextConfig(
        fields=("title", "year", "director", "genres", "text"),
        strip_title_year=True,
        labels={"year": "Released", "genres": "Genres", "director": "Directed by"},
        max_list_items=2,
        max_text_chars=20,
    )
    texts = item_texts(small, config)
    assert texts[0] == (
        "21 Jump Street. Released: 2012. Directed by: Phil Lord, Christopher Miller. Genres: Action, Comedy. "
        "Two cops go…"
    )
    assert texts[2] == "Amélie. Released: 2001. Directed by: Jean-Pierre Jeunet. Genres: Comedy, Romance"


def test_item_text_year_falls_back_to_the_title() -> None:
    config = ItemTextConfig(fields=("year", "title"))
    assert item_text({"title": "Heat (1995)"}, config) == "Year: 1995. Heat (1995)"
    assert item_text({"title": "Heat (1995)", "year": 1996}, config) == "Year: 1996. Heat (1995)"
    assert item_text({"title": "Heat"}, config) == "Heat"


def test_item_text_limits_tags_and_labels_other_fields() -> None:
    row = {"title": "X", "tags": "|".join(f"t{i}" for i in range(30)), "original_language": "fr"}
    assert item_text(row).count(",") == 19  # 20 tags by default
    assert item_text(row, ItemTextConfig(max_tags=3)) == "X. Tags: t0, t1, t2"
    assert item_text(row, ItemTextConfig(fields=("title", "original_language"))) == "X. Original language: fr"


def test_item_text_without_cleaning_keeps_markup() -> None:
    row = {"title": "X", "text": "<b>bold</b>"}
    assert item_text(row, ItemTextConfig(clean=None)) == "X. <b>bold</b>"
    assert item_text(row) == "X. bold"


def test_unknown_item_field_is_a_config_error(small: Dataset) -> None:
    with pytest.raises(ConfigError, match="budget"):
        item_texts(small, ItemTextConfig(fields=("title", "budget")))
    with pytest.raises(ValidationError):
        ItemTextConfig(max_tags=-1)


# -- users -----------------------------------------------------------------------------------------------


def test_user_text_scrubs_the_profile_and_reports_counts(small: Dataset) -> None:
    result = user_text_with_report(small, "u1")
    assert "jane.doe" not in result.text and "7946" not in result.text and "Baker" not in result.text
    assert result.text.startswith("I loved 21 Jump Street! Mail me at [EMAIL] or call [PHONE]. I live at [ADDRESS].")
    assert result.counts == {
        "email": 1,
        "phone": 1,
        "card": 0,
        "iban": 0,
        "ip": 0,
        "address": 1,
        "national_id": 0,
    }
    assert user_text(small, "u1") == result.text


def test_history_order_repeats_and_limits(small: Dataset) -> None:
    label = UserTextConfig().history_label
    no_profile = UserTextConfig(include_profile=False)
    # u1 saw a, b, c, a: most recent first, each item once.
    assert user_text(small, "u1", config=no_profile) == f"{label}: 21 Jump Street (2012); Amélie (2001); Heat (1995)"
    assert user_text(small, "u1", max_items=2, config=no_profile) == f"{label}: 21 Jump Street (2012); Amélie (2001)"
    chronological = user_text(small, "u1", max_items=2, recency=False, config=no_profile)
    assert chronological == f"{UserTextConfig().chronological_label}: Amélie (2001); 21 Jump Street (2012)"
    liked = UserTextConfig(include_profile=False, min_value=4.0, strip_title_year=True, history_label="Liked")
    assert user_text(small, "u1", config=liked) == "Liked: 21 Jump Street; Amélie"


def test_profile_only_and_history_only(small: Dataset) -> None:
    assert user_text(small, "u2", max_items=0) == "Heist films fan."
    assert user_text(small, "u2", config=UserTextConfig(include_history=False)) == "Heist films fan."
    assert user_text(small, "u3", config=UserTextConfig(include_history=False)) == ""
    assert user_text(small, "u2") == f"Heist films fan. {UserTextConfig().history_label}: What's Up, Doc? (1972)"


def test_history_comes_from_the_dataset_passed(small: Dataset) -> None:
    train = small.subset(small.timestamps < 25)
    text = user_text(train, "u1", config=UserTextConfig(include_profile=False))
    assert "Amélie" not in text and text.endswith("Heat (1995); 21 Jump Street (2012)")


def test_catalogue_titles_are_not_scrubbed_unless_asked(small: Dataset) -> None:
    assert "21 Jump Street!" in user_text(small, "u1", max_items=0)
    unprotected = user_text(small, "u1", max_items=0, config=UserTextConfig(protect_titles=False))
    assert unprotected.startswith("I loved [ADDRESS]!")


def test_scrub_policy_is_configurable(small: Dataset) -> None:
    config = UserTextConfig(scrub=ScrubPolicy(kinds=frozenset({PiiKind.EMAIL})))
    result = user_text_with_report(small, "u1", max_items=0, config=config)
    assert "[EMAIL]" in result.text and "+44 20 7946 0958" in result.text
    assert result.counts == {"email": 1}


def test_user_texts_match_single_user_texts(small: Dataset) -> None:
    texts = user_texts(small, max_items=2)
    assert texts == [user_text(small, u, max_items=2) for u in small.user_vocab.ids]
    reports = user_texts_with_report(small)
    assert [r.counts["email"] for r in reports] == [1, 0, 0]


def test_no_pii_reaches_user_texts(small: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llmrec.text.build"):
        texts = user_texts(small)
    # Catalogue titles (in the history, and quoted in the profile) are kept as they are.
    titles = ScrubPolicy(allow=(*small.items["title"], *(t.rsplit(" (", 1)[0] for t in small.items["title"])))
    for text in texts:
        assert detect_pii(text, titles) == []
        assert "jane.doe" not in text and "7946" not in text and "Baker" not in text
    assert "jane.doe" not in caplog.text  # the log says how much was removed, never what
    assert "email" in caplog.text


def test_unknown_user_and_bad_arguments(small: Dataset) -> None:
    with pytest.raises(UnknownIdError):
        user_text(small, "nobody")
    with pytest.raises(ConfigError):
        user_text(small, "u1", max_items=-1)


def test_user_texts_on_movielens(ml: Dataset) -> None:
    texts = user_texts(ml, max_items=5)
    assert len(texts) == ml.n_users
    assert all(t.startswith(UserTextConfig().history_label) for t in texts)
    assert all(t.count("; ") == 4 for t in texts)  # every user rated at least 20 movies
    # The first title is the user's most recent item.
    u = int(np.flatnonzero(ml.user_vocab.ids == "1")[0])
    rows = np.flatnonzero(ml.user_idx == u)
    last_item = ml.item_idx[rows[-1]]
    assert texts[u].split(": ", 1)[1].startswith(str(ml.items["title"].iat[last_item]))
