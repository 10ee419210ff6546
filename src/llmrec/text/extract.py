"""Key facts from item text: release year, genres and keyphrases.

These feed item texts, filters ("comedies after 2000"), and the evidence that explanations are checked against,
so each extractor prefers saying nothing to guessing: :func:`extract_year` ignores numbers that are prices,
ratings, decimals or far-future titles ("Blade Runner 2049"), and :func:`extract_genres` matches a fixed
vocabulary (MovieLens' genres with a few synonyms; pass your own for other domains).

:func:`keyphrases` is dependency-free and deterministic, a variant of RAKE (Rose et al., 2010, "Automatic
keyword extraction from individual documents"):

1. The text is cut into candidate phrases at punctuation, numbers and stopwords (:data:`STOPWORDS`); a run of
   content words longer than ``max_words`` is cut into pieces of ``max_words``.
2. Each word gets RAKE's score ``degree / frequency`` (how many words it co-occurs with in candidates, divided
   by how often it occurs), which favours words that appear inside longer phrases; with catalogue statistics
   (``idf`` from :func:`word_idf`) the score is multiplied by the word's inverse document frequency, so words
   every item shares ("story", "life") sink and distinctive ones rise, as in TF-IDF.
3. A phrase scores the sum of its word scores, times ``1 + log(count)`` of the phrase in the text; the top
   ``k`` distinct phrases are returned, ties broken by first occurrence.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import pandas as pd

from llmrec.text.clean import clean_text

__all__ = [
    "GENRE_VOCABULARY",
    "STOPWORDS",
    "ItemFacts",
    "extract_genres",
    "extract_year",
    "item_facts",
    "keyphrases",
    "word_idf",
]

#: Canonical genre -> lowercase phrases that name it in free text (MovieLens' 19 genres). Ambiguous words are
#: only matched in unambiguous phrases ("war film", not "war"; "a western", not "western Europe"; "family
#: film", not "children").
GENRE_VOCABULARY: dict[str, tuple[str, ...]] = {
    "Action": ("action", "action-packed"),
    "Adventure": ("adventure", "adventures"),
    "Animation": ("animation", "animated", "cartoon", "anime"),
    "Children": ("children's", "childrens", "kids' film", "kids film", "kids movie", "family film", "family movie"),
    "Comedy": ("comedy", "comedies", "comedic", "rom-com", "romcom", "sitcom"),
    "Crime": ("crime", "gangster", "heist"),
    "Documentary": ("documentary", "documentaries", "docudrama"),
    "Drama": ("drama", "dramas", "docudrama", "war drama"),
    "Fantasy": ("fantasy",),
    "Film-Noir": ("film noir", "film-noir", "neo-noir", "noir"),
    "Horror": ("horror", "slasher"),
    "IMAX": ("imax",),
    "Musical": ("musical", "musicals"),
    "Mystery": ("mystery", "mysteries", "whodunit"),
    "Romance": ("romance", "romantic", "rom-com", "romcom", "love story"),
    "Sci-Fi": ("sci-fi", "scifi", "science fiction", "science-fiction"),
    "Thriller": ("thriller", "thrillers", "suspense"),
    "War": ("war film", "war movie", "war drama", "war epic", "war films", "war movies"),
    "Western": ("a western", "westerns", "western film", "western movie", "spaghetti western"),
}

_STOPWORD_TEXT = """
    a about above across after again against all almost alone along already also although always am among an
    and another any anybody anyone anything anyway anywhere are aren't around as at away back be became because
    become becomes been before behind being below beside besides best better between beyond both but by can
    can't cannot could couldn't did didn't do does doesn't doing don't done down during each either else
    enough even ever every everyone everything everywhere few first for from further get gets getting give
    given gives go goes going gone got had hadn't has hasn't have haven't having he he'd he'll he's her here
    here's hers herself him himself his how how's however i i'd i'll i'm i've if in indeed instead into is
    isn't it it's its itself just last least less let let's like likely made make makes making many may maybe
    me might mine more most mostly much must mustn't my myself neither never nevertheless next no nobody none
    nor not nothing now nowhere of off often on once one ones only onto or other others otherwise ought our
    ours ourselves out over own perhaps quite rather really same see seem seemed seems seen several shall
    shan't she she'd she'll she's should shouldn't since so some somebody someone something sometimes
    somewhat somewhere still such take taken than that that's the their theirs them themselves then there
    there's therefore these they they'd they'll they're they've thing things this those though through
    throughout thus to together too toward towards two under until up upon us use used using very via was
    wasn't way we we'd we'll we're we've well went were weren't what what's whatever when when's whenever
    where where's whereas wherever whether which while who who's whoever whole whom whose why why's will with
    within without won't would wouldn't yet you you'd you'll you're you've your yours yourself yourselves
    film films movie movies picture pictures story stories time times plot character characters scene scenes
    good great bad lot lots kind sort bit actually simply certainly probably finally seems new old also
    does review reviews watch watched watching minutes director directed starring stars pretty fairly
    extremely totally completely especially truly entirely definitely absolutely incredibly highly seriously
    basically obviously apparently merely nearly fully largely particularly unfortunately fortunately
