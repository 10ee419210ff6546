"""Grounded explanations: retrieved evidence in, a checked sentence or two out, streamed sentence by sentence.

A 135M language model writes fluent text and invents facts, so an explanation is never taken on trust:

1. **Evidence** (:func:`build_evidence`) is retrieved from the store, pure and deterministic: the candidate's
   facts (year, genres, short tags, keyphrases of its description) and the items of the user's history it
   connects to (shared genres, weighted by how rare the genre is; shared tags; optionally cosine similarity of
   given item vectors). Every :class:`HistoryLink` names the history item and the attributes it shares.
2. A **template** (:func:`template_explanation`) says that evidence in one sentence ("Because you liked Heat
   and Ronin: also Action and Thriller, 1996."). It is grounded by construction and is the fast path
   (``lm=None``) and the fallback.
3. With a language model, a chat prompt (:func:`explanation_prompt`) puts the evidence inside an
   ``<evidence>`` data block (sanitized: control markers and our delimiter tags cannot survive in it; titles and
   tags that read like instructions are left out) and asks for one or two sentences naming the liked titles.
4. The **faithfulness check** (:func:`check`) finds the catalogue titles (a token n-gram index over all short
   titles, built once per catalogue), genre words, four-digit years and multi-word catalogue tags a text
   mentions, and reports each one the evidence does not hold. **Repair** drops the sentences that fail; when
   nothing grounded remains, the template is used. What was done is recorded on the :class:`Explanation`.
5. **Streaming** (:func:`stream_explanation`, :meth:`Explainer.stream`) releases the model's text one sentence
   at a time, each only after it passed the check, so a user never sees a claim that is later withdrawn; the
   joined stream equals the final explanation's text.

Item and user text are data, never instructions: they go through :func:`~llmrec.llm.prompts.sanitize` /
:func:`~llmrec.llm.prompts.short_title` and sit inside a block the system prompt (with
:data:`~llmrec.llm.prompts.DATA_NOTICE`) declares to be data.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.filters import ItemFilters
from llmrec.errors import ConfigError, UnknownIdError
from llmrec.llm.base import LanguageModel, Message
from llmrec.llm.prompts import DATA_NOTICE, data_block, sanitize, short_title
from llmrec.text.clean import clean_text
from llmrec.text.extract import GENRE_VOCABULARY, STOPWORDS, extract_genres, keyphrases

if TYPE_CHECKING:
    import pandas as pd

    from llmrec.data.dataset import Dataset

__all__ = [
    "EXPLANATION_WORDS",
    "Catalogue",
    "CheckResult",
    "Citation",
    "Evidence",
    "ExplainConfig",
    "Explainer",
    "Explanation",
    "ExplanationStream",
    "History",
    "HistoryLink",
    "Problem",
    "build_evidence",
    "check",
    "explanation_prompt",
    "grounding_rate",
    "looks_like_instruction",
    "raw_grounding_rate",
    "repair",
    "split_sentences",
    "stream_explanation",
    "template_explanation",
]

Source = Literal["lm", "template", "repaired"]
CitationKind = Literal["item", "genre", "tag", "year"]
ProblemKind = Literal["item", "genre", "tag", "year", "quoted", "markup", "repetition", "unsupported", "no_reference"]


class ExplainConfig(BaseModel):
    """How evidence is retrieved, how the model is asked, and how strictly its text is checked.

    Attributes:
        max_links: At most this many history items cited per explanation.
        max_history: Only the most recent this many distinct history items are considered.
        min_value: A history item counts as liked when its latest value is at least this; ``None`` = at least
            the user's mean value (so it works for 1-5 ratings and for implicit 1s alike).
        max_genres: At most this many candidate genres in the evidence.
        max_tags: At most this many candidate tags/keyphrases in the evidence.
        max_tag_words: Longer tags are dropped (user tags can be whole sentences).
        max_tag_chars: Longer tags are dropped.
        tag_noise: Regular expression (case-insensitive) of tags that say nothing about the item
            ("In Netflix queue"); matching tags are dropped.
        genre_weight: Weight of a shared genre (times the genre's inverse catalogue frequency).
        tag_weight: Weight of a shared tag.
        similarity_weight: Weight of the cosine similarity of item vectors (when vectors are given).
        min_similarity: A history item without shared attributes is linked only when at least this similar.
        item_noun: What items are called in prompts ("movie", "book"; "title" fits any catalogue).
        max_new_tokens: Generation budget of the model (greedy).
        max_sentences: At most this many sentences of model text are kept.
        require_reference: Accept model text only when it names at least one history title or evidence
            attribute (otherwise it explains nothing and the template is used).
        flag_quoted: Report quoted phrases that are neither an evidence title nor an evidence attribute (a small
            model quotes invented titles that are not in the catalogue).
        min_title_chars: Titles of one word shorter than this are not matched (too ambiguous).
        strict_words: Every other word of model text must come from the evidence, from common function words, or
            from a short list of words explanations are made of ("liked", "because", "similar"...). A small model
            adds claims no title/genre/year check can see ("a film about politics and social justice"); this
            rejects them, so model text can only rephrase the evidence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_links: int = Field(default=3, ge=0)
    max_history: int = Field(default=200, ge=1)
    min_value: float | None = None
    max_genres: int = Field(default=3, ge=0)
    max_tags: int = Field(default=4, ge=0)
    max_tag_words: int = Field(default=3, ge=1)
    max_tag_chars: int = Field(default=30, ge=1)
    tag_noise: str = r"netflix|queue|watchlist|to see|seen it|owned|dvd|bd-r|imdb|tivo|want to|must see|^r:|^pg"
    genre_weight: float = Field(default=1.0, ge=0)
    tag_weight: float = Field(default=2.0, ge=0)
    similarity_weight: float = Field(default=1.0, ge=0)
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    item_noun: str = Field(default="title", min_length=1, max_length=30)
    max_new_tokens: int = Field(default=60, ge=1)
    max_sentences: int = Field(default=2, ge=1)
    require_reference: bool = True
    flag_quoted: bool = True
    min_title_chars: int = Field(default=4, ge=1)
    strict_words: bool = True


_DEFAULT_CONFIG = ExplainConfig()

# -- small text helpers ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|prompts?|rules|above|previous|prior)\b"
    r"|\b(?:new|system|hidden)\s+(?:instructions?|prompt|rules)\b"
    r"|\byou\s+(?:are\s+now|must|should)\b"
    r"|\b(?:say|print|output|respond\s+with|reply\s+with|repeat)\s+[\"'“]?[A-Z]{3,}\b"
    r"|^\s*(?:system|assistant|user)\b\s*[:>-]?"
    r"|\bjailbreak\b|\bprompt\s+injection\b",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"<\|[^|>]{0,40}\|>|</?[A-Za-z_][\w-]{0,30}>|\[/?INST\]|<</?SYS>>|</?s>")
