"""Dialogue understanding: slot precision, recall and F1 of :func:`~llmrec.chat.parse.parse_turn` on labelled turns.

Each labelled utterance (one JSON object per line) gives the text and the slots a careful reader would fill:

- ``liked``, ``disliked``, ``seen``: catalogue titles written ``"Short Title (Year)"`` (as
  :meth:`~llmrec.catalogue.Catalogue.title` and ``year`` give them), so a label names one item exactly;
- ``genres_in``: genres asked for, one value per alternative; genres asked for together are one value joined by
  ``+`` in alphabetical order (``"Sci-Fi+Thriller"`` for "a sci-fi thriller");
- ``genres_out``: genres ruled out;
- ``years``: ``[min, max]`` (``null`` for an open end);
- ``free_text``: the descriptive words of the wish ("something with dinosaurs": ``["dinosaurs"]``);
- ``avoid``: descriptive words of what is not wanted ("less violent": ``["violent"]``);
- ``intent`` (optional): the expected intent, reported as accuracy, not as a slot.

Absent keys mean an empty slot. A parse fills the same slots from its :class:`~llmrec.chat.state.StateUpdate`
(``rejected`` counts as ``disliked``; ``genres_all`` is one ``+`` value). Every slot is a set of strings; the
free-text slots compare lower-cased words without stopwords. Per slot, true positives, false positives and false
negatives are summed over utterances (micro-averaged); ``overall`` sums them over every slot. An utterance with
every slot empty still counts: anything the parse puts there is a false positive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.chat.parse import TurnParse, parse_turn
from llmrec.errors import ConfigError
from llmrec.text.extract import STOPWORDS

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue
    from llmrec.chat.judge import SentimentJudge

__all__ = ["SLOTS", "SlotScore", "label_slots", "load_utterances", "parse_slots", "score_utterances"]

#: The slots scored, in report order.
SLOTS: tuple[str, ...] = ("liked", "disliked", "seen", "genres_in", "genres_out", "years", "free_text", "avoid")
_KEYS = frozenset(SLOTS) | {"text", "intent"}


@dataclass(frozen=True)
class SlotScore:
    """Counts and scores of one slot (or of all of them)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """Share of predicted values that are right (1.0 when nothing was predicted)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Share of labelled values found (1.0 when nothing was labelled)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready counts and scores."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def load_utterances(path: str | Path) -> list[dict[str, Any]]:
    """The labelled utterances of a JSON-lines file (see the module docstring).

    Raises:
        ConfigError: A line is not a JSON object with ``text``, or has a key that is not a slot.
    """
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ConfigError(f"{path}:{n}: each line must be a JSON object with a 'text'")
        unknown = set(row) - _KEYS
        if unknown:
            raise ConfigError(f"{path}:{n}: unknown keys {sorted(unknown)}; the slots are {list(SLOTS)}")
        rows.append(row)
    return rows


def _words(values: Iterable[str]) -> set[str]:
    return {w for v in values for w in v.lower().replace("’", "'").split() if w not in STOPWORDS}


def _titles(catalogue: Catalogue) -> dict[str, int]:
    """``"Short Title (Year)"`` -> dense index (the most popular... the first of duplicates)."""
    out: dict[str, int] = {}
    for idx in range(len(catalogue)):
        out.setdefault(f"{catalogue.title(idx)} ({catalogue.year(idx)})", idx)
    return out


def label_slots(row: Mapping[str, Any], titles: Mapping[str, int]) -> dict[str, set[str]]:
    """The labelled slots of one utterance, titles checked against the catalogue.

    Raises:
        ConfigError: A labelled title is not in the catalogue (a typo in the labels).
    """
    out: dict[str, set[str]] = {}
    for slot in ("liked", "disliked", "seen"):
        values = set(row.get(slot, []))
        missing = values - set(titles)
        if missing:
            raise ConfigError(f"labelled titles not in the catalogue: {sorted(missing)} (in {row['text']!r})")
        out[slot] = values
    out["genres_in"] = set(row.get("genres_in", []))
    out["genres_out"] = set(row.get("genres_out", []))
    low, high = row.get("years", [None, None])
    out["years"] = ({f"min:{low}"} if low is not None else set()) | ({f"max:{high}"} if high is not None else set())
    out["free_text"] = _words(row.get("free_text", []))
    out["avoid"] = _words(row.get("avoid", []))
    return out


def parse_slots(parsed: TurnParse, catalogue: Catalogue) -> dict[str, set[str]]:
    """The slots a parse fills, in the labels' terms."""
    update = parsed.update
    index = {str(item): idx for idx, item in enumerate(catalogue.item_ids)}

    def named(items: Sequence[str]) -> set[str]:
        return {f"{catalogue.title(index[i])} ({catalogue.year(index[i])})" for i in items}

    genres_in = set(update.genres_include)
    if update.genres_all:
        genres_in.add("+".join(sorted(update.genres_all)))
    years = ({f"min:{update.year_min}"} if update.year_min is not None else set()) | (
        {f"max:{update.year_max}"} if update.year_max is not None else set()
    )
    return {
        "liked": named(update.liked),
        "disliked": named(update.disliked + update.rejected),
        "seen": named(update.seen),
        "genres_in": genres_in,
        "genres_out": set(update.genres_exclude),
        "years": years,
        "free_text": _words([update.query or ""]),
        "avoid": _words(update.avoid),
    }


