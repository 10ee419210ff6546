"""Text cleaning: HTML, unicode, control characters, whitespace, boilerplate and repeated sentences.

Item descriptions and user profiles arrive scraped from web pages, exported from shops or typed by people. The
encoder and the prompts should see the words only: no markup, no entity soup, one unicode form (NFKC, so the
full-width "Ａ" and the ligature "ﬁ" embed like "A" and "fi"), no invisible control characters, no "Read more"
links and no sentence pasted twice. :func:`clean_text` does all of that and is idempotent
(``clean_text(clean_text(x)) == clean_text(x)``), so cleaning twice, e.g. once at ingest and once before
embedding, never changes the text (or its cache key) again.

HTML is parsed with the standard library's :class:`html.parser.HTMLParser`, and only when the text contains
something that looks like a real HTML tag, comment or doctype. Plain text such as ``"if a<b then"`` or
``"5 <3 love"`` is left as it is (entities such as ``&amp;`` are still decoded).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any, Literal, cast

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_BOILERPLATE",
    "CleanConfig",
    "clean_text",
    "dedupe_sentences",
    "normalize_unicode",
    "remove_boilerplate",
    "split_sentences",
    "strip_html",
]

NormalForm = Literal["NFC", "NFKC", "NFD", "NFKD"]

#: Sentences or lines that are page furniture rather than content. Each is a regular expression matched,
#: case-insensitively, against a whole sentence/line with its surrounding punctuation and arrows stripped, so
#: ``"Read more »"`` and ``"Click here to subscribe!"`` go while ``"I read more books than films"`` stays.
#: Extend it through :attr:`CleanConfig.extra_boilerplate`.
DEFAULT_BOILERPLATE: tuple[str, ...] = (
    r"read (?:the )?(?:more|full (?:story|review|article|text)|on)",  # "Read more", "Read the full review"
    r"(?:continue|keep) reading(?: [^.!?]*)?",
    r"(?:see|show|view) (?:more|less|all|details)",
    r"click here(?: [^.!?]*)?",  # "Click here", "Click here to subscribe"
    r"(?:copyright ?)?(?:©|\(c\)|copyright) ?(?:\d{4}|by )(?:.*)?",  # "© 2021 Acme Inc", "Copyright 2020 Foo"
    r".*\ball rights reserved\b.*",
    r"share (?:this|on \w+)(?: [^.!?]*)?",  # "Share this", "Share on Facebook"
    r"advertisement|sponsored(?: content)?",
    r"subscribe(?: (?:now|today|here|to (?:our|the) newsletter))?",
    r"sign up for (?:our|the) newsletter(?: [^.!?]*)?",
    r"(?:this (?:web)?site|we) uses? cookies(?: [^.!?]*)?",
    r"(?:back to top|skip to (?:main )?content|print this page|opens in a new (?:window|tab))",
)

_BLOCK_TAG_NAMES = (
    "address article aside blockquote br dd div dl dt figcaption footer h1 h2 h3 h4 h5 h6 header hr li main nav "
    "ol p pre section table td th tr ul"
)
_INLINE_TAG_NAMES = (
    "a abbr b big body center cite code em font html i img input label link meta small span strike strong sub sup u wbr"
)
_BLOCK_TAGS = frozenset(_BLOCK_TAG_NAMES.split())
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title"})
_KNOWN_TAGS = _BLOCK_TAGS | _SKIP_TAGS | frozenset(_INLINE_TAG_NAMES.split())
_TAG_NAMES = "|".join(sorted(_KNOWN_TAGS, key=len, reverse=True))
# Evidence of HTML: a comment, a doctype, a bare known tag (<p>, </b>, <br/>) or one with an attribute=value.
# "<b then c>" is not evidence: in plain text it is a comparison.
_LOOKS_LIKE_HTML = re.compile(
    rf"<!--|<!doctype|</?(?:{_TAG_NAMES})\s*/?>|<(?:{_TAG_NAMES})\s+[\w:-]+\s*=[^<>]*>",
    re.IGNORECASE,
)
_MAX_PASSES = 8
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
# Words after which a full stop does not end a sentence ("Dr. Strangelove", "Vol. 2", "J. R. R. Tolkien").
_ABBREVIATION_LIST = "mr mrs ms dr prof st jr sr vs etc no vol ch pt fig mt ft co inc ltd approx dept e.g i.e a.k.a"
_ABBREVIATIONS = frozenset(_ABBREVIATION_LIST.split())
_EDGE_PUNCT = "\"'“”‘’«»‹›()[]{}<>.,;:!?…-–—·•|*#>→»/\\ "


class CleanConfig(BaseModel):
    """What :func:`clean_text` does.

    Attributes:
        strip_html: Remove HTML tags and comments (scripts and styles with their content) and decode entities.
        normalize: Unicode normalization form; NFKC folds compatibility characters (full-width letters,
            ligatures, non-breaking spaces) so equal-looking text embeds equally.
        remove_boilerplate: Drop sentences/lines matching :data:`DEFAULT_BOILERPLATE` or ``extra_boilerplate``.
        extra_boilerplate: More boilerplate regular expressions (matched case-insensitively against a whole
            sentence or line, surrounding punctuation stripped).
        dedupe_sentences: Drop a sentence that repeats an earlier one (compared case- and punctuation-blind).
        min_dedupe_words: Only sentences with at least this many words are deduplicated, so short repeats that
            are content ("No. No. No.") and fragments of imperfect sentence splitting stay.
        keep_newlines: Keep line breaks (one per non-empty line); otherwise all whitespace becomes one space.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strip_html: bool = True
    normalize: NormalForm = "NFKC"
    remove_boilerplate: bool = True
    extra_boilerplate: tuple[str, ...] = ()
    dedupe_sentences: bool = True
    min_dedupe_words: int = Field(default=3, ge=1)
    keep_newlines: bool = False

    @field_validator("extra_boilerplate")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"boilerplate pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns


