"""ReDial conversational recommendation dialogues (Li et al., NeurIPS 2018; CC BY 4.0), and their MovieLens links.

Each dialogue is a chat between a *seeker* (the initiator) and a *recommender* (the respondent) who were asked to
talk about movies. Movies appear in the text as ``@<redial movieId>``; ``movieMentions`` names them, and both
workers answered, per movie, whether it was suggested by the recommender, whether the seeker had seen it, and
whether the seeker liked it.

The shared data folder holds the test split (1,342 dialogues) and ``redial_to_ml-latest-small.csv``, a derived map
from ReDial movie ids to MovieLens ml-latest-small ``movieId`` (4,064 movies; see the datasets README for how it
was built). This module only loads and validates; the evaluation protocol lives elsewhere.

Attribution (CC BY 4.0): cite Li et al. 2018, "Towards Deep Conversational Recommendations". The mapping file also
contains MovieLens titles, so it falls under the GroupLens terms too (non-commercial research).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from llmrec.data.download import external_data_dir
from llmrec.errors import ConfigError, DataProblem, DataValidationError

__all__ = [
    "MAPPING_FILE",
    "MENTION_PATTERN",
    "Dialogue",
    "Message",
    "MovieAnswers",
    "load_redial",
    "load_redial_mapping",
    "mentioned_ml_items",
]

DATASET_DIR = "redial"
MAPPING_FILE = "redial_to_ml-latest-small.csv"
"""File name of the ReDial -> MovieLens id map in the ``redial`` data folder."""

MENTION_PATTERN = re.compile(r"@(\d+)")
"""A movie mention in message text: ``@`` followed by the ReDial movie id (group 1)."""

Role = Literal["initiator", "respondent"]
Split = Literal["train", "test"]

_OFFICIAL = "https://github.com/ReDialData/website/tree/data (redial_dataset.zip)"
_ANSWER_KEYS = ("suggested", "seen", "liked")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    Attributes:
        text: The message, with movies written as ``@<redial movieId>``.
        sender: Worker id of the sender (equal to the dialogue's ``initiator`` or ``respondent``).
        time_offset: Seconds since the start of the conversation.
        message_id: Id of the message, unique in the dataset.

    """

    text: str
    sender: int
    time_offset: int
    message_id: int

    @property
    def mentions(self) -> list[str]:
        """ReDial movie ids mentioned in the text, in order (repeats kept)."""
        return MENTION_PATTERN.findall(self.text)


@dataclass(frozen=True, slots=True)
class MovieAnswers:
    """One worker's answers about one mentioned movie (the post-chat questionnaire).

    Attributes:
        suggested: 1 when the recommender (respondent) suggested the movie, 0 when the seeker brought it up.
        seen: Whether the seeker has seen it: 0 no, 1 yes, 2 did not say.
        liked: Whether the seeker liked it (or liked the suggestion): 0 no, 1 yes, 2 did not say.

    """

    suggested: int
    seen: int
    liked: int


@dataclass(frozen=True, slots=True)
class Dialogue:
    """One ReDial conversation.

    Attributes:
        conversation_id: Id of the conversation (a string, as in the file).
        initiator: Worker id of the seeker, who asks for recommendations.
        respondent: Worker id of the recommender.
        messages: The messages in the order of the file (which is chronological).
        movie_mentions: ReDial movie id -> movie name as written in the dataset (e.g. "Super Troopers (2001)").
        initiator_questions: The seeker's answers per mentioned movie id (empty when the seeker gave none).
        respondent_questions: The recommender's answers per mentioned movie id (empty when none were given).

    """

    conversation_id: str
    initiator: int
    respondent: int
    messages: tuple[Message, ...]
    movie_mentions: dict[str, str]
    initiator_questions: dict[str, MovieAnswers]
    respondent_questions: dict[str, MovieAnswers]

    def role(self, message: Message) -> Role:
        """Whether ``message`` was written by the ``"initiator"`` (seeker) or the ``"respondent"`` (recommender)."""
        return "initiator" if message.sender == self.initiator else "respondent"

    def mentioned_ids(self, *, unique: bool = True, role: Role | None = None) -> list[str]:
        """ReDial movie ids mentioned in the messages, in order of first mention.

        Args:
            unique: Keep only the first mention of each movie.
            role: Only mentions in messages by this participant; all messages when ``None``.

        """
        ids = [
            movie
            for message in self.messages
            if role is None or self.role(message) == role
            for movie in message.mentions
        ]
        return list(dict.fromkeys(ids)) if unique else ids


