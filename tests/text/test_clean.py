"""Text cleaning: HTML, unicode, control characters, whitespace, boilerplate, repeated sentences, idempotence."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmrec.text.clean import (
    CleanConfig,
    clean_text,
    dedupe_sentences,
    normalize_unicode,
    remove_boilerplate,
    split_sentences,
    strip_html,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Great <b>heist</b> movie.</p>", "Great heist movie."),
        ("<p>First.</p><p>Second.</p>", "First. Second."),  # block tags separate words
        ("a<br>b<br/>c", "a b c"),
        ("<div>Plot<script>var x = '<p>';</script><style>p {color: red}</style></div>", "Plot"),
        ("<!-- hidden --> Visible", "Visible"),
        ("Tom &amp; Jerry &mdash; &quot;classic&quot; &#233;t&#xE9;", 'Tom & Jerry — "classic" été'),
        ("Fish &amp;amp; Chips", "Fish & Chips"),  # double-escaped: decoded to the end
        ("if a<b then c>d", "if a<b then c>d"),  # plain text comparisons are not tags
        ("5 <3 love", "5 <3 love"),
    ],
)
def test_html(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_strip_html_keeps_line_structure() -> None:
    assert strip_html("<ul><li>one</li><li>two</li></ul>").split() == ["one", "two"]
    assert "\n" in strip_html("<p>one</p><p>two</p>")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ﬁne ﬂight", "fine flight"),  # ligatures
        ("ＡＢＣ１２３", "ABC123"),  # full width
        ("Amélie", "Amélie"),  # decomposed e + combining accent composes
        ("no\u00a0break\u2009thin", "no break thin"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("bell\x07 null\x00 del\x7f", "bell null del"),
        ("soft\u00adhyphen", "softhyphen"),
        ("line\u2028separator", "line separator"),
        ("  lots \t of\n\n\n space  ", "lots of space"),
    ],
)
def test_unicode_and_whitespace(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_normalize_unicode_keeps_newlines_and_tabs() -> None:
    assert normalize_unicode("a\tb\nc\x00") == "a\tb\nc"


def test_keep_newlines() -> None:
    config = CleanConfig(keep_newlines=True)
    assert clean_text("<p>One  two</p>\n\n<p>Three</p>", config) == "One two\nThree"


@pytest.mark.parametrize(
    "raw",
    [
        "Great movie. Read more",
        "Great movie.\nRead more »",
        "Great movie. Read the full review.",
        "Great movie.\nClick here to subscribe!",
        "Great movie.\n© 2021 Acme Inc. All rights reserved.",
        "Great movie. Copyright 2020 Foo Media",
        "Great movie.\nShare on Facebook",
        "Great movie.\nADVERTISEMENT",
        "Great movie. Continue reading",
        "Great movie.\nSign up for our newsletter and save",
    ],
)
def test_boilerplate_is_removed(raw: str) -> None:
    assert clean_text(raw) == "Great movie."


@pytest.mark.parametrize(
    "raw",
    [
        "Copyright law is the theme of this documentary.",
        "I read more books than films.",
        "She tells him to click here and there, then leaves.",
        "The share price collapses.",
    ],
)
def test_content_that_mentions_boilerplate_words_stays(raw: str) -> None:
    assert clean_text(raw) == raw


def test_boilerplate_can_be_extended_and_turned_off() -> None:
    raw = "A spy thriller. Watch the trailer now!"
    assert clean_text(raw) == raw
    assert clean_text(raw, CleanConfig(extra_boilerplate=(r"watch the trailer(?: now)?",))) == "A spy thriller."
    assert remove_boilerplate(raw, [r"watch the trailer now"]) == "A spy thriller. "
    assert clean_text("Nice. Read more", CleanConfig(remove_boilerplate=False)) == "Nice. Read more"


def test_bad_boilerplate_pattern_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        CleanConfig(extra_boilerplate=("(unclosed",))


def test_repeated_sentences_are_dropped() -> None:
    raw = "A heist goes wrong in Paris. The crew splits up. a heist goes wrong in paris! The end."
    assert clean_text(raw) == "A heist goes wrong in Paris. The crew splits up. The end."
    # Across lines too, and only the first occurrence stays.
    assert clean_text("Best film of the year.\nBest film of the year.") == "Best film of the year."


def test_short_repeats_and_abbreviations_stay() -> None:
    assert clean_text("No. No. No.") == "No. No. No."
    assert clean_text("Dr. No meets Dr. Strangelove. J. R. R. Tolkien wrote it.") == (
        "Dr. No meets Dr. Strangelove. J. R. R. Tolkien wrote it."
    )
    assert dedupe_sentences("Go go go. Go go go.", min_words=4) == "Go go go. Go go go."
    assert clean_text("Go go go. Go go go.", CleanConfig(dedupe_sentences=False)) == "Go go go. Go go go."


def test_split_sentences() -> None:
    assert split_sentences("One. Two! Three? Four") == ["One. ", "Two! ", "Three? ", "Four"]
    assert split_sentences('He said "go." Then left.') == ['He said "go." ', "Then left."]
    assert split_sentences("Dr. Who vs. Mr. T. The end.") == ["Dr. Who vs. Mr. T. The end."]


@pytest.mark.parametrize("missing", [None, math.nan, float("nan")])
def test_missing_values_are_empty(missing: object) -> None:
    assert clean_text(missing) == ""


def test_non_strings_are_converted() -> None:
    assert clean_text(1995) == "1995"


@given(st.text())
def test_split_sentences_loses_nothing(text: str) -> None:
    assert "".join(split_sentences(text)) == text


_FRAGMENTS = st.sampled_from(
    [
        "<p>",
        "</p>",
        "<br>",
        "<b>",
        "</b>",
        "<script>x</script>",
        "<!-- c -->",
        "&amp;",
        "&lt;",
        "&gt;",
        "&amp;lt;b&amp;gt;",
        "&#233;",
        "&nbsp;",
        "Read more",
        "Click here",
        "© 2020 Acme.",
        "All rights reserved.",
        "A fine heist film.",
        "a fine heist film!",
        "Dr. No.",
        ". ",
        "! ",
        "\n",
        " ",
        "\t",
        "\u200b",
        "\x00",
        "ﬁ",
        "Ａ",
        "e\u0301",
        "<",
        ">",
        "&",
    ]
)
_MESSY = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _MESSY))
def test_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


@settings(max_examples=150, deadline=None)
@given(_MESSY)
def test_idempotent_keeping_newlines(text: str) -> None:
    config = CleanConfig(keep_newlines=True)
    once = clean_text(text, config)
    assert clean_text(once, config) == once


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _MESSY))
def test_output_is_normalized(text: str) -> None:
    out = clean_text(text)
    assert out == out.strip()
    assert "  " not in out and "\n" not in out and "\t" not in out
    assert "\x00" not in out and "\u200b" not in out
