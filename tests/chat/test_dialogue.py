"""Dialogue understanding on the real MovieLens catalogue: each phenomenon the chat used to get wrong, and a
multi-turn conversation in which every stated constraint must hold in every answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmrec.catalogue import Catalogue
from llmrec.chat import ConversationalRecommender, DialogueState
from llmrec.chat.link import normalize_title
from llmrec.chat.parse import TurnParse, parse_turn
from llmrec.data.dataset import Dataset
from llmrec.eval.dialogue import SLOTS, load_utterances, score_utterances
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec

UTTERANCES = Path(__file__).parent / "data" / "utterances.jsonl"


@pytest.fixture(scope="module")
def catalogue(ml: Dataset) -> Catalogue:
    return Catalogue.of(ml)


def read(text: str, catalogue: Catalogue, ml: Dataset, **kw: Any) -> TurnParse:
    return parse_turn(text, catalogue, popularity=ml.item_popularity, newest_year=2018, **kw)


def titles(ids: list[str], catalogue: Catalogue, ml: Dataset) -> list[str]:
    return [catalogue.title(int(ml.item_vocab.index([i])[0])) for i in ids]


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("I liked Jurasic Park", "Jurassic Park"),  # misspelled
        ("i loved forest gump", "Forrest Gump"),  # misspelled, lower case
        ("I loved Lord of the Rings", "The Lord of the Rings: The Fellowship of the Ring"),  # shortened
        ("Eternal Sunshine was great", "Eternal Sunshine of the Spotless Mind"),  # shortened
        ("I liked Kill Bill", "Kill Bill: Vol. 1"),  # shortened to the part before the colon
        ("I loved spiderman", "Spider-Man"),  # punctuated differently
        ("Wall-E was adorable", "WALL·E"),
        ("I liked Monsters Inc", "Monsters, Inc."),
        ("Dumb and Dumber is hilarious", "Dumb & Dumber"),
        ("loved godfather part 2", "The Godfather: Part II"),
        ("didn't like The Phantom Menace", "Star Wars: Episode I - The Phantom Menace"),
    ],
)
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_titles_are_linked_as_people_write_them(text: str, title: str, catalogue: Catalogue, ml: Dataset) -> None:
    update = read(text, catalogue, ml).update
    assert titles(update.liked + update.disliked, catalogue, ml) == [title]


def test_normalisation_reads_punctuation_numbers_and_accents_alike() -> None:
    assert normalize_title("Léon: The Professional") == normalize_title("Leon the Professional")
    assert normalize_title("Ocean's Eleven") == normalize_title("Oceans 11")
    assert normalize_title("Back to the Future Part II") == normalize_title("back to the future part 2")


def test_a_stray_word_is_neither_a_title_nor_a_search(catalogue: Catalogue, ml: Dataset) -> None:
    update = read("thumbs down on jurassic park", catalogue, ml).update
    assert titles(update.disliked, catalogue, ml) == ["Jurassic Park"]
    assert update.query is None and not update.liked
    # Plain words in a description are not titles, even where a film has that name ("Dinosaur", "Road Trip").
    for text, words in [("something with dinosaurs", "dinosaurs"), ("a film about a road trip", "road trip")]:
        update = read(text, catalogue, ml).update
        assert not (update.liked or update.disliked or update.seen), text
        assert update.query == words


def test_seen_items_including_shortened_and_misspelled_titles(catalogue: Catalogue, ml: Dataset) -> None:
    for text in ["I've seen Jurassic Park", "already watched jurasic park", "jurassic park, seen it"]:
        update = read(text, catalogue, ml).update
        assert titles(update.seen, catalogue, ml) == ["Jurassic Park"], text
        assert not update.liked, text
    # A stated sentiment beats "seen": both exclude the film, only one says what the person enjoys.
    update = read("I've seen Fargo and loved it", catalogue, ml).update
    assert titles(update.liked, catalogue, ml) == ["Fargo"] and not update.seen


def test_negations_and_comparatives_are_not_wishes(catalogue: Catalogue, ml: Dataset) -> None:
    update = read("something like Heat but less violent", catalogue, ml).update
    assert titles(update.liked, catalogue, ml) == ["Heat"]
    assert update.avoid == ["violent"] and update.query is None
    update = read("not too long", catalogue, ml).update
    assert update.avoid == ["long"] and update.query is None
    update = read("less scary please", catalogue, ml).update
    assert update.genres_exclude == ["Horror"] and not update.genres_include
    # A negation reaches to the next comma: what follows is asked for again.
    update = read("no horror, something funny", catalogue, ml).update
    assert update.genres_exclude == ["Horror"] and update.genres_include == ["Comedy"]
    update = read("anything but westerns", catalogue, ml).update
    assert update.genres_exclude == ["Western"] and not update.genres_include


def test_genres_named_together_are_all_required(catalogue: Catalogue, ml: Dataset) -> None:
    update = read("a sci-fi thriller", catalogue, ml).update
    assert sorted(update.genres_all) == ["Sci-Fi", "Thriller"] and not update.genres_include
    assert sorted(read("a funny horror movie", catalogue, ml).update.genres_all) == ["Comedy", "Horror"]
    update = read("comedies or dramas", catalogue, ml).update
    assert update.genres_include == ["Comedy", "Drama"] and not update.genres_all


def test_describing_a_title_asks_for_nothing(catalogue: Catalogue, ml: Dataset) -> None:
    update = read("Goodfellas is a great gangster film", catalogue, ml).update
    assert titles(update.liked, catalogue, ml) == ["Goodfellas"]
    assert not update.genres_include and update.query is None
    assert read("Terminator 2 is a classic, I loved it", catalogue, ml).update.year_max is None


def test_labelled_set_is_scored_per_slot(catalogue: Catalogue, ml: Dataset) -> None:
    rows = load_utterances(UTTERANCES)
    assert len(rows) >= 200
    report = score_utterances(rows[:40], catalogue, popularity=ml.item_popularity, newest_year=2018)
    assert set(report["slots"]) == set(SLOTS)
    liked = report["slots"]["liked"]
    assert liked["tp"] + liked["fn"] > 0 and 0.0 <= liked["f1"] <= 1.0
    # A wrong parse costs: the same rows with every label moved to the wrong slot score far lower.
    swapped = [{"text": r["text"], "disliked": r.get("liked", []), "liked": r.get("disliked", [])} for r in rows[:40]]
    worse = score_utterances(swapped, catalogue, popularity=ml.item_popularity, newest_year=2018)
    assert worse["overall"]["f1"] < report["overall"]["f1"] - 0.3


FAST = PipelineConfig(retriever=RetrieverSpec(name="itemknn"), candidates=20, rerank=None)


def holds(state: DialogueState, item: Any, shown: set[str]) -> list[str]:
    """Every constraint of ``state`` that ``item`` breaks."""
    broken = []
    genres = set(item.genres)
    if not set(state.genres_all) <= genres:
        broken.append(f"needs {state.genres_all}")
    if state.genres_include and not set(state.genres_include) & genres:
        broken.append(f"needs one of {state.genres_include}")
    if set(state.genres_exclude) & genres:
        broken.append(f"has excluded {state.genres_exclude}")
    if state.year_min is not None and (item.year or 0) < state.year_min:
        broken.append(f"before {state.year_min}")
    if state.year_max is not None and (item.year or 10_000) > state.year_max:
        broken.append(f"after {state.year_max}")
    if item.item_id in set(state.disliked + state.seen + state.liked + state.rejected) | shown:
        broken.append("disliked, seen, liked or shown before")
    return broken


def test_every_stated_constraint_holds_in_every_answer(ml_sample: Dataset) -> None:
    chat = ConversationalRecommender(Pipeline(FAST).fit(ml_sample))
    session = chat.start()
    shown: set[str] = set()
    turns = [
        "I loved Toy Stroy, and I've seen Jurasic Park",
        "a sci-fi thriller from the 90s please",
        "no horror, and nothing before 1993",
        "I've seen Twelve Monkeys and Independence Day",
        "thumbs down on the matrix, something less violent",
        "more like Terminator 2",
    ]
    for text in turns:
        reply = chat.turn(session.id, text)
        assert reply.items, f"nothing recommended after {text!r}: the check below would prove nothing"
        for item in reply.items:
            assert not holds(reply.state, item, shown), (text, item.title, holds(reply.state, item, shown))
        shown |= {i.item_id for i in reply.items}
    state = reply.state
    names = {chat.catalogue.title(int(ml_sample.item_vocab.index([i])[0])) for i in state.seen + state.disliked}
    assert {"Jurassic Park", "Twelve Monkeys", "Independence Day", "The Matrix"} <= names
    assert sorted(state.genres_all) == ["Sci-Fi", "Thriller"] and state.genres_exclude == ["Horror"]
    assert (state.year_min, state.year_max) == (1993, 1999) and state.avoid == ["violent"]


def test_a_description_the_chat_cannot_search_is_said(ml_sample: Dataset) -> None:
    chat = ConversationalRecommender(Pipeline(FAST).fit(ml_sample))
    reply = chat.turn(chat.start().id, "something with dinosaurs")
    assert reply.state.query == "dinosaurs"
    assert "can't search by description" in reply.text and "dinosaurs" in reply.text