"""
#: English function words plus words every review or description uses ("film", "movie", "really"); they break
#: candidate phrases in :func:`keyphrases`.
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*[^\W_])?|\d+(?:[.,]\d+)*[^\W_]*")
_PHRASE_BREAK = re.compile(r"[.,;:!?()\[\]{}\"“”«»…–—/\\|•·*#]|\s-\s|\s'\s|\n")
_PAREN_YEAR = re.compile(r"\(\s*(?:[^()]*?\s)?(\d{4})\s*(?:[-–]\s*(?:\d{4}|present)?\s*)?\)")
_BARE_YEAR = re.compile(r"(?<![\w$€£¥#+./:,-])(\d{4})(?![\w%$€£]|[.,:/-]\d|\s?/\s?\d)")


def _max_year() -> int:
    return date.today().year + 1


def extract_year(text: object, *, min_year: int = 1870, max_year: int | None = None, bare: bool = True) -> int | None:
    """Release year named in a title or text, or ``None``.

    A year in brackets wins, the last one when there are several (``"Blade Runner 2049 (2017)"`` -> 2017,
    ``"Heat (a.k.a. Fire) (1995)"`` -> 1995, ``"Lost (2004-2010)"`` -> 2004). Otherwise, with ``bare``, the
    first stand-alone four-digit number in range (``"Released in 1999, ..."`` -> 1999); numbers that are part of
    prices, decimals, ratios, dates written with digits around them, or decades ("1990s") are not years.

    Args:
        text: Title or free text (non-strings give ``None``).
        min_year: Earliest year accepted (1870: the first motion pictures).
        max_year: Latest year accepted; next year when ``None``, so "2049" in a title is not a year.
        bare: Also accept years without brackets.

    Returns:
        The year, or ``None`` when there is no plausible one.

    """
    if not isinstance(text, str) or not text:
        return None
    hi = _max_year() if max_year is None else max_year
    for match in reversed(list(_PAREN_YEAR.finditer(text))):
        year = int(match.group(1))
        if min_year <= year <= hi:
            return year
    if bare:
        for match in _BARE_YEAR.finditer(text):
            year = int(match.group(1))
            if min_year <= year <= hi:
                return year
    return None


def _genre_lookup(vocabulary: Mapping[str, Sequence[str]]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for canonical, phrases in vocabulary.items():
        lookup.setdefault(canonical.casefold(), canonical)
        for phrase in phrases:
            lookup.setdefault(phrase.casefold(), canonical)
    return lookup


def _genre_regex(vocabulary: Mapping[str, Sequence[str]]) -> re.Pattern[str]:
    phrases = sorted({p.casefold() for ps in vocabulary.values() for p in ps}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in phrases) + r")(?![\w-])", re.IGNORECASE)


_DEFAULT_LOOKUP = _genre_lookup(GENRE_VOCABULARY)
_DEFAULT_GENRE_RE = _genre_regex(GENRE_VOCABULARY)


def extract_genres(
    value: object = None,
    *,
    text: object = None,
    vocabulary: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Genres of an item, from a ``"|"``-separated field or, failing that, from free text.

    Field values are split on ``"|"``, stripped, and mapped to the vocabulary's canonical spelling when known
    (``"sci-fi"`` -> ``"Sci-Fi"``); unknown genres are kept as written, and ``"(no genres listed)"`` is dropped.
    When the field gives nothing, ``text`` is searched for the vocabulary's phrases (whole words,
    case-insensitive), e.g. ``"a romantic comedy set in Paris"`` -> ``["Romance", "Comedy"]``.

    Args:
        value: The genres field: a ``"|"``-separated string or a list of names (``None``/NaN for none).
        text: Free text to search when the field is empty (title, description).
        vocabulary: Canonical genre -> phrases naming it; :data:`GENRE_VOCABULARY` when ``None``.

    Returns:
        Distinct genres in order of appearance.

    """
    vocab = GENRE_VOCABULARY if vocabulary is None else vocabulary
    lookup = _DEFAULT_LOOKUP if vocabulary is None else _genre_lookup(vocab)
    names: list[str]
    if isinstance(value, str):
        names = value.split("|")
    elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        names = [str(v) for v in value if v is not None]
    else:
        names = []
    out: list[str] = []
    for name in names:
        name = " ".join(name.split())
        if not name or name.casefold() in {"(no genres listed)", "nan", "none"}:
            continue
        canonical = lookup.get(name.casefold(), name)
        if canonical not in out:
            out.append(canonical)
    if out or not isinstance(text, str) or not text:
        return out
    pattern = _DEFAULT_GENRE_RE if vocabulary is None else _genre_regex(vocab)
    for match in pattern.finditer(text):
        phrase = match.group().casefold()
        for canonical, phrases in vocab.items():
            if phrase in {p.casefold() for p in phrases} and canonical not in out:
                out.append(canonical)
    return out


