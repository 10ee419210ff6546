"""The catalogue: per-item facts (short titles, years, genres, tags) and the index of what a text mentions.

:class:`Catalogue` reads an items table once (short safe titles, years, genres, filtered tags) and builds the
token index that finds the titles, genres, tags and years a text names (:meth:`Catalogue.mentions`). Evidence
retrieval, the faithfulness check, conversational parsing, dialogue evaluation and hard filters all use it, so it
is built once per items table and cached, and it sits below the language-model layer (it imports nothing from
:mod:`llmrec.llm`).
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.filters import ItemFilters
from llmrec.text.clean import clean_text
from llmrec.text.extract import GENRE_VOCABULARY, STOPWORDS, extract_genres, keyphrases
from llmrec.text.matching import (
    _TOKEN,
    _YEAR,
    _key,
    _tokens,
    looks_like_injection,
    looks_like_instruction,
    strip_injections,
)
from llmrec.text.titles import sanitize, short_title

if TYPE_CHECKING:
    import pandas as pd

    from llmrec.data.dataset import Dataset


__all__ = ["Catalogue", "CatalogueConfig", "CatalogueSettings"]


class CatalogueConfig(BaseModel):
    """Which tags count as item facts and which titles are matched in text.

    Attributes:
        max_tag_words: Longer tags are dropped (user tags can be whole sentences).
        max_tag_chars: Longer tags are dropped.
        tag_noise: Regular expression (case-insensitive) of tags that say nothing about the item
            ("In Netflix queue"); matching tags are dropped.
        min_title_chars: Titles of one word shorter than this are not matched (too ambiguous).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tag_words: int = Field(default=3, ge=1)
    max_tag_chars: int = Field(default=30, ge=1)
    tag_noise: str = r"netflix|queue|watchlist|to see|seen it|owned|dvd|bd-r|imdb|tivo|want to|must see|^r:|^pg"
    min_title_chars: int = Field(default=4, ge=1)


class CatalogueSettings(Protocol):
    """What a catalogue reads from its settings.

    :class:`CatalogueConfig` has these fields, and so has :class:`~llmrec.llm.explain.ExplainConfig`, so an
    explainer's catalogue follows the explainer's settings.
    """

    @property
    def max_tag_words(self) -> int:
        """Longer tags are dropped."""
        ...

    @property
    def max_tag_chars(self) -> int:
        """Longer tags are dropped."""
        ...

    @property
    def tag_noise(self) -> str:
        """Regular expression of tags that say nothing about the item."""
        ...

    @property
    def min_title_chars(self) -> int:
        """One-word titles shorter than this are not matched."""
        ...


_DEFAULT_CONFIG = CatalogueConfig()


@dataclass(frozen=True)
class _ItemInfo:
    title: str  # short title, sanitized; "" when withheld (instruction-like)
    year: int | None
    genres: tuple[str, ...]
    tags: tuple[str, ...]  # filtered, lowercase, distinct
    dropped_tags: tuple[str, ...]