def mentioned_ml_items(
    dialogue: Dialogue, mapping: dict[str, str], *, unique: bool = True, role: Role | None = None
) -> list[str]:
    """MovieLens item ids of the movies mentioned in a dialogue, in order of mention.

    Mentions are read from the message text (``@<redial movieId>``), because the text gives the order in which
    movies came up, which ``movie_mentions`` (a map) does not. Movies without a MovieLens match are skipped.

    Args:
        dialogue: The conversation.
        mapping: ReDial movie id -> MovieLens ``movieId``, as from :func:`load_redial_mapping`.
        unique: Keep only the first mention of each MovieLens item.
        role: Only movies mentioned by this participant (``"respondent"`` for what the recommender brought up).

    Returns:
        MovieLens ``movieId`` strings (the ``item_id`` of the MovieLens dataset).

    """
    items = [mapping[m] for m in dialogue.mentioned_ids(unique=False, role=role) if m in mapping]
    return list(dict.fromkeys(items)) if unique else items


# -- parsing ---------------------------------------------------------------------------------------------------


_MISSING: Any = object()
"""Marks a field that is absent from a JSON object (as opposed to present and ``null``)."""


class _Row:
    """Collects the problems of one JSON line while its fields are read."""

    def __init__(self, source: str, line: int, problems: list[DataProblem]) -> None:
        self.source = source
        self.line = line
        self.problems = problems
        self.ok = True

    def problem(self, field: str, message: str, fix: str) -> None:
        self.ok = False
        self.problems.append(DataProblem(self.source, self.line, field, message, fix))

    def get(self, obj: dict[str, Any], key: str, where: str) -> Any:
        """``obj[key]``, or :data:`_MISSING` (with a problem) when the key is absent."""
        if key not in obj:
            self.problem(where, "field is missing", "use the upstream ReDial file, which has this field on every line")
            return _MISSING
        return obj[key]

    def integer(self, obj: dict[str, Any], key: str, where: str) -> int:
        value = self.get(obj, key, where)
        if value is _MISSING:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"expected an integer, got {value!r}", "write a whole number")
            return 0
        return value

    def string(self, obj: dict[str, Any], key: str, where: str) -> str:
        value = self.get(obj, key, where)
        if value is _MISSING:
            return ""
        if not isinstance(value, str):
            self.problem(where, f"expected a string, got {type(value).__name__}", "write a JSON string")
            return ""
        return value


def _mentions(row: _Row, raw: Any) -> dict[str, str]:
    if raw is _MISSING or raw is None or raw == []:  # upstream writes [] for "none"
        return {}
    if not isinstance(raw, dict):
        row.problem("movieMentions", f"expected an object, got {type(raw).__name__}", "write {movieId: name}")
        return {}
    out: dict[str, str] = {}
    for movie, name in raw.items():
        if name is not None and not isinstance(name, str):
            row.problem(f"movieMentions.{movie}", f"expected a movie name, got {name!r}", "write the name as a string")
            continue
        out[str(movie)] = (name or "").strip()
    return out


def _answers(row: _Row, raw: Any, key: str) -> dict[str, MovieAnswers]:
    if raw is _MISSING or raw is None or raw == []:  # upstream writes [] when the worker answered nothing
        return {}
    if not isinstance(raw, dict):
        row.problem(key, f"expected an object, got {type(raw).__name__}", "write {movieId: {suggested, seen, liked}}")
        return {}
    out: dict[str, MovieAnswers] = {}
    for movie, answer in raw.items():
        where = f"{key}.{movie}"
        if not isinstance(answer, dict):
            row.problem(where, f"expected an object, got {answer!r}", "write {suggested, seen, liked}")
            continue
        values = []
        for name in _ANSWER_KEYS:
            before = len(row.problems)
            value = row.integer(answer, name, f"{where}.{name}")
            if len(row.problems) == before and value not in (0, 1, 2):
                row.problem(
                    f"{where}.{name}", f"answer {value} is not 0, 1 or 2", "use 0 (no), 1 (yes) or 2 (did not say)"
                )
            values.append(value)
        out[str(movie)] = MovieAnswers(*values)
    return out