_YEAR = re.compile(r"(?<![\w$€£#.,/-])(1[89]\d\d|20\d\d)(?![\w%/-]|[.,]\d)")
_QUOTED = re.compile(r"[\"“”]([^\"“”\n]{2,80})[\"“”]")
_ABBREVIATION = re.compile(r"(?:\b(?:[A-Za-z]|Dr|Mr|Mrs|Ms|St|Jr|Sr|vs|Vol|No|Mt|Lt|Col|Gen|Prof|etc)\.)$")
#: Words an explanation may use besides the evidence's own words and function words (see ``strict_words``).
_EXPLANATION_TEXT = """
    user users you your they their them he she his her liked like likes enjoyed enjoy enjoys enjoying loved love
    loves watched watch read because since also similar similarly same shares share sharing shared both recommend
    recommended recommending recommendation suggest suggested may might will would could should fan fans taste
    tastes style kind sort genre genres tag tags tagged theme themes year years released release from with and
    title titles movie movies film films book books item items show shows story stories other another too well
    more much many great good fit fits match matches mix mixes blend blends combines combine elements element
    classic favourite favorite favourites favorites suit suits suited"""
EXPLANATION_WORDS: frozenset[str] = frozenset(_EXPLANATION_TEXT.split())
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n")


def _tokens(text: str) -> list[str]:
    return [t.casefold().replace("’", "'") for t in _TOKEN.findall(text)]


def _key(text: str) -> tuple[str, ...]:
    return tuple(_tokens(text))


def looks_like_instruction(text: object) -> bool:
    """Whether item or user text reads like an instruction to a model or carries chat-control markup.

    Such text is still data (it is never obeyed), but it is not worth quoting either: a title or tag that says
    "ignore previous instructions" is left out of the evidence, so neither the prompt nor the template repeats
    it. Markup is detected on the raw text (``sanitize`` would already have removed it).
    """
    raw = clean_text(text)
    if not raw:
        return False
    if _MARKUP.search(raw) or sanitize(raw, max_chars=10_000) != " ".join(raw.split()):
        return True
    return bool(_INSTRUCTION.search(raw))