def _candidates(text: str, stopwords: frozenset[str], max_words: int) -> list[tuple[str, ...]]:
    """Candidate phrases: runs of content words between punctuation, numbers and stopwords."""
    phrases: list[tuple[str, ...]] = []
    for chunk in _PHRASE_BREAK.split(text.lower().replace("’", "'")):
        run: list[str] = []
        for word in [*_WORD.findall(chunk), ""]:  # "" flushes the last run
            stem = word[:-2] if word.endswith("'s") else word
            if word and not word[0].isdigit() and len(word) > 1 and stem not in stopwords:
                run.append(word)
                continue
            for i in range(0, len(run), max_words):
                phrases.append(tuple(run[i : i + max_words]))
            run = []
    return phrases


def word_idf(texts: Iterable[str], stopwords: frozenset[str] = STOPWORDS) -> dict[str, float]:
    """Smoothed inverse document frequency of every content word in a catalogue, for :func:`keyphrases`.

    ``idf(w) = ln((1 + N) / (1 + df(w))) + 1`` over ``N`` texts, the scikit-learn convention, so a word in
    every text weighs 1 and a rare word more.

    Args:
        texts: The catalogue's texts (e.g. item descriptions).
        stopwords: Words ignored, as in :func:`keyphrases`.

    Returns:
        Word (lowercase) -> idf.

    """
    df: Counter[str] = Counter()
    n = 0
    for text in texts:
        n += 1
        df.update({w for phrase in _candidates(str(text), stopwords, 1) for w in phrase})
    return {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}


