"""Key-fact extraction: year, genres, keyphrases, ItemFacts."""

from __future__ import annotations

import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.text.extract import STOPWORDS, ItemFacts, extract_genres, extract_year, item_facts, keyphrases, word_idf


@pytest.mark.parametrize(
    ("text", "year"),
    [
        ("Toy Story (1995)", 1995),
        ("Blade Runner 2049 (2017)", 2017),
        ("2001: A Space Odyssey (1968)", 1968),
        ("1984 (1984)", 1984),
        ("Heat (a.k.a. Fire) (1995)", 1995),
        ("Lost (2004-2010)", 2004),
        ("Fargo ( 1996 )", 1996),
        ("Released in 1999, this thriller", 1999),
        ("A silent film from 1927.", 1927),
        ("Blade Runner 2049", None),  # a far-future number is not a release year
        ("Ocean's 11", None),
        ("rated 4.5/5 by 2000 critics for $1999", 2000),  # a bare count in range is taken; prices are not
        ("costs $2000, 1,999 copies, 2.2019 ratio", None),
        ("the 1990s", None),
        ("12/05/2003", None),
        ("", None),
    ],
)
def test_extract_year(text: str, year: int | None) -> None:
    assert extract_year(text, max_year=2030) == year


def test_extract_year_bounds_and_bare() -> None:
    assert extract_year("Metropolis (1927)", min_year=1930) is None
    assert extract_year("2001: A Space Odyssey", bare=False) is None
    assert extract_year("2001: A Space Odyssey") == 2001
    assert extract_year(None) is None
    assert extract_year(1995) is None


def test_extract_genres_from_field() -> None:
    assert extract_genres("Adventure|Animation|Children") == ["Adventure", "Animation", "Children"]
    assert extract_genres("sci-fi| drama |Cyberpunk|Drama") == ["Sci-Fi", "Drama", "Cyberpunk"]
    assert extract_genres(["film noir", "comedy"]) == ["Film-Noir", "Comedy"]
    assert extract_genres("(no genres listed)") == []
    assert extract_genres(None) == []
    assert extract_genres(float("nan")) == []


def test_extract_genres_from_text() -> None:
    text = "A romantic comedy set in Paris, then a spaghetti western and a gritty war drama."
    assert extract_genres(text=text) == ["Romance", "Comedy", "Western", "Drama", "War"]
    assert extract_genres(text="a war drama") == ["Drama", "War"]  # one phrase, vocabulary order
    # The field wins over the text.
    assert extract_genres("Horror", text=text) == ["Horror"]


@pytest.mark.parametrize(
    "text",
    [
        "A family with two children moves to western Europe after the war.",
        "The action never stops, the drama-free crew",
        "Science is fun.",
    ],
)
def test_extract_genres_avoids_ambiguous_words(text: str) -> None:
    found = extract_genres(text=text)
    assert "Children" not in found and "Western" not in found and "War" not in found
    assert "Sci-Fi" not in found


def test_extract_genres_custom_vocabulary() -> None:
    vocab = {"Fantasy": ("fantasy", "epic fantasy"), "Biography": ("biography", "memoir")}
    assert extract_genres(text="A memoir of an epic fantasy author", vocabulary=vocab) == ["Biography", "Fantasy"]
    assert extract_genres("memoir", vocabulary=vocab) == ["Biography"]


def test_keyphrases() -> None:
    text = (
        "A retired safe cracker plans one last heist in Monte Carlo. The heist crew includes a young "
        "getaway driver and an old safe cracker. The film is really good and the story is great."
    )
    phrases = keyphrases(text, k=4)
    assert len(phrases) == 4
    assert "retired safe cracker" in phrases
    for phrase in keyphrases(text, k=50):
        assert phrase == phrase.lower()
        assert not set(phrase.split()) & STOPWORDS
        assert 1 <= len(phrase.split()) <= 3
    assert keyphrases(text, k=4) == phrases  # deterministic
    assert keyphrases(text, k=1, max_words=1)[0].count(" ") == 0


def test_keyphrases_edge_cases() -> None:
    assert keyphrases("", 5) == []
    assert keyphrases("the and of it", 5) == []
    assert keyphrases(None, 5) == []
    assert keyphrases("heist", 0) == []
    assert keyphrases("In 1995, 20th century heist", 5) == ["century heist"]  # numbers break phrases


def test_idf_weights_change_the_ranking() -> None:
    catalogue = [f"a heist {i} in a city" for i in range(300)] + ["a submarine heist"]
    idf = word_idf(catalogue)
    assert idf["submarine"] > idf["heist"]
    text = "heist city. submarine."
    assert keyphrases(text, 1, idf=idf) == ["submarine"]
    assert keyphrases(text, 1) == ["heist city"]  # plain RAKE prefers the longer phrase


def test_item_facts_from_movielens_rows(ml: Dataset) -> None:
    toy = ml.items[ml.items["item_id"] == "1"].iloc[0]
    facts = item_facts(toy)
    assert facts == ItemFacts(
        year=1995, genres=("Adventure", "Animation", "Children", "Comedy", "Fantasy"), keyphrases=("pixar", "fun")
    )
    assert facts.to_dict() == {
        "year": 1995,
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "keyphrases": ["pixar", "fun"],
    }


def test_item_facts_from_text_only() -> None:
    row = {
        "title": "Vault",
        "text": "<p>Released in 2004, a romantic comedy about a bank vault heist in Monte Carlo.</p>",
        "year": pd.NA,
        "genres": "",
    }
    facts = item_facts(row, k=2)
    assert facts.year == 2004
    assert facts.genres == ("Romance", "Comedy", "Crime")  # "heist" names the crime genre
    assert len(facts.keyphrases) == 2
    assert all("<" not in p for p in facts.keyphrases)


def test_item_facts_title_year_beats_text_and_title_numbers_are_not_years() -> None:
    assert item_facts({"title": "Blade Runner 2049 (2017)", "text": "Set in 2049."}).year == 2017
    assert item_facts({"title": "2001: A Space Odyssey", "text": ""}).year is None
    assert item_facts({}) == ItemFacts(year=None)