_DEFAULT_CONFIG = CleanConfig()


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML document; block elements become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in {"img", "input", "wbr"}:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Text of ``text`` without HTML markup, entities decoded.

    The HTML parser runs only when the text contains a known HTML tag, a comment or a doctype; otherwise only
    entities are decoded, so plain-text comparisons such as ``"a<b"`` survive. Block elements (``<p>``,
    ``<br>``, ``<li>``, ...) become line breaks so sentences on separate lines do not run together.

    Args:
        text: Possibly HTML text.

    Returns:
        The text content.

    """
    if _LOOKS_LIKE_HTML.search(text):
        parser = _TextExtractor()
        parser.feed(text)
        parser.close()
        return "".join(parser.parts)
    return html.unescape(text) if "&" in text else text


def normalize_unicode(text: str, form: NormalForm = "NFKC") -> str:
    r"""Unicode-normalize ``text`` and drop invisible characters.

    Control characters (category Cc) other than line breaks and tabs, format characters (Cf: zero-width
    spaces, BOMs, soft hyphens, direction marks) and lone surrogates (Cs) are removed; line and paragraph
    separators become ``"\n"``. Tabs and other whitespace are kept for :func:`clean_text` to collapse.

    Args:
        text: Any text.
        form: ``"NFKC"`` (default), ``"NFC"``, ``"NFKD"`` or ``"NFD"``.

    Returns:
        The normalized text.

    """
    if text.isascii():  # fast path: normalization is the identity on ASCII
        return _ASCII_CONTROL.sub("", text)
    text = unicodedata.normalize(form, text)
    out: list[str] = []
    for ch in text:
        if ch in "\n\t\r\f\v":
            out.append(ch)
            continue
        category = unicodedata.category(ch)
        if category in {"Zl", "Zp"}:
            out.append("\n")
        elif category not in {"Cc", "Cf", "Cs"}:
            out.append(ch)
    return "".join(out)


def split_sentences(text: str) -> list[str]:
    """Split one line of text into sentences (each keeps its own end punctuation and trailing space).

    A light rule-based splitter: a sentence ends at ``.``, ``!``, ``?`` or ``…`` (optionally followed by
    closing quotes or brackets) and whitespace, except after a common abbreviation ("Dr.", "vs.", "Vol.")
    or a single-letter initial ("J. R. R. Tolkien"). ``"".join(split_sentences(s)) == s`` always holds.

    Args:
        text: Text, usually one line.

    Returns:
        The sentences, in order.

    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].rsplit(None, 1)
        last_word = before[-1].lower().rstrip(".") if before else ""
        initial = len(last_word) == 1 and last_word.isalpha() and before[-1][-1:].isupper()
        if match.group().startswith(".") and (initial or last_word in _ABBREVIATIONS):
            continue
        sentences.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _key(sentence: str) -> str:
    """Comparison key of a sentence: casefolded words without surrounding punctuation."""
    return " ".join(sentence.casefold().strip(_EDGE_PUNCT).split())