def score_utterances(
    rows: Sequence[Mapping[str, Any]],
    catalogue: Catalogue,
    *,
    popularity: np.ndarray | None = None,
    newest_year: int | None = None,
    judge: SentimentJudge | None = None,
) -> dict[str, Any]:
    """Slot precision/recall/F1 of :func:`parse_turn` on ``rows`` (see the module docstring).

    ``judge`` is passed to :func:`parse_turn` (the language model's liked/disliked where the rules see no cue).

    Returns:
        ``{"slots": {slot: counts and scores}, "overall": ..., "intent_accuracy": ..., "intent_n": ...,
        "utterances": n, "exact_match": share of utterances with every slot right, "errors": [...]}``; each
        error names the text, the slot, what was missed and what was wrong.
    """
    titles = _titles(catalogue)
    counts = {slot: [0, 0, 0] for slot in SLOTS}
    errors: list[dict[str, Any]] = []
    exact = 0
    intents = [0, 0]
    for row in rows:
        gold = label_slots(row, titles)
        parsed = parse_turn(row["text"], catalogue, popularity=popularity, newest_year=newest_year, judge=judge)
        got = parse_slots(parsed, catalogue)
        right = True
        for slot in SLOTS:
            tp = len(gold[slot] & got[slot])
            counts[slot][0] += tp
            counts[slot][1] += len(got[slot] - gold[slot])
            counts[slot][2] += len(gold[slot] - got[slot])
            if gold[slot] != got[slot]:
                right = False
                errors.append(
                    {
                        "text": row["text"],
                        "slot": slot,
                        "missed": sorted(gold[slot] - got[slot]),
                        "wrong": sorted(got[slot] - gold[slot]),
                    }
                )
        exact += right
        if "intent" in row:
            intents[0] += parsed.intent == row["intent"]
            intents[1] += 1
    scores = {slot: SlotScore(*c) for slot, c in counts.items()}
    overall = SlotScore(*(sum(c[k] for c in counts.values()) for k in range(3)))
    return {
        "utterances": len(rows),
        "slots": {slot: s.as_dict() for slot, s in scores.items()},
        "overall": overall.as_dict(),
        "exact_match": round(exact / len(rows), 4) if rows else 0.0,
        "intent_accuracy": round(intents[0] / intents[1], 4) if intents[1] else None,
        "intent_n": intents[1],
        "errors": errors,
    }
