"""ReDial loaders on the real shared test split and mapping, and typed errors on broken copies."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmrec.config import get_settings
from llmrec.data.movielens import bundled_movielens_path
from llmrec.data.redial import (
    Dialogue,
    Message,
    MovieAnswers,
    load_redial,
    load_redial_mapping,
    mentioned_ml_items,
)
from llmrec.errors import ConfigError, DataValidationError
from required import skip_or_fail


def _shared_datasets() -> Path:
    """The shared data folder: ``LLMREC_DATA_DIR``, else ``shared/datasets`` beside the repository."""
    env = os.environ.get("LLMREC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.fixture(scope="module")
def redial_dir() -> Path:
    folder = _shared_datasets() / "redial"
    if not (folder / "test_data.jsonl").is_file():
        message = f"ReDial not found at {folder}; set LLMREC_DATA_DIR to the shared datasets folder"
        skip_or_fail(message)
    return folder


@pytest.fixture(scope="module")
def dialogues(redial_dir: Path) -> list[Dialogue]:
    return load_redial(redial_dir)


@pytest.fixture(scope="module")
def mapping(redial_dir: Path) -> dict[str, str]:
    return load_redial_mapping(redial_dir)


@pytest.fixture
def data_env(redial_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("LLMREC_DATA_DIR", str(redial_dir.parent))
    get_settings.cache_clear()
    yield redial_dir.parent
    get_settings.cache_clear()


def _dialogue(**overrides: Any) -> dict[str, Any]:
    """A small valid dialogue in the upstream JSON layout."""
    base: dict[str, Any] = {
        "conversationId": "1",
        "initiatorWorkerId": 10,
        "respondentWorkerId": 11,
        "messages": [
            {"timeOffset": 0, "text": "I loved @100", "senderWorkerId": 10, "messageId": 1},
            {"timeOffset": 5, "text": "Try @200 or @100.", "senderWorkerId": 11, "messageId": 2},
        ],
        "movieMentions": {"100": "A (2000)", "200": "B (2001)"},
        "initiatorQuestions": {"100": {"suggested": 0, "seen": 1, "liked": 1}},
        "respondentQuestions": [],
    }
    base.update(overrides)
    return base


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the real test split ---------------------------------------------------------------------------------------


def test_test_split_has_all_dialogues_and_messages(dialogues: list[Dialogue]) -> None:
    assert len(dialogues) == 1342
    assert sum(len(d.messages) for d in dialogues) == 23_952
    assert len({d.conversation_id for d in dialogues}) == 1342
    assert all(isinstance(m, Message) for d in dialogues for m in d.messages)


def test_first_dialogue_is_parsed_field_by_field(dialogues: list[Dialogue]) -> None:
    first = dialogues[0]
    assert first.conversation_id == "20001"
    assert (first.initiator, first.respondent) == (956, 957)
    assert first.messages[0] == Message(
        text="Hi I am looking for a movie like @111776", sender=956, time_offset=0, message_id=204171
    )
    assert first.role(first.messages[0]) == "initiator"
    assert first.role(first.messages[1]) == "respondent"
    assert first.movie_mentions["111776"] == "Super Troopers (2001)"
    assert first.respondent_questions["91481"] == MovieAnswers(suggested=1, seen=2, liked=2)
    assert first.initiator_questions["101794"] == MovieAnswers(suggested=0, seen=2, liked=2)
    assert first.mentioned_ids() == ["111776", "151656", "192131", "134643", "94688", "101794", "91481", "124771"]


def test_empty_questionnaires_become_empty_dicts(dialogues: list[Dialogue]) -> None:
    # Upstream writes [] for 11 initiator and 20 respondent questionnaires.
    assert sum(not d.initiator_questions for d in dialogues) == 11
    assert sum(not d.respondent_questions for d in dialogues) == 20
    assert all(isinstance(d.initiator_questions, dict) for d in dialogues)


def test_every_mention_in_text_is_named(dialogues: list[Dialogue]) -> None:
    for d in dialogues:
        assert set(d.mentioned_ids()) <= set(d.movie_mentions), d.conversation_id


def test_default_path_comes_from_llmrec_data_dir(data_env: Path) -> None:
    assert len(load_redial()) == 1342
    assert len(load_redial_mapping()) == 4064


def test_path_may_be_the_file_itself(redial_dir: Path) -> None:
    assert len(load_redial(redial_dir / "test_data.jsonl")) == 1342


# -- mapping to MovieLens ----------------------------------------------------------------------------------------


def test_mapping_has_all_rows_and_known_links(mapping: dict[str, str]) -> None:
    assert len(mapping) == 4064
    assert mapping["111776"] == "5110"  # Super Troopers (2001)
    assert mapping["91481"] == "4085"  # Beverly Hills Cop (1984)
    assert mapping["192131"] == "2706"  # "American Pie " (no year) -> American Pie (1999), title_only_unique


def test_mapping_targets_exist_in_bundled_movielens(mapping: dict[str, str]) -> None:
    movies = pd.read_csv(bundled_movielens_path() / "movies.csv", dtype={"movieId": str})
    assert set(mapping.values()) <= set(movies["movieId"])


def test_mentioned_ml_items_in_order_of_mention(dialogues: list[Dialogue], mapping: dict[str, str]) -> None:
    first = dialogues[0]
    # American Pie is mentioned twice under two ReDial ids (192131, 134643) that map to one MovieLens movie.
    assert mentioned_ml_items(first, mapping) == ["5110", "2378", "2706", "2379", "2000", "4085", "5049"]
    assert mentioned_ml_items(first, mapping, unique=False).count("2706") == 2
    assert mentioned_ml_items(first, mapping, role="respondent") == ["2378", "2379", "2000", "4085", "5049"]
    assert mentioned_ml_items(first, mapping, role="initiator") == ["5110", "2706"]


def test_mentioned_ml_items_skips_unmapped_movies(tmp_path: Path) -> None:
    (d,) = load_redial(_write(tmp_path / "d.jsonl", [_dialogue()]))
    assert d.mentioned_ids() == ["100", "200"]
    assert d.mentioned_ids(unique=False) == ["100", "200", "100"]
    assert d.messages[1].mentions == ["200", "100"]
    assert mentioned_ml_items(d, {"200": "7"}) == ["7"]


# -- malformed input ---------------------------------------------------------------------------------------------


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "test_data.jsonl", [_dialogue(), '{"conversationId": "2", "messages": [', _dialogue()])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    problem = err.value.first
    assert (problem.source, problem.line, problem.field) == (str(path), 2, "<line>")
    assert "not valid JSON" in problem.message


def test_missing_and_mistyped_fields_are_named(tmp_path: Path) -> None:
    broken = _dialogue()
    del broken["messages"][1]["text"]
    broken["messages"][0]["timeOffset"] = "soon"
    path = _write(tmp_path / "d.jsonl", [_dialogue(), broken, _dialogue(respondentWorkerId=None)])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    found = {(p.line, p.field) for p in err.value.problems}
    assert found == {(2, "messages[1].text"), (2, "messages[0].timeOffset"), (3, "respondentWorkerId")}


def test_missing_top_level_field_is_named(tmp_path: Path) -> None:
    row = _dialogue()
    del row["movieMentions"]
    path = _write(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    assert (err.value.first.line, err.value.first.field) == (1, "movieMentions")


def test_bad_questionnaire_answer_is_named(tmp_path: Path) -> None:
    row = _dialogue(respondentQuestions={"200": {"suggested": 1, "seen": 5, "liked": 1}})
    path = _write(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    assert (err.value.first.line, err.value.first.field) == (1, "respondentQuestions.200.seen")


def test_sender_outside_the_dialogue_is_named(tmp_path: Path) -> None:
    row = _dialogue()
    row["messages"][1]["senderWorkerId"] = 99
    path = _write(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    assert err.value.first.field == "messages[1].senderWorkerId"


def test_non_object_line_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [_dialogue(), "", "[1, 2]"])
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    assert (err.value.first.line, err.value.first.field) == (3, "<line>")
    ok = _write(tmp_path / "ok.jsonl", [_dialogue(), "", _dialogue(conversationId=7)])
    loaded = load_redial(ok)
    assert [d.conversation_id for d in loaded] == ["1", "7"]
    assert loaded[0].respondent_questions == {}


def test_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(_dialogue()).encode() + b"\n" + b'{"text": "\xff"}\n')
    with pytest.raises(DataValidationError) as err:
        load_redial(path)
    assert err.value.first.line == 2


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(DataValidationError, match="no dialogues"):
        load_redial(path)


def test_unknown_split_and_missing_train_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_redial(tmp_path, split="validation")  # type: ignore[arg-type]
    with pytest.raises(DataValidationError) as err:
        load_redial(tmp_path, split="train")
    assert err.value.first.source == str(tmp_path / "train_data.jsonl")
    assert "redial_dataset.zip" in err.value.first.fix


def test_mapping_errors_name_line_and_field(tmp_path: Path) -> None:
    header = "redial_movieId,redial_movieName,ml_movieId,ml_title,match_type\n"
    path = tmp_path / "map.csv"
    path.write_text(header + "1,A,10,A,title+year\n2,B,,B,title+year\n1,A again,11,A,title+year\n")
    with pytest.raises(DataValidationError) as err:
        load_redial_mapping(path)
    found = {(p.source, p.line, p.field) for p in err.value.problems}
    assert found == {(str(path), 3, "ml_movieId"), (str(path), 4, "redial_movieId")}


def test_mapping_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("redial_movieId,movieId\n1,10\n")
    with pytest.raises(DataValidationError) as err:
        load_redial_mapping(path)
    assert err.value.first.field == "ml_movieId"


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as err:
        load_redial_mapping(tmp_path)
    assert err.value.first.source == str(tmp_path / "redial_to_ml-latest-small.csv")
