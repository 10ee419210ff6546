"""Text helpers of grounded explanations: sentence splitting, the words explanations are made of, quotes.

Cutting text into sentences without splitting a title (:func:`split_sentences`), the quoted-phrase pattern and
the explanation vocabulary are shared by the faithfulness check and the sentence-by-sentence stream. Word keys
and the instruction detector live below the language-model layer, in :mod:`llmrec.text.matching`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmrec.catalogue import Catalogue


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
