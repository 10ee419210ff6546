"""Synthetic recommendation data at any size: power-law popularity, sessions over time, item texts.

Benchmarks and tests need data bigger than the bundled MovieLens (10^5 interactions) with the shapes real logs
have, and they need it without a download. :func:`synthesize` draws it from a seed (the same config always gives
the same frames, bit for bit) with fully vectorised numpy, so 10^7 interactions take seconds:

- **Popularity** follows a power law (Zipf): the item of popularity rank ``r`` is drawn with weight
  ``r ** -popularity_exponent``. User activity is heavy-tailed too (``activity_exponent``), and every user has at
  least one interaction when there are at least as many interactions as users.
- **Sessions over time**: each user's events come in sessions (geometric length, mean ``session_length``) that
  start at uniform random times within ``days``; events inside a session are seconds to minutes apart. A session
  keeps to one topic (item category) with probability ``topic_focus``, which is what gives collaborative filtering
  and text models something to learn.
- **Item texts**: a title and a description built from the item's category words, so items of one topic read
  alike (a text encoder separates topics) while every title stays unique.

:func:`write_synth` writes ``interactions``, ``items`` and ``users`` files that ``llmrec ingest`` reads as they are,
plus ``synth.json`` with the config and the counts; ``llmrec synth`` is its command line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError

__all__ = ["SynthConfig", "SynthData", "synthesize", "write_synth"]

log = logging.getLogger(__name__)

_TOPICS = (
    "space exploration", "cooking", "detective mystery", "romance", "jazz music", "mountain hiking", "history",
    "robotics", "gardening", "football", "painting", "ocean sailing", "horror", "comedy", "chess", "photography",
    "ancient myths", "startups", "poetry", "wildlife", "cycling", "architecture", "fashion", "video games",
)  # fmt: skip
_ADJECTIVES = (
    "quiet", "bright", "hidden", "lost", "golden", "wild", "last", "secret", "broken", "silver", "endless", "little",
    "northern", "burning", "gentle", "strange",
)  # fmt: skip
_NOUNS = (
    "river", "garden", "city", "voyage", "signal", "kingdom", "letter", "machine", "harbor", "forest", "promise",
    "engine", "winter", "mirror", "island", "song",
)  # fmt: skip
_DAY = 86_400


class SynthConfig(BaseModel):
    """What :func:`synthesize` draws.

    Attributes:
        users: Number of users.
        items: Number of items (the catalogue; some tail items may get no interaction).
        interactions: Number of interaction rows.
        seed: Random seed; the same config gives identical frames.
        popularity_exponent: Zipf exponent of item popularity (about 1 in many logs; 0 = uniform).
        activity_exponent: Zipf exponent of user activity.
        topics: Item categories (each item has one; sessions keep to one with probability ``topic_focus``).
        topic_focus: Chance that an event of a session is drawn from the session's topic instead of the whole
            catalogue.
        session_length: Mean number of events per session (geometric).
        days: Time span of the log, ending at ``end``.
        end: Last possible timestamp (seconds since the epoch; fixed so runs are reproducible).
        ratings: Draw 1-5 star ratings as ``value`` (higher for on-topic events) instead of implicit 1.0.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=1000, ge=1)
    items: int = Field(default=1000, ge=1)
    interactions: int = Field(default=10_000, ge=1)
    seed: int = 0
    popularity_exponent: float = Field(default=1.0, ge=0.0, le=3.0)
    activity_exponent: float = Field(default=0.8, ge=0.0, le=3.0)
    topics: int = Field(default=20, ge=1)
    topic_focus: float = Field(default=0.8, ge=0.0, le=1.0)
    session_length: float = Field(default=8.0, ge=1.0)
    days: int = Field(default=365, ge=1)
    end: int = Field(default=1_767_225_600, ge=0)  # 2026-01-01T00:00:00Z
    ratings: bool = False

    @model_validator(mode="after")
    def _topics_fit(self) -> SynthConfig:
        """Each topic needs at least one item."""
        if self.topics > self.items:
            raise ValueError(f"topics ({self.topics}) cannot exceed items ({self.items})")
        return self