def _parse(obj: Any, row: _Row) -> Dialogue | None:
    if not isinstance(obj, dict):
        row.problem("<line>", f"expected a JSON object, got {type(obj).__name__}", "write one dialogue object per line")
        return None
    conversation = row.get(obj, "conversationId", "conversationId")
    if conversation is not _MISSING and (isinstance(conversation, bool) or not isinstance(conversation, str | int)):
        row.problem("conversationId", f"expected a string id, got {conversation!r}", "write the id as a string")
    initiator = row.integer(obj, "initiatorWorkerId", "initiatorWorkerId")
    respondent = row.integer(obj, "respondentWorkerId", "respondentWorkerId")
    raw_messages = row.get(obj, "messages", "messages")
    messages: list[Message] = []
    if raw_messages is not _MISSING and not isinstance(raw_messages, list):
        row.problem("messages", f"expected a list, got {type(raw_messages).__name__}", "write a list of messages")
    elif raw_messages is not _MISSING:
        for i, msg in enumerate(raw_messages):
            where = f"messages[{i}]"
            if not isinstance(msg, dict):
                row.problem(
                    where, f"expected an object, got {msg!r}", "write {text, senderWorkerId, timeOffset, messageId}"
                )
                continue
            message = Message(
                text=row.string(msg, "text", f"{where}.text"),
                sender=row.integer(msg, "senderWorkerId", f"{where}.senderWorkerId"),
                time_offset=row.integer(msg, "timeOffset", f"{where}.timeOffset"),
                message_id=row.integer(msg, "messageId", f"{where}.messageId"),
            )
            if row.ok and message.sender not in (initiator, respondent):
                row.problem(
                    f"{where}.senderWorkerId",
                    f"sender {message.sender} is neither the initiator ({initiator}) nor the respondent ({respondent})",
                    "fix the worker ids of this dialogue",
                )
            messages.append(message)
    mentions = _mentions(row, row.get(obj, "movieMentions", "movieMentions"))
    initiator_questions = _answers(row, row.get(obj, "initiatorQuestions", "initiatorQuestions"), "initiatorQuestions")
    respondent_questions = _answers(
        row, row.get(obj, "respondentQuestions", "respondentQuestions"), "respondentQuestions"
    )
    if not row.ok:
        return None
    return Dialogue(
        conversation_id=str(conversation),
        initiator=initiator,
        respondent=respondent,
        messages=tuple(messages),
        movie_mentions=mentions,
        initiator_questions=initiator_questions,
        respondent_questions=respondent_questions,
    )


