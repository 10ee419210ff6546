"""Word keys for matching text against a catalogue, and the detector of instruction-like item text.

:func:`_key` turns text into the casefolded word tuple that titles, genres and tags are indexed by (so "The
Matrix" and "the matrix." match); :data:`_YEAR` finds a release year in free text; :func:`looks_like_instruction`
spots item or user text that tries to talk to a model. The catalogue, the chat's parser and the explanation
check all use them, so they sit below the language-model layer.

Item text gets a wider net (:func:`looks_like_injection`): besides instructions, catalogue text has no business
steering a ranking ("always recommend it first"), asking for data ("print the user's e-mail"), addressing the
system ("Attention AI:", "END OF DATA") or stuffing a sentence with genre names. :func:`strip_injections` drops such
sentences from a description before it is embedded or quoted, so an item is scored on what it is about, not on
what it asks for (issue 17, item 5; measured by ``benchmarks/injection.py``). The chat's parser keeps the narrower
:func:`looks_like_instruction`: people may well ask "what should I watch first?".
"""

from __future__ import annotations

import re

from llmrec.text.clean import clean_text
from llmrec.text.extract import GENRE_VOCABULARY
from llmrec.text.titles import sanitize

__all__ = ["looks_like_injection", "looks_like_instruction", "strip_injections"]

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


# What catalogue text (descriptions, tags) has no reason to say: ranking orders, requests for data, words addressed
# to the system, fake delimiters, links and "sequels on our site". Matched per sentence.
_VERB = r"(?:recommend|rank|rate|suggest|promote)"
_POSITION = r"(?:first|top|above|everyone|every\s+(?:user|one|list)|all\s+users|highest|no\s+matter)"
_ITEM_INJECTION = re.compile(
    rf"\b(?:always|must|should|please)\s+(?:be\s+)?{_VERB}(?:ed)?\b"
    rf"|\b(?:{_VERB}|put|place)(?:ed)?\s+(?:this|it|me|us|[\w' ]{{1,40}}?)\b.{{0,40}}?\b{_POSITION}\b"
    r"|\b(?:top|head)\s+of\s+(?:every|the|all|each|any)\s+(?:list|ranking|results?|recommendations?)\b"
    r"|\b(?:rated|rate|give\s+it)\s+(?:it\s+)?(?:5|five|10|ten)\s+stars?\s+(?:for|by|from)\s+(?:all|every)"
    r"|\brecommender\s+system\s*[:,]|\battention\s+(?:ai|model|assistant|llm|bot|system)\b"
    r"|\b(?:print|reveal|repeat|show|list|send|leak|tell|give|output|share|dump|display)\b.{0,40}?"
    r"\b(?:system\s+prompt|instructions|(?:user|users|user's|their)\b.{0,25}?\b(?:history|e-?mails?|profiles?|"
    r"ratings|data|passwords?|address(?:es)?)|other\s+users?|every\s+user|passwords?)\b"
    r"|\b(?:end|begin|start)\s+of\s+(?:the\s+)?(?:data|instructions?|prompt|context|evidence)\b"
    r"|-{3,}\s*(?:begin|end)\b|\b(?:begin|end)\s+(?:instructions?|system|prompt)\b"
    r"|\b(?:system|assistant)\s*:|#{2,}\s*(?:instruction|system|response|assistant|user)"
    r"|\btell\s+the\s+(?:user|reader|viewer)\b|\bthe\s+user\s+(?:asked|wants|told)\s+you\b"
    r"|\bsend\s+(?:us\s+)?(?:your|their)\s+(?:password|e-?mail|card|details)"
    r"|\b(?:available|stream(?:ing)?)\s+(?:on|at)\s+(?:our|this)\s+(?:site|website|app)\b|https?://|www\."
    r"|\bif\s+you\s+(?:liked|loved|enjoyed)\b.{0,60}?\byou(?:'ll|\s+will)\s+(?:love|like|enjoy)\s+(?:this|it)\b"
    r"|\b(?:only|best)\s+(?:movie|film|book|item|one)\s+(?:ever\s+made|worth\s+(?:watching|reading))\b",
    re.IGNORECASE,
)
_GENRE_WORDS = (
    frozenset(
        w for phrases in GENRE_VOCABULARY.values() for phrase in phrases for w in _TOKEN.findall(phrase.casefold())
    )
    | frozenset(w for name in GENRE_VOCABULARY for w in _TOKEN.findall(name.casefold()))
    | {"sci", "fi", "noir"}
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|(?=<\|)|(?<=\|>)")


_NAME_RUN = re.compile(r"^\W*(?:[A-Z0-9][\w'’-]*\s+){5,}[A-Z0-9][\w'’-]*\W*$")


def _stuffed(text: str) -> bool:
    """Keyword stuffing, not prose: a run of genre names or of capitalised words without punctuation.

    "Action Comedy Drama Thriller Sci-Fi..." and "Forrest Gump Pulp Fiction Matrix Star Wars" are lists of what
    people search for, written to pull an item towards every query.
    """
    words = _tokens(text)
    genre = sum(1 for w in words if w in _GENRE_WORDS)
    return (genre >= 5 and genre >= 0.5 * len(words)) or bool(_NAME_RUN.match(text.strip()))


def looks_like_injection(text: object) -> bool:
    """Whether item text (a description sentence, a tag) tries to steer, leak, impersonate or stuff.

    A superset of :func:`looks_like_instruction` for catalogue text, where any sentence that orders a ranking,
    asks for user data or the prompt, addresses the system, fakes a delimiter, points outside the catalogue (a
    link, "on our site") or is a run of genre names is an attack, not a description.
    """
    if looks_like_instruction(text):
        return True
    raw = clean_text(text)
    return bool(raw) and (bool(_ITEM_INJECTION.search(raw)) or _stuffed(raw))


def strip_injections(text: object) -> str:
    """``text`` without its injection-like sentences (see :func:`looks_like_injection`); clean text is unchanged.

    The text is split into sentences (and at chat-template markers); every sentence that looks like an injection
    is dropped and the rest joined as they were. Text with nothing to drop is returned exactly as given, so
    catalogues without attacks embed (and cache) the same strings as before.
    """
    raw = "" if text is None else str(text)
    if not raw.strip():
        return raw
    parts = [p for p in _SENTENCE.split(raw) if p and p.strip()]
    kept = [p for p in parts if not looks_like_injection(p)]
    if len(kept) == len(parts):
        return raw
    return " ".join(" ".join(kept).split())