@dataclass(frozen=True)
class SynthData:
    """Frames in llmrec's canonical columns (see :mod:`llmrec.data.schema`).

    Attributes:
        interactions: ``user_id, item_id, timestamp, value, event``, in time order.
        items: ``item_id, title, text, topic``, one row per catalogue item.
        users: ``user_id, profile``, one row per user.
        config: The config that drew them.

    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    config: SynthConfig

    def to_dataset(self, name: str = "synth") -> Dataset:
        """The frames as a :class:`~llmrec.data.dataset.Dataset` (already canonical: not validated again)."""
        return Dataset(self.interactions, self.items, self.users, name=name, validate=False)


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised power-law weights over ``n`` entities, ranks assigned to entities in a random order."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    weights /= weights.sum()
    return weights[rng.permutation(n)]


def _user_counts(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: heavy-tailed, summing to ``config.interactions``, at least one each when possible."""
    base = 1 if config.interactions >= config.users else 0
    rest = config.interactions - base * config.users
    counts = rng.multinomial(rest, _zipf_weights(config.users, config.activity_exponent, rng))
    return counts.astype(np.int64) + base


def _texts(config: SynthConfig, topic: np.ndarray, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """A unique title and an on-topic description per item."""
    n = config.items
    topic_names = [_TOPICS[t % len(_TOPICS)] + (f" {t // len(_TOPICS) + 1}" if t >= len(_TOPICS) else "") for t in
                   range(config.topics)]  # fmt: skip
    adj = rng.integers(0, len(_ADJECTIVES), n)
    noun = rng.integers(0, len(_NOUNS), n)
    second = rng.integers(0, len(_TOPICS), n)
    titles = [
        f"The {_ADJECTIVES[a].title()} {_NOUNS[b].title()} #{i}" for i, (a, b) in enumerate(zip(adj, noun, strict=True))
    ]
    texts = [
        f"A story of {topic_names[t]}, with a touch of {_TOPICS[s]}: a {_ADJECTIVES[a]} {_NOUNS[b]}."
        for t, s, a, b in zip(topic, second, adj, noun, strict=True)
    ]
    return titles, texts


def synthesize(config: SynthConfig | None = None, **kwargs: object) -> SynthData:
    """Draw a synthetic dataset (see the module docstring for its shape).

    Args:
        config: What to draw.
        **kwargs: :class:`SynthConfig` fields, instead of ``config``.

    Returns:
        The interactions, items and users frames.

    Raises:
        ConfigError: Both a config and keyword arguments were given, or a field is invalid.

    """
    if config is not None and kwargs:
        raise ConfigError("pass either a SynthConfig or keyword arguments, not both")
    if config is None:
        try:
            config = SynthConfig.model_validate(kwargs)
        except ValueError as exc:
            raise ConfigError(f"invalid synth config: {exc}", fix="see llmrec synth --help") from exc
    rng = np.random.default_rng(config.seed)
    n_items, n_events = config.items, config.interactions

    # Items: a topic each (at least one item per topic), a power-law popularity over the whole catalogue.
    topic = np.concatenate([np.arange(config.topics), rng.integers(0, config.topics, n_items - config.topics)])
    rng.shuffle(topic)
    popularity = _zipf_weights(n_items, config.popularity_exponent, rng)
    # Per-topic sampling by inverse CDF: items sorted by topic, cumulative popularity normalised within each topic
    # and shifted by the topic number, so one searchsorted draws from any topic (value t + u lands in topic t).
    by_topic = np.argsort(topic, kind="stable")
    sorted_topic = topic[by_topic]
    cum = np.cumsum(popularity[by_topic])
    starts = np.searchsorted(sorted_topic, np.arange(config.topics))
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    totals = np.bincount(sorted_topic, weights=popularity[by_topic], minlength=config.topics)
    topic_cdf = (cum - before[sorted_topic]) / totals[sorted_topic] + sorted_topic
    topic_cdf[np.r_[starts[1:] - 1, n_items - 1]] = np.arange(1, config.topics + 1)  # exact ends: no overflow
    global_cdf = np.cumsum(popularity)
    global_cdf[-1] = 1.0

    # Users and their sessions: events per user, split into sessions of geometric length.
    counts = _user_counts(config, rng)
    user = np.repeat(np.arange(config.users), counts)
    new_session = rng.random(n_events) < 1.0 / config.session_length
    first = np.zeros(n_events, dtype=bool)
    first[np.cumsum(counts)[:-1][counts[1:] > 0]] = True
    first[0] = True
    new_session |= first
    session = np.cumsum(new_session) - 1
    n_sessions = int(session[-1]) + 1
    session_topic = rng.integers(0, config.topics, n_sessions)

    # Events: on-topic or global draws, seconds to minutes apart within the session.
    on_topic = rng.random(n_events) < config.topic_focus
    draw = rng.random(n_events)
    item = np.empty(n_events, dtype=np.int64)
    item[on_topic] = by_topic[
        np.minimum(np.searchsorted(topic_cdf, session_topic[session[on_topic]] + draw[on_topic], side="right"),
                   n_items - 1)
    ]  # fmt: skip
    item[~on_topic] = np.minimum(np.searchsorted(global_cdf, draw[~on_topic], side="right"), n_items - 1)
    gaps = rng.integers(5, 600, n_events)
    gaps[new_session] = 0
    offsets = np.cumsum(gaps)
    session_first = np.flatnonzero(new_session)
    offsets -= offsets[session_first][session]
    # A session starts where it still ends within the span (a session longer than the span is cut at its end).
    duration = offsets[np.r_[session_first[1:] - 1, n_events - 1]]  # offsets grow within a session
    room = np.maximum(config.days * _DAY - duration, 0)
    session_start = config.end - config.days * _DAY + (rng.random(n_sessions) * room).astype(np.int64)
    timestamp = np.minimum(session_start[session] + offsets, config.end)
    if config.ratings:
        mean = np.where(on_topic, 4.0, 3.0)
        value = np.clip(np.rint(rng.normal(mean, 0.9)), 1, 5).astype(np.float64)
    else:
        value = np.ones(n_events)

    item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    user_ids = np.array([f"u{u}" for u in range(config.users)], dtype=object)
    frame = pd.DataFrame(
        {
            "user_id": user_ids[user],
            "item_id": item_ids[item],
            "timestamp": timestamp.astype(np.int64),
            "value": value,
            "event": "interaction",
        }
    )
    # The store's unique key is (user, item, time, event): a repeat of an item at the same second is one event.
    frame = frame.drop_duplicates(["user_id", "item_id", "timestamp"], ignore_index=True)
    frame = frame.iloc[np.argsort(frame["timestamp"].to_numpy(), kind="stable")].reset_index(drop=True)
    titles, texts = _texts(config, topic, rng)
    items = pd.DataFrame({"item_id": item_ids, "title": titles, "text": texts, "topic": topic.astype(np.int64)})
    users = pd.DataFrame({"user_id": user_ids, "profile": ""})
    log.info("synthesized %d interactions, %d users, %d items", len(frame), config.users, n_items)
    return SynthData(frame, items, users, config)


def write_synth(
    config: SynthConfig, out: str | os.PathLike[str], *, format: Literal["csv", "parquet"] = "csv"
) -> dict[str, Path]:
    """Draw a dataset and write it to the folder ``out`` (created) for ``llmrec ingest``.

    Files: ``interactions.<fmt>``, ``items.<fmt>``, ``users.<fmt>`` in llmrec's canonical columns, and
    ``synth.json`` (the config and the row counts, so a benchmark can say what it ran on).

    Returns:
        ``{"interactions": path, "items": path, "users": path, "meta": path}``.

    Raises:
        ConfigError: ``out`` is an existing file, or the format is unknown.

    """
    if format not in ("csv", "parquet"):
        raise ConfigError(f"unknown format {format!r}", field="format", fix="use csv or parquet")
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file", field="out", fix="give a folder path (created if missing)")
    folder.mkdir(parents=True, exist_ok=True)
    data = synthesize(config)
    paths: dict[str, Path] = {}
    for name, frame in (("interactions", data.interactions), ("items", data.items), ("users", data.users)):
        path = folder / f"{name}.{format}"
        if format == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        paths[name] = path
    meta = {
        "config": config.model_dump(),
        "rows": {"interactions": len(data.interactions), "items": len(data.items), "users": len(data.users)},
        "files": {name: path.name for name, path in paths.items()},
    }
    paths["meta"] = folder / "synth.json"
    paths["meta"].write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return paths
