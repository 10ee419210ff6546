"""Text helpers of grounded explanations: word tokens, sentence splitting, and the patterns the check uses.

Tokenizing (:func:`_tokens`, :func:`_key`), cutting text into sentences without splitting a title
(:func:`split_sentences`), spotting instruction-like item text (:func:`looks_like_instruction`) and the regular
expressions for markup, years and quotes are shared by the catalogue's mention index, the faithfulness check and
the sentence-by-sentence stream, so they sit in one module that depends on nothing else in the package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmrec.llm.prompts import sanitize
from llmrec.text.clean import clean_text

if TYPE_CHECKING:
    from llmrec.llm.explain.catalogue import Catalogue


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
