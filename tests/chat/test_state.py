"""The dialogue state: updates, later statements winning, constraints, exclusions."""

from __future__ import annotations

from llmrec.chat.state import DialogueState, StateUpdate


def test_later_statements_win_and_lists_keep_order() -> None:
    state = DialogueState().apply(StateUpdate(liked=["1", "2"], genres_include=["Comedy"]))
    state = state.apply(StateUpdate(disliked=["2"], liked=["3", "1"], genres_exclude=["Comedy"]))
    assert state.liked == ["1", "3"]
    assert state.disliked == ["2"]
    assert state.genres_include == [] and state.genres_exclude == ["Comedy"]


def test_contradicting_year_bound_replaces_the_old_one() -> None:
    state = DialogueState().apply(StateUpdate(year_min=1990, year_max=1999))
    state = state.apply(StateUpdate(year_min=2005))
    assert (state.year_min, state.year_max) == (2005, None)


def test_excluded_and_reset_and_describe() -> None:
    state = DialogueState(recommended=["9"]).apply(StateUpdate(liked=["1"], disliked=["2"], seen=["3"], rejected=["4"]))
    assert set(state.excluded()) == {"1", "2", "3", "4", "9"}
    state = state.apply(StateUpdate(genres_include=["Comedy"], genres_exclude=["Horror"], year_min=1990))
    assert state.describe() == "comedy, no horror, from 1990 on"
    fresh = state.apply(StateUpdate(reset=True, liked=["7"]))
    assert fresh.liked == ["7"] and fresh.disliked == [] and fresh.genres_exclude == []
    assert StateUpdate().empty and not StateUpdate(liked=["1"]).empty


def test_genres_together_and_avoided_words_accumulate_and_describe() -> None:
    state = DialogueState().apply(StateUpdate(genres_all=["Sci-Fi", "Thriller"], avoid=["violent"]))
    state = state.apply(StateUpdate(genres_exclude=["Thriller"], avoid=["long"]))
    assert state.genres_all == ["Sci-Fi"] and state.genres_exclude == ["Thriller"]
    assert state.avoid == ["violent", "long"]
    assert DialogueState(genres_all=["Sci-Fi", "Thriller"]).describe() == "sci-fi and thriller"