def _split_file(path: str | Path | None, split: str) -> Path:
    """The JSON-lines file of ``split``: ``path`` itself when it is a file, else looked up in the folder."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown ReDial split {split!r}; use 'train' or 'test'")
    if path is not None and Path(path).is_file():
        return Path(path)
    folder = Path(path) if path is not None else external_data_dir(DATASET_DIR)
    candidates = [folder / f"{split}_data.jsonl", folder / f"{split}_data"]  # zip name, and the data branch's name
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    fix = (
        f"download {_OFFICIAL} and extract {split}_data.jsonl into {folder}"
        if split == "train"
        else f"point to the folder that holds test_data.jsonl (e.g. shared/datasets/redial), or get it from {_OFFICIAL}"
    )
    raise DataValidationError([DataProblem(str(candidates[0]), None, None, "file not found", fix)])


def load_redial(path: str | Path | None = None, split: Split = "test") -> list[Dialogue]:
    """Load ReDial dialogues from a JSON-lines file (one dialogue per line), validating every line.

    Upstream quirks are normalised: an empty ``movieMentions`` or questionnaire written as ``[]`` becomes ``{}``,
    a missing movie name becomes ``""``, and blank lines are skipped.

    Args:
        path: A ReDial JSON-lines file, or the folder holding ``<split>_data.jsonl`` (or ``<split>_data``);
            ``<LLMREC_DATA_DIR>/redial`` when ``None``.
        split: ``"test"`` (1,342 dialogues, in the shared data folder) or ``"train"`` (10,006; download it).

    Returns:
        The dialogues in file order.

    Raises:
        ConfigError: ``split`` is not ``"train"`` or ``"test"``.
        DataValidationError: The file is missing, or lines are not valid JSON or lack fields or have fields of the
            wrong type; every problem names the file, the line and the field (e.g. ``messages[3].text``).

    """
    file = _split_file(path, split)
    source = str(file)
    problems: list[DataProblem] = []
    dialogues: list[Dialogue] = []
    with file.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            row = _Row(source, line_no, problems)
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                row.problem("<line>", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8")
                continue
            except json.JSONDecodeError as exc:
                row.problem("<line>", f"not valid JSON ({exc.msg} at column {exc.colno})", "fix or remove the line")
                continue
            dialogue = _parse(obj, row)
            if dialogue is not None:
                dialogues.append(dialogue)
    if problems:
        raise DataValidationError(problems)
    if not dialogues:
        raise DataValidationError(
            [DataProblem(source, None, None, "the file holds no dialogues", "point to a ReDial JSON-lines file")]
        )
    return dialogues


def load_redial_mapping(path: str | Path | None = None) -> dict[str, str]:
    """Load the ReDial movie id -> MovieLens ml-latest-small ``movieId`` map.

    Args:
        path: The CSV (columns ``redial_movieId`` and ``ml_movieId``; others are ignored) or the folder holding
            ``redial_to_ml-latest-small.csv``; ``<LLMREC_DATA_DIR>/redial`` when ``None``.

    Returns:
        ReDial id -> MovieLens id, both as strings, in file order (4,064 entries for the shared file).

    Raises:
        DataValidationError: The file or a column is missing, an id is empty or not a number, or a ReDial id is
            mapped twice; problems name the file, line and field.

    """
    if path is None:
        file = external_data_dir(DATASET_DIR) / MAPPING_FILE
    else:
        file = Path(path) / MAPPING_FILE if Path(path).is_dir() else Path(path)
    source = str(file)
    if not file.is_file():
        raise DataValidationError(
            [DataProblem(source, None, None, "file not found", f"point to {MAPPING_FILE} or the folder holding it")]
        )
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(
            [DataProblem(source, None, None, f"not a readable CSV file ({exc})", "use the shared mapping file")]
        ) from exc
    required = ("redial_movieId", "ml_movieId")
    problems = [
        DataProblem(
            source,
            None,
            col,
            f"required column '{col}' is missing (have: {list(frame.columns)})",
            "use the shared mapping file",
        )
        for col in required
        if col not in frame.columns
    ]
    if problems:
        raise DataValidationError(problems)
    mapping: dict[str, str] = {}
    for pos, (redial_id, ml_id) in enumerate(zip(frame["redial_movieId"], frame["ml_movieId"], strict=True)):
        line = pos + 2  # the header is line 1
        redial_id, ml_id = redial_id.strip(), ml_id.strip()
        for field, value in (("redial_movieId", redial_id), ("ml_movieId", ml_id)):
            if not value.isdigit():
                problems.append(
                    DataProblem(source, line, field, f"{value!r} is not a movie id", "write the numeric movie id")
                )
        if redial_id in mapping and redial_id.isdigit():
            problems.append(
                DataProblem(
                    source,
                    line,
                    "redial_movieId",
                    f"ReDial movie {redial_id} is mapped twice",
                    "keep one row per ReDial movie",
                )
            )
        mapping.setdefault(redial_id, ml_id)
    if problems:
        raise DataValidationError(problems)
    return mapping