def keyphrases(
    text: object,
    k: int = 5,
    *,
    idf: Mapping[str, float] | None = None,
    max_words: int = 3,
    stopwords: frozenset[str] | None = None,
) -> list[str]:
    """The ``k`` most characteristic phrases of ``text`` (lowercase), RAKE-style (see the module docstring).

    Args:
        text: Free text (cleaned or not; non-strings give ``[]``).
        k: How many phrases at most.
        idf: Word -> inverse document frequency (from :func:`word_idf` over the catalogue); words missing from
            it get the largest idf given. Without it, plain RAKE scores are used.
        max_words: Longest phrase, in words.
        stopwords: Words that break phrases; :data:`STOPWORDS` when ``None``.

    Returns:
        Up to ``k`` distinct phrases, best first.

    """
    if not isinstance(text, str) or k <= 0:
        return []
    phrases = _candidates(text, STOPWORDS if stopwords is None else stopwords, max(1, max_words))
    if not phrases:
        return []
    freq: Counter[str] = Counter()
    degree: Counter[str] = Counter()
    for phrase in phrases:
        for word in phrase:
            freq[word] += 1
            degree[word] += len(phrase)
    default_idf = max(idf.values(), default=1.0) if idf else 1.0
    word_score = {w: degree[w] / freq[w] * (idf.get(w, default_idf) if idf is not None else 1.0) for w in freq}
    counts = Counter(phrases)
    first: dict[tuple[str, ...], int] = {}
    for i, phrase in enumerate(phrases):
        first.setdefault(phrase, i)
    scored = sorted(
        counts,
        key=lambda p: (-sum(word_score[w] for w in p) * (1.0 + math.log(counts[p])), first[p]),
    )
    return [" ".join(p) for p in scored[:k]]


@dataclass(frozen=True)
class ItemFacts:
    """Key facts of one item.

    Attributes:
        year: Release year, or ``None``.
        genres: Genres in the catalogue's order (canonical spelling).
        keyphrases: Characteristic phrases of the description, best first (the item's tags when it has no
            description).

    """

    year: int | None
    genres: tuple[str, ...] = field(default_factory=tuple)
    keyphrases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of tuples)."""
        out = asdict(self)
        out["genres"], out["keyphrases"] = list(self.genres), list(self.keyphrases)
        return out


def _scalar(row: Mapping[str, Any] | pd.Series, key: str) -> Any:
    value = row.get(key)
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value


def item_facts(
    row: Mapping[str, Any] | pd.Series,
    *,
    k: int = 5,
    idf: Mapping[str, float] | None = None,
    vocabulary: Mapping[str, Sequence[str]] | None = None,
) -> ItemFacts:
    """Year, genres and keyphrases of one item row (a row of :attr:`Dataset.items` or any mapping).

    Year: the ``year`` column when set, else from the title (bracketed years only: a title number such as
    "2001" is not a release year), else from the text. Genres: the ``genres`` field, else genre words in the
    title and text. Keyphrases: from the cleaned ``text``; an item without text gets its first ``k`` distinct
    tags, since tags are keyphrases people already chose.

    Args:
        row: Item row with any of ``title``, ``text``, ``genres``, ``tags``, ``year``.
        k: Number of keyphrases.
        idf: Catalogue word statistics for :func:`keyphrases` (from :func:`word_idf`).
        vocabulary: Genre vocabulary for free-text genres; :data:`GENRE_VOCABULARY` when ``None``.

    Returns:
        The item's :class:`ItemFacts`.

    """
    title = clean_text(_scalar(row, "title"))
    text = clean_text(_scalar(row, "text"))
    year_value = _scalar(row, "year")
    year: int | None
    try:
        year = int(year_value) if year_value is not None and str(year_value).strip() else None
    except (TypeError, ValueError):
        year = None
    if year is None:
        year = extract_year(title, bare=False) or extract_year(text)
    genres = extract_genres(_scalar(row, "genres"), text=f"{title}. {text}", vocabulary=vocabulary)
    phrases = keyphrases(text, k, idf=idf) if text else []
    if not phrases:
        tags = _scalar(row, "tags")
        seen: dict[str, None] = {}
        for tag in tags.split("|") if isinstance(tags, str) else []:
            tag = clean_text(tag).lower()
            if tag:
                seen.setdefault(tag, None)
        phrases = list(seen)[:k]
    return ItemFacts(year=year, genres=tuple(genres), keyphrases=tuple(phrases))