class Catalogue:
    """Per-item facts and the mention index of one catalogue, built once and shared by every check.

    Building it reads every item row (9,742 MovieLens titles take well under a second); :meth:`of` keeps one per
    items table, so repeated explanations of the same dataset never rebuild it.

    Title matching works on word tokens (case-folded): each short title (and the same title without a leading
    article, when the rest is still specific) is a key in a dict, and a text is scanned for the longest key
    starting at each word. One-word titles are matched only when written with a capital letter and only when
    they are not ordinary words (shorter than ``min_title_chars``, stopwords, genre words, or words that appear
    inside other titles or in tags), because "heat" in a sentence is rarely the film *Heat*.

    Args:
        data: The dataset whose items table is the catalogue.
        config: Tag filtering and title-length settings.
    """

    _cache: dict[int, tuple[weakref.ref[pd.DataFrame], CatalogueSettings, Catalogue]] = {}  # noqa: RUF012
    _cache_lock = threading.Lock()

    def __init__(self, data: Dataset, config: CatalogueSettings | None = None) -> None:
        self.config: CatalogueSettings = config or _DEFAULT_CONFIG
        items = data.items
        self.item_ids: np.ndarray = data.item_vocab.ids
        self.dataset = data.name
        self._filters: ItemFilters | None = None
        n = len(items)
        self._noise = re.compile(self.config.tag_noise, re.IGNORECASE) if self.config.tag_noise else None
        titles_raw = items["title"].tolist() if "title" in items else [""] * n
        genres_raw = items["genres"].tolist() if "genres" in items else [None] * n
        tags_raw = items["tags"].tolist() if "tags" in items else [None] * n
        years_raw = items["year"].tolist() if "year" in items else [None] * n
        self._texts: list[object] = items["text"].tolist() if "text" in items else [""] * n
        infos: list[_ItemInfo] = []
        for title, genres, tags, year, text in zip(
            titles_raw, genres_raw, tags_raw, years_raw, self._texts, strict=True
        ):
            safe = "" if looks_like_instruction(title) else short_title(title)
            kept, dropped = self._filter_tags(tags)
            description = clean_text(text)
            if kept and strip_injections(description) != description:
                # The description tried to inject: the item's tags come from the same hand and are not quoted.
                kept, dropped = (), dropped + kept
            infos.append(_ItemInfo(safe, _as_year(year, title), tuple(extract_genres(genres)), kept, dropped))
        self._info = infos
        genre_count = Counter(g for info in infos for g in info.genres)
        self.genre_idf: dict[str, float] = {g: math.log((1 + n) / (1 + c)) + 1.0 for g, c in genre_count.items()}
        self._genre_phrases: dict[tuple[str, ...], str] = {}
        for canonical, phrases in GENRE_VOCABULARY.items():
            for phrase in (canonical, *phrases):
                self._genre_phrases.setdefault(_key(phrase), canonical)
        for g in genre_count:  # genres outside the vocabulary ("Noir Thriller") are matched by their name
            self._genre_phrases.setdefault(_key(g), g)
        self._build_title_index(infos)
        self._tag_index: dict[tuple[str, ...], str] = {}
        for info in infos:
            for tag in info.tags:
                key = _key(tag)
                if len(key) >= 2 and key not in self._genre_phrases:
                    self._tag_index.setdefault(key, tag)
        self._max_tag_len = max((len(k) for k in self._tag_index), default=0)

    @classmethod
    def of(cls, data: Dataset, config: CatalogueSettings | None = None) -> Catalogue:
        """The catalogue of ``data``, cached per items table and catalogue settings (tag filter, title length).

        Subsets of one dataset share their items table, so a training split and the full data share it too;
        configs that differ only in generation settings share it as well.
        """
        config = config or _DEFAULT_CONFIG
        key = id(data.items)
        settings = _catalogue_settings(config)
        with cls._cache_lock:
            hit = cls._cache.get(key)
            if hit is not None and hit[0]() is data.items and _catalogue_settings(hit[1]) == settings:
                return hit[2]
        built = cls(data, config)
        with cls._cache_lock:
            cls._cache[key] = (weakref.ref(data.items), config, built)
            for k in [k for k, v in cls._cache.items() if v[0]() is None]:
                del cls._cache[k]
        return built

    def __len__(self) -> int:
        return len(self._info)

    def filters(self) -> ItemFilters:
        """Genre and year masks of the items, for hard constraints (built once per catalogue)."""
        if self._filters is None:
            genres = [info.genres for info in self._info]
            self._filters = ItemFilters.build(genres, [info.year for info in self._info], self.dataset)
        return self._filters

    # -- facts ---------------------------------------------------------------------------------------------

    def _filter_tags(self, tags: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(kept, dropped) tags of one item: short, not noise, not instructions, not a genre name; lowercase."""
        values: list[str] = []
        if isinstance(tags, str):
            values = tags.split("|")
        elif isinstance(tags, Iterable) and not isinstance(tags, bytes):
            values = [str(t) for t in tags if t is not None]
        kept: dict[str, None] = {}
        dropped: dict[str, None] = {}
        for raw in values:
            text = clean_text(raw)
            if not text:
                continue
            tag = sanitize(text, max_chars=10_000).lower()
            too_long = len(tag) > self.config.max_tag_chars or len(tag.split()) > self.config.max_tag_words
            genre_word = _key(tag) in _GENRE_KEYS
            if not tag or too_long or looks_like_injection(text) or (self._noise and self._noise.search(tag)):
                dropped.setdefault(text, None)
            elif not genre_word:
                kept.setdefault(tag, None)
        return tuple(kept), tuple(dropped)

    def title(self, idx: int) -> str:
        """Short, sanitized title of item ``idx`` (``""`` when its title reads like an instruction)."""
        return self._info[idx].title

    def year(self, idx: int) -> int | None:
        """Release year of item ``idx``."""
        return self._info[idx].year

    def genres(self, idx: int) -> tuple[str, ...]:
        """Genres of item ``idx`` (canonical spelling)."""
        return self._info[idx].genres

    def tags(self, idx: int) -> tuple[str, ...]:
        """Filtered tags of item ``idx`` (lowercase, short, no noise or instructions)."""
        return self._info[idx].tags

    def dropped_tags(self, idx: int) -> tuple[str, ...]:
        """Tags of item ``idx`` left out of evidence (too long, noise, or instruction-like), as written."""
        return self._info[idx].dropped_tags

    def keyphrases(self, idx: int, k: int) -> tuple[str, ...]:
        """Up to ``k`` keyphrases of item ``idx``'s description (safe ones only)."""
        text = strip_injections(clean_text(self._texts[idx]))  # no phrase of an injected sentence is quoted
        if not text:
            return ()
        out = []
        for phrase in keyphrases(text, k * 2):
            safe = sanitize(phrase, max_chars=self.config.max_tag_chars)
            if safe and not looks_like_injection(phrase) and len(safe.split()) <= self.config.max_tag_words:
                out.append(safe.lower())
        return tuple(out[:k])

    # -- the mention index -----------------------------------------------------------------------------------

    def _build_title_index(self, infos: list[_ItemInfo]) -> None:
        keys: list[tuple[str, ...]] = [_key(info.title) for info in infos]
        word_titles: Counter[str] = Counter()
        for key in keys:
            if len(key) > 1:
                word_titles.update(set(key))
        tag_words = {w for info in infos for tag in info.tags for w in _tokens(tag)}
        genre_words = {w for key in _GENRE_KEYS for w in key}
        index: dict[tuple[str, ...], set[int]] = {}
        self._single: set[tuple[str, ...]] = set()
        for idx, key in enumerate(keys):
            if not key:
                continue
            variants = _title_variants(infos[idx].title, key)
            for variant in variants:
                if len(variant) == 1:
                    word = variant[0]
                    common = (
                        len(word) < self.config.min_title_chars
                        or word.isdigit()
                        or word in STOPWORDS
                        or word in genre_words
                        or word in tag_words
                        or word_titles[word] >= 2
                    )
                    if common:
                        continue
                    self._single.add(variant)
                index.setdefault(variant, set()).add(idx)
        self._titles: dict[tuple[str, ...], frozenset[int]] = {k: frozenset(v) for k, v in index.items()}
        self._max_title_len = min(max((len(k) for k in index), default=0), 16)

    def items_titled(self, key: tuple[str, ...]) -> frozenset[int]:
        """Dense indices of the items whose (matchable) short title has the token key ``key``."""
        return self._titles.get(key, frozenset())

    def mentions(self, text: str) -> list[_Mention]:
        """Everything in ``text`` the check looks at: titles, genres, tags and years, in text order.

        Titles are found first and their words are not read again, so "2001: A Space Odyssey" names no year
        and "Action Jackson" no genre. At each word the longest known phrase wins.
        """
        words = [(m.start(), m.end(), m.group().casefold().replace("’", "'")) for m in _TOKEN.finditer(text)]
        tokens = [w[2] for w in words]
        used = [False] * len(words)
        found: list[_Mention] = []

        def scan(kind: Literal["item", "genre", "tag"], table: Mapping[tuple[str, ...], object], longest: int) -> None:
            i = 0
            while i < len(tokens):
                step = 1
                for n in range(min(longest, len(tokens) - i), 0, -1):
                    key = tuple(tokens[i : i + n])
                    if key not in table or any(used[i : i + n]):
                        continue
                    if kind == "item" and key in self._single and not text[words[i][0]].isupper():
                        continue  # a one-word title is a name only when written like one
                    start, end = words[i][0], words[i + n - 1][1]
                    value = table[key]
                    items = value if isinstance(value, frozenset) else frozenset()
                    label = "" if kind == "item" else str(value)
                    found.append(_Mention(kind, text[start:end], (start, end), key, label, items))
                    used[i : i + n] = [True] * n
                    step = n
                    break
                i += step

        scan("item", self._titles, self._max_title_len)
        scan("genre", self._genre_phrases, 4)
        scan("tag", self._tag_index, self._max_tag_len)
        titles = [m.span for m in found if m.kind == "item"]
        for match in _YEAR.finditer(text):
            if not any(s <= match.start() < e for s, e in titles):
                found.append(_Mention("year", match.group(1), match.span(1), (match.group(1),), match.group(1)))
        found.sort(key=lambda m: m.span)
        return found


_ARTICLES = frozenset({"the", "a", "an"})


def _catalogue_settings(config: CatalogueSettings) -> tuple[object, ...]:
    """The settings a :class:`Catalogue` depends on (the rest only matters per explanation)."""
    return (config.max_tag_words, config.max_tag_chars, config.tag_noise, config.min_title_chars)


_PARENTHETICAL = re.compile(r"\s*\([^()]*\)")


def _title_variants(title: str, key: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Token keys a title is matched by: as written, without bracketed alternative titles, without an article.

    "Twelve Monkeys (a.k.a. 12 Monkeys)" is also "Twelve Monkeys"; "The Usual Suspects" also "Usual Suspects"
    (the article is dropped only when two or more words remain).
    """
    out = [key]
    bare = _key(_PARENTHETICAL.sub("", title))
    if bare and bare != key:
        out.append(bare)
    for k in list(out):
        if len(k) >= 3 and k[0] in _ARTICLES:
            out.append(k[1:])
    return list(dict.fromkeys(out))


_GENRE_KEYS: frozenset[tuple[str, ...]] = frozenset(
    _key(p) for canonical, phrases in GENRE_VOCABULARY.items() for p in (canonical, *phrases)
)


def _as_year(value: object, title: object) -> int | None:
    try:
        if value is not None and str(value).strip() not in ("", "nan", "<NA>", "None"):
            year = int(float(str(value)))
            return year if 1000 <= year <= 9999 else None
    except (TypeError, ValueError):
        pass
    match = re.search(r"\((\d{4})\)\s*$", str(title or ""))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class _Mention:
    """One thing a text names: a catalogue title, a genre, a tag or a year."""

    kind: Literal["item", "genre", "tag", "year"]
    text: str  # as written
    span: tuple[int, int]
    key: tuple[str, ...]
    value: str  # canonical genre, tag, or year; "" for items
    items: frozenset[int] = frozenset()  # catalogue items with this title