def _sentence_spans(text: str, protected: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, whitespace trimmed; no cut falls inside a ``protected`` span."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith(".") and _ABBREVIATION.search(text[start : match.start() + 1]):
            continue
        if any(s <= match.start() < e for s, e in protected):
            continue  # "Hush... Hush, Sweet Charlotte" is one title, not two sentences
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((s + lead, s + len(piece.rstrip())))
    return out


def split_sentences(text: str, catalogue: Catalogue | None = None) -> list[str]:
    """``text`` cut into sentences (stripped; the last one may be unfinished).

    A sentence ends at a line break, or at ``.``, ``!``, ``?`` or ``…`` (with closing quotes/brackets) followed
    by whitespace, except after a single letter or a common abbreviation ("Dr. Strangelove", "I.Q.") and, given
    the ``catalogue``, inside a catalogue title, so titles are not cut in two.
    """
    protected = [m.span for m in catalogue.mentions(text) if m.kind == "item"] if catalogue is not None else []
    return [text[s:e] for s, e in _sentence_spans(text, protected)]


def _complete(sentence: str) -> bool:
    return bool(re.search(r"[.!?…][\"'”’)\]]*$", sentence))


def _close_unfinished(sentence: str) -> str:
    """A sentence the token budget cut off, ended at its last complete clause (or where it stops) with a period."""
    cut = max(sentence.rfind(", "), sentence.rfind("; "), sentence.rfind(" - "))
    if cut > len(sentence) // 2:
        sentence = sentence[:cut]
    return sentence.rstrip(" ,;:-") + "."


def _join_titles(titles: Sequence[str]) -> str:
    if len(titles) <= 1:
        return "".join(titles)
    return ", ".join(titles[:-1]) + " and " + titles[-1]


# -- the catalogue: facts per item and the mention index -------------------------------------------------------


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

    _cache: dict[int, tuple[weakref.ref[pd.DataFrame], ExplainConfig, Catalogue]] = {}  # noqa: RUF012
    _cache_lock = threading.Lock()

    def __init__(self, data: Dataset, config: ExplainConfig | None = None) -> None:
        self.config = config or _DEFAULT_CONFIG
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
        for title, genres, tags, year in zip(titles_raw, genres_raw, tags_raw, years_raw, strict=True):
            safe = "" if looks_like_instruction(title) else short_title(title)
            kept, dropped = self._filter_tags(tags)
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
    def of(cls, data: Dataset, config: ExplainConfig | None = None) -> Catalogue:
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
            if not tag or too_long or looks_like_instruction(text) or (self._noise and self._noise.search(tag)):
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
        text = clean_text(self._texts[idx])
        if not text:
            return ()
        out = []
        for phrase in keyphrases(text, k * 2):
            safe = sanitize(phrase, max_chars=self.config.max_tag_chars)
            if safe and not looks_like_instruction(phrase) and len(safe.split()) <= self.config.max_tag_words:
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


def _catalogue_settings(config: ExplainConfig) -> tuple[object, ...]:
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


# -- evidence --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """A user's history: dense item indices in time order (oldest first) and the value of each interaction.

    Attributes:
        items: Dense item indices, shape ``(n,)``.
        values: Interaction values (ratings, or 1 for implicit feedback), shape ``(n,)``.
    """

    items: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64).ravel()
        values = np.ones(len(items)) if self.values is None else np.asarray(self.values, dtype=np.float64).ravel()
        if len(values) != len(items):
            raise ConfigError(f"history has {len(items)} items but {len(values)} values: give one value per item")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "values", values)

    @classmethod
    def of_user(cls, data: Dataset, user: object) -> History:
        """The history of external user ``user`` in ``data`` (pass the training split when evaluating).

        Raises:
            UnknownIdError: ``user`` is not in the dataset.
        """
        idx = int(data.user_vocab.index([user])[0])
        rows = np.flatnonzero(data.user_idx == idx)
        return cls(data.item_idx[rows], data.values[rows])

    @classmethod
    def from_ids(cls, data: Dataset, item_ids: Sequence[object], values: Sequence[float] | None = None) -> History:
        """A history of external item ids (oldest first), each with value 1 unless ``values`` are given.

        Raises:
            UnknownIdError: An item id is not in the catalogue.
        """
        items = data.item_vocab.index(list(item_ids))
        return cls(items, np.ones(len(items)) if values is None else np.asarray(values, dtype=np.float64))


@dataclass(frozen=True)
class HistoryLink:
    """One history item the candidate connects to, with what they share.

    Attributes:
        item_id: External id of the history item.
        title: Its short title (sanitized).
        year: Its release year.
        value: The user's latest value for it.
        shared_genres: Genres it shares with the candidate.
        shared_tags: Tags it shares with the candidate.
        similarity: Cosine similarity of the item vectors, when vectors were given.
        score: The link strength used to rank links.
    """

    item_id: str
    title: str
    year: int | None
    value: float
    shared_genres: tuple[str, ...]
    shared_tags: tuple[str, ...]
    similarity: float | None
    score: float


@dataclass(frozen=True)
class Evidence:
    """Everything an explanation of one candidate may rest on.

    Attributes:
        item_id: External id of the candidate.
        item_index: Its dense index.
        title: Its short title (sanitized; ``""`` when the title reads like an instruction).
        year: Its release year.
        genres: Its genres (at most ``max_genres``, those shared with the history first).
        tags: Its short, safe tags and keyphrases (at most ``max_tags``, shared ones first).
        links: The history items it connects to, strongest first.
        withheld: Candidate tags left out (too long, noise, or instruction-like), for auditing.
    """

    item_id: str
    item_index: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    tags: tuple[str, ...]
    links: tuple[HistoryLink, ...]
    withheld: tuple[str, ...] = ()

    @property
    def item_ids(self) -> frozenset[str]:
        """External ids of the items in evidence (the candidate and the linked history items)."""
        return frozenset([self.item_id, *(link.item_id for link in self.links)])

    @property
    def allowed_genres(self) -> frozenset[str]:
        """Genres an explanation may name."""
        return frozenset([*self.genres, *(g for link in self.links for g in link.shared_genres)])

    @property
    def allowed_tags(self) -> frozenset[str]:
        """Tags an explanation may name (lowercase)."""
        return frozenset([*self.tags, *(t for link in self.links for t in link.shared_tags)])

    @property
    def allowed_years(self) -> frozenset[int]:
        """Years an explanation may name (the candidate's and the linked items')."""
        return frozenset(y for y in (self.year, *(link.year for link in self.links)) if y is not None)

    def lines(self) -> list[str]:
        """The evidence as data-block lines (every value already sanitized)."""
        head = self.title or "(title withheld)"
        parts = [f"Recommended: {head}" + (f" ({self.year})" if self.year else "")]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags))
        out = [". ".join(parts) + "."]
        for link in self.links:
            shared = [*link.shared_genres, *link.shared_tags]
            why = f" - shares {', '.join(shared)}" if shared else " - similar"
            out.append(f"User liked: {link.title}" + (f" ({link.year})" if link.year else "") + why)
        return out


def build_evidence(
    history: History,
    candidate: int,
    data: Dataset,
    *,
    config: ExplainConfig | None = None,
    item_vectors: np.ndarray | None = None,
    catalogue: Catalogue | None = None,
) -> Evidence:
    """The evidence for explaining ``candidate`` to a user with ``history``: pure, fast and deterministic.

    History items the user liked (value at least ``min_value``, or the user's mean) are linked to the candidate
    when they share genres or tags with it, or (with ``item_vectors``) are similar enough. Links are ranked by
    ``genre_weight * sum(idf(shared genres)) + tag_weight * |shared tags| + similarity_weight * cosine``, then by
    value and recency, so a shared "Film-Noir" counts for more than a shared "Drama".

    Args:
        history: The user's interactions in time order (dense item indices).
        candidate: Dense index of the item to explain.
        data: The dataset holding the catalogue.
        config: Settings; :class:`ExplainConfig` defaults when ``None``.
        item_vectors: Optional item embeddings, shape ``(n_items, d)``, for similarity links.
        catalogue: The catalogue of ``data`` (built and cached when ``None``).

    Returns:
        The candidate's :class:`Evidence`.

    Raises:
        UnknownIdError: ``candidate`` or a history index is out of range.
        ConfigError: ``item_vectors`` has the wrong number of rows.
    """
    config = config or _DEFAULT_CONFIG
    cat = catalogue or Catalogue.of(data, config)
    n_items = len(cat)
    if not 0 <= int(candidate) < n_items:
        raise UnknownIdError(f"item index {candidate} is outside the catalogue (0..{n_items - 1})")
    if len(history.items) and (history.items.min() < 0 or history.items.max() >= n_items):
        raise UnknownIdError(f"history holds item indices outside the catalogue (0..{n_items - 1})")
    if item_vectors is not None and len(item_vectors) != n_items:
        raise ConfigError(f"item_vectors has {len(item_vectors)} rows but the catalogue has {n_items} items")
    candidate = int(candidate)
    c_genres = cat.genres(candidate)
    c_tags = cat.tags(candidate)
    c_tagset = set(c_tags)

    # Latest value per distinct item, most recent first.
    latest: dict[int, tuple[float, int]] = {}
    for pos in range(len(history.items) - 1, -1, -1):
        item = int(history.items[pos])
        if item not in latest:
            latest[item] = (float(history.values[pos]), pos)
            if len(latest) >= config.max_history:
                break
    threshold = config.min_value
    if threshold is None and latest:
        threshold = float(np.mean([v for v, _ in latest.values()]))
    liked = [i for i, (v, _) in latest.items() if i != candidate and (threshold is None or v >= threshold)]

    sims: dict[int, float] = {}
    if item_vectors is not None and liked:
        vectors = np.asarray(item_vectors, dtype=np.float64)
        target = vectors[candidate]
        rows = vectors[liked]
        norms = np.linalg.norm(rows, axis=1) * (np.linalg.norm(target) or 1.0)
        cos = rows @ target / np.where(norms == 0, 1.0, norms)
        sims = {i: float(s) for i, s in zip(liked, cos, strict=True)}

    scored: list[tuple[float, float, int, HistoryLink]] = []
    for item in liked:
        title = cat.title(item)
        if not title:
            continue  # a title that reads like an instruction is never cited
        shared_g = tuple(g for g in c_genres if g in cat.genres(item))
        shared_t = tuple(t for t in cat.tags(item) if t in c_tagset)
        sim = sims.get(item)
        if not shared_g and not shared_t and (sim is None or sim < config.min_similarity):
            continue
        score = config.genre_weight * sum(cat.genre_idf.get(g, 1.0) for g in shared_g)
        score += config.tag_weight * len(shared_t)
        if sim is not None:
            score += config.similarity_weight * sim
        value, pos = latest[item]
        link = HistoryLink(
            item_id=str(cat.item_ids[item]),
            title=title,
            year=cat.year(item),
            value=value,
            shared_genres=shared_g,
            shared_tags=shared_t,
            similarity=sim,
            score=round(score, 9),
        )
        scored.append((-link.score, -value, -pos, link))
    scored.sort(key=lambda s: s[:3])
    links = tuple(s[3] for s in scored[: config.max_links])

    shared_genres = {g for link in links for g in link.shared_genres}
    genres = sorted(c_genres, key=lambda g: (g not in shared_genres, c_genres.index(g)))[: config.max_genres]
    shared_tags = {t for link in links for t in link.shared_tags}
    pool = list(dict.fromkeys([*c_tags, *cat.keyphrases(candidate, config.max_tags)]))
    tags = sorted(pool, key=lambda t: (t not in shared_tags, pool.index(t)))[: config.max_tags]
    return Evidence(
        item_id=str(cat.item_ids[candidate]),
        item_index=candidate,
        title=cat.title(candidate),
        year=cat.year(candidate),
        genres=tuple(genres),
        tags=tuple(tags),
        links=links,
        withheld=cat.dropped_tags(candidate),
    )


# -- explanations, the check and repair ------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    """One piece of evidence an explanation rests on.

    Attributes:
        kind: ``"item"`` (a history item), ``"genre"``, ``"tag"`` or ``"year"``.
        value: The title, genre, tag or year.
        item_id: External id of the history item (for ``"item"``).
    """

    kind: CitationKind
    value: str
    item_id: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something a text claims that the evidence does not hold.

    Attributes:
        kind: ``"item"`` (a catalogue title not in evidence), ``"genre"``, ``"tag"``, ``"year"``, ``"quoted"``
            (a quoted name that is no evidence title or attribute), ``"markup"`` (control markers or tags),
            ``"repetition"``, ``"unsupported"`` (a word from neither the evidence nor the allowed vocabulary, see
            ``ExplainConfig.strict_words``), or ``"no_reference"`` (the text names nothing from the evidence).
        value: What was found, as written in the text.
        sentence: The sentence it was found in.
    """

    kind: ProblemKind
    value: str
    sentence: str = ""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check`.

    Attributes:
        ok: No problems were found.
        problems: What the evidence does not hold.
        citations: The evidence the text does name (history titles, genres, tags, years).
    """

    ok: bool
    problems: tuple[Problem, ...]
    citations: tuple[Citation, ...]


@dataclass(frozen=True)
class Explanation:
    """Why an item is recommended, and what that rests on.

    Attributes:
        item_id: External id of the explained item.
        text: The explanation shown to the user.
        citations: The history items and attributes the text rests on.
        grounded: The final text passed the faithfulness check.
        source: ``"lm"`` (model text, every sentence passed; a last sentence the token budget cut off may be
            dropped), ``"repaired"`` (model text with failing sentences dropped) or ``"template"`` (built from
            evidence alone, as the fast path or because no model sentence passed).
        problems: What the check found in the model's text (empty for a clean or template-only explanation).
        repairs: What was done about it, in words ("dropped sentence 2: ...", "fell back to the template").
        raw_text: The model's text as generated (``None`` without a model).
        evidence: The evidence it was built from.
    """

    item_id: str
    text: str
    citations: tuple[Citation, ...]
    grounded: bool
    source: Source
    problems: tuple[Problem, ...] = ()
    repairs: tuple[str, ...] = ()
    raw_text: str | None = None
    evidence: Evidence | None = field(default=None, repr=False, compare=False)

    @property
    def raw_grounded(self) -> bool | None:
        """Whether the model's own text passed the check without repair (``None`` when no model was used)."""
        if self.raw_text is None:
            return None
        return self.source == "lm"


def check(text: str, evidence: Evidence, catalogue: Catalogue, *, config: ExplainConfig | None = None) -> CheckResult:
    """Faithfulness check: every title, genre, tag and year ``text`` names must be in ``evidence``.

    Titles are catalogue titles (see :class:`Catalogue` for which one-word titles count); an item is in evidence
    when it is the candidate, a linked history item, or shares its title with one of them. The candidate named as
    something the person already liked or watched ("because you liked <the candidate>") is a problem too. Genres
    are the genre vocabulary's words and phrases; years are four-digit numbers 1800-2099 outside titles; tags are the
    catalogue's multi-word tags (one-word tags such as "funny" are ordinary words and are not policed). Quoted
    names that are not evidence, chat-control markup, and a model stuck repeating itself are reported too.

    Args:
        text: An explanation (or one sentence of it).
        evidence: What it may rest on.
        catalogue: The catalogue (its title and tag index find the mentions).
        config: ``flag_quoted`` and ``require_reference``; defaults when ``None``.

    Returns:
        The problems, and the evidence the text names (as citations).
    """
    config = config or catalogue.config
    problems: list[Problem] = []
    citations: dict[Citation, None] = {}
    # Items in evidence, and every catalogue item sharing a title with one of them (remakes, duplicates).
    evidence_idx = {evidence.item_index}
    link_keys: dict[tuple[str, ...], HistoryLink] = {}
    for link in evidence.links:
        for key in _title_variants(link.title, _key(link.title)):
            evidence_idx.update(catalogue.items_titled(key))
            link_keys.setdefault(key, link)
    candidate_keys = _title_variants(evidence.title, _key(evidence.title)) if evidence.title else []
    candidate_idx = {evidence.item_index}
    for key in candidate_keys:
        candidate_idx.update(catalogue.items_titled(key))
    evidence_idx |= candidate_idx
    genres, tags, years = evidence.allowed_genres, evidence.allowed_tags, evidence.allowed_years
    tag_keys = {_key(t): t for t in tags}
    known_quotes = {*candidate_keys, *link_keys, *tag_keys, *(_key(g) for g in genres)}
    found = catalogue.mentions(text)
    title_spans = [m.span for m in found if m.kind == "item"]
    spans = _sentence_spans(text, title_spans) or [(0, len(text))]

    def sentence_at(pos: int) -> str:
        for s, e in spans:
            if pos < e:
                return text[s:e]
        return text[spans[-1][0] : spans[-1][1]]

    for markup in [*_MARKUP.finditer(text), *re.finditer(r"<\||\|>", text)]:
        problems.append(Problem("markup", markup.group(), sentence_at(markup.start())))
    for m in found:
        sentence = sentence_at(m.span[0])
        if m.kind == "item":
            if not m.items & evidence_idx:
                problems.append(Problem("item", m.text, sentence))
            elif m.key not in link_keys and m.items & candidate_idx and _offered_as_history(text, m.span, title_spans):
                problems.append(Problem("item", m.text, sentence))  # "because you liked <the candidate>"
            elif m.key in link_keys:
                link = link_keys[m.key]
                citations.setdefault(Citation("item", link.title, link.item_id), None)
        elif m.kind == "genre":
            if m.value in genres:
                citations.setdefault(Citation("genre", m.value), None)
            else:
                problems.append(Problem("genre", m.text, sentence))
        elif m.kind == "tag":
            if m.value in tags:
                citations.setdefault(Citation("tag", m.value), None)
            else:
                problems.append(Problem("tag", m.text, sentence))
        elif int(m.value) in years:
            citations.setdefault(Citation("year", m.value), None)
        else:
            problems.append(Problem("year", m.text, sentence))
    # Evidence tags are often single words the catalogue's tag index leaves out: cite them when named.
    tokens = _tokens(text)
    for key, tag in tag_keys.items():
        if key and _contains(tokens, key):
            citations.setdefault(Citation("tag", tag), None)
    if config.flag_quoted:
        for match in _QUOTED.finditer(text):
            named = any(s <= match.start(1) < e for s, e in title_spans)
            if not named and _key(match.group(1)) not in known_quotes:
                problems.append(Problem("quoted", match.group(1), sentence_at(match.start(1))))
    for s, e in spans:
        repeated = _repetition(text, s, e, title_spans)
        if repeated:
            problems.append(Problem("repetition", repeated, text[s:e]))
    problems.extend(_misquoted_titles(text, evidence, sentence_at))
    if config.strict_words:
        problems.extend(_unsupported_words(text, evidence, title_spans, config.item_noun, sentence_at))
    cites = tuple(citations)
    if config.require_reference and not problems and text.strip() and not _references(cites):
        problems.append(Problem("no_reference", text.strip()[:80], text.strip()))
    return CheckResult(ok=not problems, problems=tuple(problems), citations=cites)


_PAST_LIKING = re.compile(
    r"\byou(?:'ve|\s+have)?\s+(?:already\s+|also\s+|really\s+)?(?:liked|loved|enjoyed|watched|rated|seen|saw)\s+",
    re.IGNORECASE,
)


def _offered_as_history(text: str, span: tuple[int, int], title_spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the title at ``span`` is written as something the person liked or watched.

    True for "you liked Casino" and "you loved Heat and Casino" (the title right after the verb, or joined to a
    list of titles by "and"); false for "Since you liked Heat, Casino is ..." (a comma starts a new clause).
    """
    verbs = list(_PAST_LIKING.finditer(text, max(0, span[0] - 300), span[0]))
    if not verbs:
        return False
    start = verbs[-1].end()
    gap = text[start : span[0]]
    for s, e in sorted(title_spans, reverse=True):  # blank out the other titles of the list
        if start <= s and e <= span[0]:
            gap = gap[: s - start] + " " + gap[e - start :]
    stripped = gap.strip()
    if not stripped:
        return True
    return bool(re.fullmatch(r"(?:[\s,]*(?:and\s*)?)+", gap, re.IGNORECASE)) and stripped.lower().endswith("and")


def _misquoted_titles(text: str, evidence: Evidence, sentence_at: Callable[[int], str]) -> list[Problem]:
    """``Title (year)`` forms whose title is not the evidence item of that year.

    A model copies the evidence's format but garbles the name ("Live and Let Go (1973)" for Live and Let Die).
    """
    titled = [(evidence.title, evidence.year), *((link.title, link.year) for link in evidence.links)]
    problems = []
    for match in re.finditer(r"\((1[89]\d\d|20\d\d)\)", text):
        before = " ".join(text[: match.start()].split()).casefold()
        year = int(match.group(1))
        if not any(t and y == year and before.endswith(" ".join(t.split()).casefold()) for t, y in titled):
            words = text[: match.start()].split()[-4:]
            problems.append(Problem("item", " ".join([*words, match.group()]), sentence_at(match.start())))
    return problems


def _unsupported_words(
    text: str,
    evidence: Evidence,
    title_spans: Sequence[tuple[int, int]],
    item_noun: str,
    sentence_at: Callable[[int], str],
) -> list[Problem]:
    """Words of ``text`` (outside catalogue titles) found neither in the evidence nor in the allowed vocabulary."""
    allowed = set(_tokens(" ".join(evidence.lines()))) | STOPWORDS | EXPLANATION_WORDS | set(_tokens(item_noun))
    problems = []
    for match in _TOKEN.finditer(text):
        if any(s <= match.start() < e for s, e in title_spans):
            continue
        word = match.group().casefold().replace("’", "'")
        base = word.removesuffix("'s")
        if word.isdigit() or base in allowed or base.rstrip("s") in allowed or f"{base}s" in allowed:
            continue
        problems.append(Problem("unsupported", match.group(), sentence_at(match.start())))
    return problems


def _repetition(text: str, start: int, end: int, titles: Sequence[tuple[int, int]], n: int = 3, times: int = 3) -> str:
    """A word ``n``-gram said ``times`` times or more in ``text[start:end]`` (a model stuck in a loop), else "".

    A title counts as one word, so "The Lord of the Rings: The Two Towers, The Lord of the Rings: ..." is not a
    loop while "The Snowman - The Snowman - The Snowman" is.
    """
    keys: list[str] = []
    seen: set[tuple[int, int]] = set()
    for match in _TOKEN.finditer(text, start, end):
        inside = next(((s, e) for s, e in titles if s <= match.start() < e), None)
        if inside is None:
            keys.append(match.group().casefold())
        elif inside not in seen:  # one token per title occurrence
            seen.add(inside)
            keys.append(text[inside[0] : inside[1]].casefold())
    grams = Counter(tuple(keys[i : i + n]) for i in range(len(keys) - n + 1))
    looping = [g for g, c in grams.items() if c >= times]
    return " ".join(looping[0]) if looping else ""


def _contains(tokens: list[str], key: tuple[str, ...]) -> bool:
    n = len(key)
    return any(tuple(tokens[i : i + n]) == key for i in range(len(tokens) - n + 1))


def _references(citations: Sequence[Citation]) -> bool:
    return any(c.kind in ("item", "genre", "tag", "year") for c in citations)


def template_explanation(evidence: Evidence, *, item_noun: str = "title") -> Explanation:
    """An explanation built from evidence alone (grounded by construction), short and readable.

    ``"Because you liked Heat and Ronin: also Action and Thriller, with heist, 1996."`` — the linked titles, the
    genres and tags they share with the candidate, and the candidate's year. Without links: the candidate's
    own genres and tags.
    """
    citations: list[Citation] = []
    year = f", {evidence.year}" if evidence.year else ""
    if evidence.links:
        titles = [link.title for link in evidence.links]
        citations += [Citation("item", link.title, link.item_id) for link in evidence.links]
        genres = list(dict.fromkeys(g for link in evidence.links for g in link.shared_genres))[:3]
        tags = list(dict.fromkeys(t for link in evidence.links for t in link.shared_tags))[:2]
        citations += [Citation("genre", g) for g in genres] + [Citation("tag", t) for t in tags]
        if genres:
            what = "also " + _join_titles(genres) + (f", with {_join_titles(tags)}" if tags else "")
        elif tags:
            what = "also " + _join_titles(tags)
        else:
            what = f"a similar {item_noun}"
        text = f"Because you liked {_join_titles(titles)}: {what}{year}."
    elif evidence.genres or evidence.tags:
        genres, tags = list(evidence.genres), list(evidence.tags[:2])
        citations += [Citation("genre", g) for g in genres] + [Citation("tag", t) for t in tags]
        what = _join_titles(genres) + (f", with {_join_titles(tags)}" if genres and tags else _join_titles(tags))
        text = f"Recommended for its {'genres' if genres else 'tags'}: {what}{year}."
    else:
        text = f"Recommended {item_noun}{year}."
    if evidence.year:
        citations.append(Citation("year", str(evidence.year)))
    return Explanation(
        item_id=evidence.item_id,
        text=text,
        citations=tuple(citations),
        grounded=True,
        source="template",
        evidence=evidence,
    )


def explanation_prompt(evidence: Evidence, *, item_noun: str = "title") -> list[Message]:
    """The chat prompt asking a model to phrase ``evidence`` (data stays inside an ``<evidence>`` block).

    The system message carries :data:`~llmrec.llm.prompts.DATA_NOTICE`; the instruction sits outside the data
    block and names no item, so nothing from the catalogue is ever read as an instruction.
    """
    noun = sanitize(item_noun, max_chars=30) or "title"
    system = (
        f"You explain {noun} recommendations in one or two short sentences, using only the facts in the evidence. "
        f"Name the {noun}s the user liked. Do not mention any other {noun}, genre or year. " + DATA_NOTICE
    )
    user = (
        data_block("evidence", evidence.lines())
        + f"\n\nIn one or two sentences, tell the user why they may like the recommended {noun}, "
        f"naming the {noun}s they liked."
    )
    return [Message(role="system", content=system), Message(role="user", content=user)]


def repair(text: str, evidence: Evidence, catalogue: Catalogue, *, config: ExplainConfig | None = None) -> Explanation:
    """The explanation made from model ``text``: failing sentences dropped, the template when none is left.

    The same sentence filter as :func:`stream_explanation`, applied to a finished text: sentences are checked in
    order, at most ``max_sentences`` are kept, an unfinished last sentence is dropped (or, when it is the only
    one, closed with a full stop), and when nothing grounded remains the template is used.

    Args:
        text: The model's text.
        evidence: What it may rest on.
        catalogue: The catalogue.
        config: Settings; the catalogue's when ``None``.

    Returns:
        An :class:`Explanation` with source ``"lm"`` (kept whole), ``"repaired"`` or ``"template"``.
    """
    process = _SentenceFilter(evidence, catalogue, config or catalogue.config, raw=text)
    sentences = split_sentences(text, catalogue)
    for i, sentence in enumerate(sentences):
        process.feed(sentence, final=i == len(sentences) - 1)
        if process.full:
            break
    process.finish()
    return process.result


class _SentenceFilter:
    """Checks model sentences one at a time and releases the ones that pass (shared by repair and streaming)."""

    def __init__(self, evidence: Evidence, catalogue: Catalogue, config: ExplainConfig, raw: str = "") -> None:
        self.evidence, self.catalogue, self.config = evidence, catalogue, config
        self.raw = raw
        self.kept: list[str] = []
        self.citations: dict[Citation, None] = {}
        self.problems: list[Problem] = []
        self.repairs: list[str] = []
        self.consumed = 0
        self.result: Explanation | None = None

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.config.max_sentences

    def feed(self, sentence: str, *, final: bool) -> list[str]:
        """Check one sentence; return the text to release (with a leading space after the first) or nothing."""
        self.consumed += 1
        sentence = " ".join(sentence.split())
        if not sentence or self.full:
            return []
        if final and not _complete(sentence):
            if self.kept:
                self.repairs.append(f"dropped unfinished sentence {self.consumed}: {sentence!r}")
                return []
            sentence = _close_unfinished(sentence)
            self.repairs.append(f"closed unfinished sentence {self.consumed}")
        if not _complete(sentence):
            sentence += "."  # a line of its own ("User liked: Heat - shares Action") becomes a sentence
        result = check(sentence, self.evidence, self.catalogue, config=self.config)
        if not result.ok:
            self.problems.extend(result.problems)
            values = ", ".join(f"{p.kind} {p.value!r}" for p in result.problems)
            self.repairs.append(f"dropped sentence {self.consumed} (not in evidence: {values})")
            return []
        self.citations.update(dict.fromkeys(result.citations))
        piece = sentence if not self.kept else " " + sentence
        self.kept.append(sentence)
        return [piece]

    def finish(self) -> list[str]:
        """Settle the explanation; return the text still to release (the template, when it is needed)."""
        text = " ".join(self.kept)
        cites = tuple(self.citations)
        release: list[str] = []
        if self.kept:
            source: Source = "repaired" if self.problems else "lm"
        else:
            template = template_explanation(self.evidence, item_noun=self.config.item_noun)
            why = "no sentence of the model passed the check" if self.raw.strip() else "the model wrote nothing"
            self.repairs.append(f"{why}: fell back to the template")
            text, cites, release, source = template.text, template.citations, [template.text], "template"
        self.result = Explanation(
            item_id=self.evidence.item_id,
            text=text,
            citations=cites,
            grounded=True,
            source=source,
            problems=tuple(self.problems),
            repairs=tuple(self.repairs),
            raw_text=self.raw,
            evidence=self.evidence,
        )
        return release


class ExplanationStream:
    """Text pieces of an explanation, released sentence by sentence after each passed the check.

    Iterate it for the pieces; afterwards :attr:`explanation` holds the final :class:`Explanation`, whose
    ``text`` equals the joined pieces.
    """

    def __init__(self, pieces: Iterator[str], holder: list[Explanation]) -> None:
        self._pieces = pieces
        self._holder = holder

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    @property
    def explanation(self) -> Explanation:
        """The final explanation (the rest of the stream is consumed first when it has not finished)."""
        if not self._holder:
            for _ in self._pieces:
                pass
        return self._holder[0]


_STOP = ["\n\n", "<evidence>", "</evidence>", "<|"]


def stream_explanation(
    lm: LanguageModel | None,
    evidence: Evidence,
    catalogue: Catalogue,
    *,
    config: ExplainConfig | None = None,
) -> ExplanationStream:
    """Stream an explanation of ``evidence``: the model's sentences, each released only once it passed the check.

    A sentence is released when the model has started the next one (or finished), and only if it passes
    :func:`check`; a failing sentence is withheld. If none passes, the template text is released instead.
    Generation stops as soon as ``max_sentences`` sentences were released.

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel`; ``None`` streams the template.
        evidence: What the explanation may rest on.
        catalogue: The catalogue (for the check).
        config: Settings; the catalogue's when ``None``.

    Returns:
        An :class:`ExplanationStream` (iterate it, then read ``.explanation``).
    """
    config = config or catalogue.config
    holder: list[Explanation] = []

    def pieces() -> Iterator[str]:
        if lm is None:
            template = template_explanation(evidence, item_noun=config.item_noun)
            holder.append(template)
            yield template.text
            return
        process = _SentenceFilter(evidence, catalogue, config)
        source = lm.stream(
            explanation_prompt(evidence, item_noun=config.item_noun),
            max_new_tokens=config.max_new_tokens,
            temperature=0.0,
            stop=_STOP,
        )
        buffer = ""
        try:
            for piece in source:
                buffer += piece
                finished = split_sentences(buffer, catalogue)[:-1]  # the last one may still grow
                for sentence in finished[process.consumed :]:
                    yield from process.feed(sentence, final=False)
                if process.full:
                    break
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        rest = split_sentences(buffer, catalogue)[process.consumed :]
        for i, sentence in enumerate(rest):
            if process.full:
                break
            yield from process.feed(sentence, final=i == len(rest) - 1)
        process.raw = buffer
        released = process.finish()
        assert process.result is not None
        holder.append(process.result)
        yield from released

    return ExplanationStream(pieces(), holder)


# -- the explainer ---------------------------------------------------------------------------------------------


class Explainer:
    """Grounded explanations of recommendations for the users and items of one dataset.

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel` (local or OpenAI-compatible HTTP) to phrase the
            evidence; ``None`` gives template explanations only (fast, no model).
        data: The dataset: its catalogue is the evidence store and its interactions are the users' histories
            (pass the training split when evaluating, so no explanation cites a test item).
        config: Settings; :class:`ExplainConfig` defaults when ``None``.
        item_vectors: Optional item embeddings ``(n_items, d)`` to link similar history items.
    """

    def __init__(
        self,
        lm: LanguageModel | None,
        data: Dataset,
        config: ExplainConfig | None = None,
        *,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        self.lm = lm
        self.data = data
        self.config = config or _DEFAULT_CONFIG
        self.item_vectors = item_vectors
        self._catalogue: Catalogue | None = None

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue (built on first use, shared with other explainers of the same items table)."""
        if self._catalogue is None:
            self._catalogue = Catalogue.of(self.data, self.config)
        return self._catalogue

    def history(self, user: object) -> History:
        """The history meant by ``user``: a :class:`History`, a sequence of external item ids, or a user id.

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        if isinstance(user, History):
            return user
        if isinstance(user, Sequence | np.ndarray) and not isinstance(user, str | bytes):
            return History.from_ids(self.data, list(user))
        return History.of_user(self.data, user)

    def evidence(self, user: object, item_id: object) -> Evidence:
        """The evidence for explaining item ``item_id`` to ``user`` (see :meth:`history` for ``user``).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        candidate = int(self.data.item_vocab.index([item_id])[0])
        return build_evidence(
            self.history(user),
            candidate,
            self.data,
            config=self.config,
            item_vectors=self.item_vectors,
            catalogue=self.catalogue,
        )

    def explain(self, user: object, item_id: object) -> Explanation:
        """A grounded explanation of why ``item_id`` suits ``user`` (a user id, item ids, or a History).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        return self.stream(user, item_id).explanation

    def explain_many(self, user: object, item_ids: Iterable[object]) -> list[Explanation]:
        """Explanations of several items for one user (the history is looked up once).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        history = self.history(user)
        return [self.explain(history, item) for item in item_ids]

    def stream(self, user: object, item_id: object) -> ExplanationStream:
        """The explanation as checked sentences, released as the model writes them (see stream_explanation).

        Raises:
            UnknownIdError: The user or an item id is unknown.
        """
        evidence = self.evidence(user, item_id)
        return stream_explanation(self.lm, evidence, self.catalogue, config=self.config)

    def check(self, text: str, evidence: Evidence) -> CheckResult:
        """:func:`check` against this explainer's catalogue and config."""
        return check(text, evidence, self.catalogue, config=self.config)


def grounding_rate(explanations: Sequence[Explanation], catalogue: Catalogue) -> float:
    """Share of explanations whose final text passes the faithfulness check against its own evidence.

    The check is run again here (not read from ``grounded``), so a benchmark measures it independently.
    Explanations without evidence count as not grounded. ``nan`` for an empty list.
    """
    if not explanations:
        return float("nan")
    passed = sum(1 for e in explanations if e.evidence is not None and check(e.text, e.evidence, catalogue).ok)
    return passed / len(explanations)


def raw_grounding_rate(explanations: Sequence[Explanation]) -> float:
    """Share of model-written explanations whose raw model text passed the check without repair.

    Template-only explanations (no model) are not counted; ``nan`` when there are none.
    """
    raw = [e.raw_grounded for e in explanations if e.raw_grounded is not None]
    return sum(raw) / len(raw) if raw else float("nan")
