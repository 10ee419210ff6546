"""Item and user texts: what the encoder embeds and what prompts quote.

An item's text is built from its fields in a configurable order (:class:`ItemTextConfig`): title, year,
genres, tags, description and any other attribute column, each cleaned (:func:`~llmrec.text.clean.clean_text`).
A user's text is their profile and/or the titles of their most recent items (:class:`UserTextConfig`).

User text is the one place where people write about themselves, so it is scrubbed of PII
(:func:`~llmrec.text.pii.scrub`) *before* it is returned: nothing downstream (embeddings, caches, prompts, logs)
ever sees the raw profile. The counts of what was removed come with :func:`user_text_with_report`. Catalogue
titles are passed to the scrubber as allowed phrases, so "I loved 21 Jump Street" keeps its title.

Leakage: the history comes from the interactions of the dataset passed in; pass the training split to build
user texts for evaluation.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.text.clean import CleanConfig, clean_text
from llmrec.text.extract import extract_year
from llmrec.text.matching import looks_like_injection, strip_injections
from llmrec.text.pii import PiiKind, ScrubPolicy, ScrubResult, scrub

__all__ = [
    "ItemTextConfig",
    "UserTextConfig",
    "item_text",
    "item_texts",
    "user_text",
    "user_text_with_report",
    "user_texts",
    "user_texts_with_report",
]

logger = logging.getLogger(__name__)

_STANDARD_FIELDS = ("title", "year", "genres", "tags", "text")
_TITLE_YEAR = re.compile(r"\s*\(\s*\d{4}\s*(?:[-–]\s*(?:\d{4})?\s*)?\)\s*$")
_SENTENCE_END = (".", "!", "?", "…", ":")


class ItemTextConfig(BaseModel):
    """How an item row becomes text.

    Attributes:
        fields: Fields in output order. ``"title"``, ``"year"``, ``"genres"``, ``"tags"`` and ``"text"``
            (the description) are understood; any other name is an attribute column of the items table
            (``"director"``, ``"authors"``), rendered as ``"Director: value"``. ``"year"`` falls back to the
            year in the title when the row has none.
        labels: Label per field (``""`` for none). Fields without an entry: none for title and text, the
            column name in sentence case for the rest ("original_language" -> "Original language").
        max_tags: At most this many tags (``None``: all).
        max_list_items: At most this many values of other ``"|"``-separated fields (genres included;
            ``None``: all).
        strip_title_year: Drop a trailing "(1995)" from the title (useful with ``"year"`` in ``fields``).
        max_text_chars: Cut the description to this many characters, at a word boundary (``None``: whole).
        separator: Between parts; a part that already ends a sentence is followed by a plain space instead.
        clean: Cleaning applied to every value; ``None`` to use values as they are.
        drop_injections: Leave out the description's sentences and the tags that try to steer a ranking, ask for
            data, address the system or stuff genre names (:func:`~llmrec.text.matching.strip_injections`), so
            an item is embedded for what it is, not for what it asks (issue 17, item 5). When the description had
            such a sentence, all the item's tags are left out too (they come from the same hand: keyword stuffing
            hides in tags). Clean text is unchanged.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: tuple[str, ...] = ("title", "genres", "tags", "text")
    labels: dict[str, str] = Field(default_factory=lambda: {"year": "Year", "genres": "Genres", "tags": "Tags"})
    max_tags: int | None = Field(default=20, ge=0)
    max_list_items: int | None = Field(default=None, ge=0)
    strip_title_year: bool = False
    max_text_chars: int | None = Field(default=None, ge=1)
    separator: str = ". "
    clean: CleanConfig | None = Field(default_factory=CleanConfig)
    drop_injections: bool = True

    def label(self, name: str) -> str:
        """Label of field ``name`` (see :attr:`labels`)."""
        if name in self.labels:
            return self.labels[name]
        if name in {"title", "text"}:
            return ""
        return name.replace("_", " ").strip().capitalize()