def _boilerplate_regex(extra: Iterable[str]) -> re.Pattern[str]:
    patterns = [*DEFAULT_BOILERPLATE, *extra]
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_DEFAULT_BOILERPLATE_RE = _boilerplate_regex(())


def _is_boilerplate(sentence: str, pattern: re.Pattern[str]) -> bool:
    key = _key(sentence)
    return bool(key) and pattern.fullmatch(key) is not None


def remove_boilerplate(text: str, extra: Iterable[str] = ()) -> str:
    """Drop lines and sentences that are boilerplate (see :data:`DEFAULT_BOILERPLATE`).

    Args:
        text: Text, possibly with several lines.
        extra: More regular expressions, each matched case-insensitively against a whole sentence or line.

    Returns:
        The text without boilerplate; line breaks are kept, whitespace is not otherwise changed.

    """
    extra = tuple(extra)
    return _remove_boilerplate(text, _boilerplate_regex(extra) if extra else _DEFAULT_BOILERPLATE_RE)


def _remove_boilerplate(text: str, pattern: re.Pattern[str]) -> str:
    lines = []
    for line in text.split("\n"):
        if not _is_boilerplate(line, pattern):
            lines.append("".join(s for s in split_sentences(line) if not _is_boilerplate(s, pattern)))
    return "\n".join(lines)


def dedupe_sentences(text: str, min_words: int = 3) -> str:
    """Drop sentences that repeat an earlier sentence of ``text`` (any line).

    Sentences are compared by their casefolded words with surrounding punctuation ignored, so
    ``"Great film!"`` repeats ``"great film."``. Sentences shorter than ``min_words`` words are always kept.

    Args:
        text: Text, possibly with several lines.
        min_words: Shortest sentence (in words) that is deduplicated.

    Returns:
        The text with the first occurrence of each sentence; line breaks are kept.

    """
    seen: set[str] = set()
    lines = []
    for line in text.split("\n"):
        kept = []
        for sentence in split_sentences(line):
            key = _key(sentence)
            if len(key.split()) >= min_words:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(sentence)
        lines.append("".join(kept))
    return "\n".join(lines)


def _clean_once(text: str, config: CleanConfig, boilerplate: re.Pattern[str]) -> str:
    if config.strip_html:
        text = strip_html(text)
    text = normalize_unicode(text, config.normalize)
    lines = [" ".join(line.split()) for line in re.split(r"[\n\r\f\v]", text)]
    text = "\n".join(line for line in lines if line)
    if config.remove_boilerplate:
        text = _remove_boilerplate(text, boilerplate)
    if config.dedupe_sentences:
        text = dedupe_sentences(text, config.min_dedupe_words)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return ("\n" if config.keep_newlines else " ").join(line for line in lines if line)


def clean_text(text: object, config: CleanConfig | None = None) -> str:
    """Clean text for embedding and prompting.

    Steps: strip HTML and decode entities, normalize unicode (NFKC) and drop control/format characters, drop
    boilerplate sentences and repeated sentences, collapse whitespace (one space, or one line break per
    non-empty line with ``keep_newlines``). The steps are repeated until the text stops changing (at most a few
    passes), which makes the function idempotent even for double-escaped HTML such as ``"&amp;lt;b&amp;gt;"``.

    Args:
        text: Text to clean; ``None`` and NaN give ``""``, other non-strings are converted with ``str``.
        config: What to do; :class:`CleanConfig` defaults when ``None``.

    Returns:
        The cleaned text.

    """
    if not isinstance(text, str):
        if text is None or (pd.api.types.is_scalar(text) and pd.isna(cast(Any, text))):  # a scalar: NaN, NA, NaT
            return ""
        text = str(text)
    config = config or _DEFAULT_CONFIG
    if len(text) <= _CACHED_CHARS:
        return _clean_short(text, config)
    return _clean(text, config)


def _clean(text: str, config: CleanConfig) -> str:
    boilerplate = _boilerplate_regex(config.extra_boilerplate) if config.extra_boilerplate else _DEFAULT_BOILERPLATE_RE
    out = _clean_once(text, config, boilerplate)
    if out == text:  # already clean: a second pass would change nothing either
        return out
    for _ in range(_MAX_PASSES):
        again = _clean_once(out, config, boilerplate)
        if again == out:
            break
        out = again
    return out


# Catalogues repeat short values (genres, tags, titles of series): cache those, not long descriptions.
_CACHED_CHARS = 256
_clean_short = lru_cache(maxsize=65536)(_clean)
