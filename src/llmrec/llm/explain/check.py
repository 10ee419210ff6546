"""The faithfulness check of grounded explanations and the records it produces.

:func:`check` finds every title, genre, tag and year a text names (through the catalogue's mention index) and
reports each one the evidence does not hold, plus quoted inventions, markup, loops and unsupported words. The
result types (:class:`Citation`, :class:`Problem`, :class:`CheckResult`, :class:`Explanation`) live here with it
because repair, streaming and the benchmarks all build on what the check reports.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmrec.catalogue import _ARTICLES, Catalogue, _title_variants
from llmrec.llm.explain.config import ExplainConfig, settings_of
from llmrec.llm.explain.evidence import Evidence, HistoryLink
from llmrec.llm.explain.text import _QUOTED, EXPLANATION_WORDS, _sentence_spans
from llmrec.text.extract import STOPWORDS
from llmrec.text.matching import _MARKUP, _TOKEN, _key, _tokens

Source = Literal["lm", "template", "repaired"]
CitationKind = Literal["item", "genre", "tag", "year"]
ProblemKind = Literal["item", "genre", "tag", "year", "quoted", "markup", "repetition", "unsupported", "no_reference"]


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
    config = config or settings_of(catalogue)
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


# "you liked", "the user has watched", "they enjoyed:" ... (the evidence block says "The user liked: <title>").
_PAST_LIKING = re.compile(
    r"\b(?:you|the\s+user|this\s+user|they|he|she)(?:'ve|\s+have|\s+has)?\s+(?:already\s+|also\s+|really\s+)?"
    r"(?:liked|loved|enjoyed|watched|rated|seen|saw)(?:\s*:\s*|\s+)",
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
    if not stripped or stripped.lower() in _ARTICLES:  # "liked: The Hunt for ..." (title indexed without "The")
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