class UserTextConfig(BaseModel):
    """How a user becomes text.

    Attributes:
        include_profile: Start with the user's profile text (scrubbed).
        include_history: Add the titles of the user's recent items.
        history_label: Words before the most-recent-first list of titles.
        chronological_label: Words before the list when it is oldest first (``recency=False``).
        min_value: Only items the user gave at least this value (e.g. 4.0 for "liked"); ``None``: all.
        title_separator: Between titles (titles contain commas: "American President, The (1995)").
        strip_title_year: Drop a trailing "(1995)" from titles.
        scrub: PII policy applied to the profile text.
        protect_titles: Let catalogue titles through the scrubber ("21 Jump Street" is not an address).
        clean: Cleaning of profile and titles; ``None`` to use them as they are.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    include_profile: bool = True
    include_history: bool = True
    history_label: str = "Recent items, most recent first"
    chronological_label: str = "Items in the order seen"
    min_value: float | None = None
    title_separator: str = "; "
    strip_title_year: bool = False
    scrub: ScrubPolicy = Field(default_factory=ScrubPolicy)
    protect_titles: bool = True
    clean: CleanConfig | None = Field(default_factory=CleanConfig)


_DEFAULT_ITEM_CONFIG = ItemTextConfig()
_DEFAULT_USER_CONFIG = UserTextConfig()


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _clean(value: object, config: CleanConfig | None) -> str:
    if _missing(value):
        return ""
    return clean_text(value, config) if config is not None else " ".join(str(value).split())


def _split(value: object) -> list[str]:
    if _missing(value):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v).strip() for v in value if not _missing(v) and str(v).strip()]
    return [part.strip() for part in str(value).split("|") if part.strip()]


def _distinct(values: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return list(seen.values())


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + "…"


def _join(parts: list[str], separator: str) -> str:
    out = ""
    for part in parts:
        if not out:
            out = part
        elif out.endswith(_SENTENCE_END) and separator.startswith("."):
            out += (separator[1:] or " ") + part
        else:
            out += separator + part
    return out


def _year(row: Mapping[str, Any] | pd.Series, title: str) -> str:
    value: Any = row.get("year")
    if not _missing(value):
        try:
            return str(int(value))
        except (TypeError, ValueError):
            return str(value).strip()
    year = extract_year(title, bare=False)
    return str(year) if year is not None else ""


def item_text(row: Mapping[str, Any] | pd.Series, config: ItemTextConfig | None = None) -> str:
    """One item as text, e.g. ``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun. Description"``.

    Empty parts are left out; values are cleaned; tags are deduplicated case-insensitively.

    Args:
        row: A row of :attr:`Dataset.items` or any mapping with those keys.
        config: Fields, order and limits; :class:`ItemTextConfig` defaults when ``None``.

    Returns:
        The item's text (``""`` when every field is empty).

    """
    config = config or _DEFAULT_ITEM_CONFIG
    raw_title = _clean(row.get("title"), config.clean)
    title = _TITLE_YEAR.sub("", raw_title) if config.strip_title_year else raw_title
    description = _clean(row.get("text"), config.clean)
    kept = strip_injections(description) if config.drop_injections else description
    # An item whose description tried to inject has its tags quarantined too: they come from the same hand.
    quarantined = kept != description
    parts: list[str] = []
    for name in config.fields:
        label = config.label(name)
        if name == "title":
            value = title
        elif name == "year":
            value = _year(row, raw_title)
        elif name == "text":
            value = _cut(kept, config.max_text_chars)
        else:
            raw = row.get(name)
            is_list = name in {"genres", "tags"} or (isinstance(raw, str) and "|" in raw)
            if is_list or isinstance(raw, list | tuple | np.ndarray):
                values = _distinct([v for v in (_clean(v, config.clean) for v in _split(raw)) if v])
                if config.drop_injections and name == "tags":
                    values = [] if quarantined else [v for v in values if not looks_like_injection(v)]
                limit = config.max_tags if name == "tags" else config.max_list_items
                value = ", ".join(values[:limit] if limit is not None else values)
            else:
                value = _clean(raw, config.clean)
        if value:
            parts.append(f"{label}: {value}" if label else value)
    return _join(parts, config.separator)


def item_texts(data: Dataset, config: ItemTextConfig | None = None) -> list[str]:
    """Text of every catalogue item, in dense index order.

    Args:
        data: The dataset.
        config: As in :func:`item_text`.

    Returns:
        One text per item index.

    Raises:
        ConfigError: A configured attribute field is not a column of the items table.

    """
    config = config or _DEFAULT_ITEM_CONFIG
    missing = [f for f in config.fields if f not in _STANDARD_FIELDS and f not in data.items.columns]
    if missing:
        raise ConfigError(
            f"item text field(s) {missing} are not columns of the items table of {data.name!r} "
            f"(columns: {list(data.items.columns)}); fix ItemTextConfig.fields"
        )
    rows = cast("list[dict[str, Any]]", data.items.to_dict("records"))  # the column names are strings
    return [item_text(row, config) for row in rows]


# -- users -----------------------------------------------------------------------------------------------


class _UserTextBuilder:
    """Shared state for building many user texts from one dataset (title cache, scrub policy)."""

    def __init__(self, data: Dataset, config: UserTextConfig, max_items: int, recency: bool) -> None:
        if max_items < 0:
            raise ConfigError(f"max_items must be >= 0, got {max_items}")
        self.data, self.config, self.max_items, self.recency = data, config, max_items, recency
        self._titles: dict[int, str] = {}
        self.policy = config.scrub
        if config.protect_titles and config.include_profile:
            self.policy = config.scrub.model_copy(update={"allow": config.scrub.allow + self._protected_titles()})

    def _protected_titles(self) -> tuple[str, ...]:
        """Catalogue titles (with and without their year) that PII rules could match; others need no allowing."""
        phrases: dict[str, None] = {}
        for raw in self.data.items["title"].tolist():
            title = _clean(raw, self.config.clean)
            if any(c.isdigit() for c in title) or "@" in title or ":" in title:
                phrases.setdefault(title, None)
                phrases.setdefault(_TITLE_YEAR.sub("", title), None)
        phrases.pop("", None)
        return tuple(phrases)

    def title(self, idx: int) -> str:
        if idx not in self._titles:
            title = _clean(self.data.items["title"].iat[idx], self.config.clean)
            self._titles[idx] = _TITLE_YEAR.sub("", title) if self.config.strip_title_year else title
        return self._titles[idx]

    def build(self, user_idx: int, rows: np.ndarray) -> ScrubResult:
        """Text of user ``user_idx`` whose interactions (time order) are at positions ``rows``."""
        config = self.config
        parts: list[str] = []
        counts = {kind.value: 0 for kind in PiiKind if kind in self.policy.kinds}
        if config.include_profile and "profile" in self.data.users.columns:
            raw = self.data.users["profile"].iat[user_idx]
            if not _missing(raw):
                # Scrub the text as typed first (cleaning strips and splits punctuation, which could break an
                # e-mail address into words the scrubber no longer sees), then again after cleaning (unescaped
                # HTML can reveal an address).
                first = scrub(str(raw), self.policy)
                result = scrub(_clean(first.text, config.clean), self.policy)
                counts = {k: first.counts.get(k, 0) + v for k, v in result.counts.items()}
                if result.text:
                    parts.append(result.text)
        if config.include_history and self.max_items > 0 and len(rows):
            if config.min_value is not None:
                rows = rows[self.data.values[rows] >= config.min_value]
            recent: list[int] = []
            seen: set[int] = set()
            for item in self.data.item_idx[rows][::-1].tolist():  # most recent first, each item once
                if item not in seen:
                    seen.add(item)
                    recent.append(item)
                    if len(recent) == self.max_items:
                        break
            if not self.recency:
                recent.reverse()
            titles = [t for t in (self.title(i) for i in recent) if t]
            if titles:
                label = config.history_label if self.recency else config.chronological_label
                parts.append(f"{label}: {config.title_separator.join(titles)}")
        return ScrubResult(text=_join(parts, ". "), counts=counts)


def user_text_with_report(
    data: Dataset,
    user: object,
    *,
    max_items: int = 20,
    recency: bool = True,
    config: UserTextConfig | None = None,
) -> ScrubResult:
    """A user's text (scrubbed profile and/or recent titles) with the count of PII removed from it.

    Args:
        data: Dataset holding the user's profile (``users`` table) and history (its interactions; pass the
            training split for evaluation so the text does not leak test items).
        user: External user id.
        max_items: At most this many distinct items from the history (0: profile only).
        recency: ``True``: the most recent items, most recent first. ``False``: the same items, oldest first
            (the order they were seen, as a sequence).
        config: What to include and how; :class:`UserTextConfig` defaults when ``None``.

    Returns:
        :class:`~llmrec.text.pii.ScrubResult`: ``text`` and ``counts`` (PII removed from the profile, per kind).

    Raises:
        UnknownIdError: ``user`` is not in the dataset.

    """
    config = config or _DEFAULT_USER_CONFIG
    idx = int(data.user_vocab.index([user])[0])
    rows = np.flatnonzero(data.user_idx == idx)
    result = _UserTextBuilder(data, config, max_items, recency).build(idx, rows)
    if result.total:
        logger.debug(
            "scrubbed PII from the profile of user %s: %s", user, {k: v for k, v in result.counts.items() if v}
        )
    return result


def user_text(
    data: Dataset,
    user: object,
    *,
    max_items: int = 20,
    recency: bool = True,
    config: UserTextConfig | None = None,
) -> str:
    """A user's text: scrubbed profile and/or recent history titles (see :func:`user_text_with_report`)."""
    return user_text_with_report(data, user, max_items=max_items, recency=recency, config=config).text


def user_texts_with_report(
    data: Dataset,
    *,
    max_items: int = 20,
    recency: bool = True,
    config: UserTextConfig | None = None,
) -> list[ScrubResult]:
    """Text and PII counts of every user, in dense user index order (see :func:`user_text_with_report`)."""
    config = config or _DEFAULT_USER_CONFIG
    builder = _UserTextBuilder(data, config, max_items, recency)
    order = np.argsort(data.user_idx, kind="stable")  # interactions are time-sorted; stable keeps that per user
    bounds = np.searchsorted(data.user_idx[order], np.arange(data.n_users + 1))
    results = [builder.build(u, order[bounds[u] : bounds[u + 1]]) for u in range(data.n_users)]
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.counts)
    if sum(totals.values()):
        logger.info("scrubbed PII from user profiles of %r: %s", data.name, {k: v for k, v in totals.items() if v})
    return results


def user_texts(
    data: Dataset,
    *,
    max_items: int = 20,
    recency: bool = True,
    config: UserTextConfig | None = None,
) -> list[str]:
    """Text of every user, in dense user index order (see :func:`user_text_with_report`)."""
    return [r.text for r in user_texts_with_report(data, max_items=max_items, recency=recency, config=config)]
