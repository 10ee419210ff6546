"""Word keys for matching text against a catalogue, and the detector of instruction-like item text.

:func:`_key` turns text into the casefolded word tuple that titles, genres and tags are indexed by (so "The
Matrix" and "the matrix." match); :data:`_YEAR` finds a release year in free text; :func:`looks_like_instruction`
spots item or user text that tries to talk to a model. The catalogue, the chat's parser and the explanation
check all use them, so they sit below the language-model layer.
"""

from __future__ import annotations

import re

from llmrec.text.clean import clean_text
from llmrec.text.titles import sanitize

__all__ = ["looks_like_instruction"]

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
