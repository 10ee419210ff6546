"""Item titles as people say them, and any text made safe to show a language model or a person.

:func:`sanitize` cleans a value (control markers of chat templates and tags shaped like our prompt delimiters
removed, one line, cut at a word boundary); :func:`short_title` turns a catalogue title such as "Usual Suspects,
The (1995)" into "The Usual Suspects". The catalogue, the chat, evaluation and every prompt use them, so they
live here, below the language-model layer.
"""

from __future__ import annotations

import re

from llmrec.text.clean import clean_text

__all__ = ["sanitize", "short_title"]

# Chat-template and instruction-format markers of common model families, and any tag shaped like ours.
_CONTROL = re.compile(
    r"<\|[^|>]{0,40}\|>"  # <|im_start|>, <|endoftext|>, <|eot_id|> ...
    r"|</?s>|\[/?INST\]|<</?SYS>>"  # Llama 2 / Mistral
    r"|</?[A-Za-z_][\w-]{0,30}>"  # <history>, </item>, <system> ... (our delimiters and look-alikes)
    r"|^\s*#{2,}\s*(?:instruction|system|response|assistant|user)\b:?",
    re.IGNORECASE | re.MULTILINE,
)
_YEAR_SUFFIX = re.compile(r"\s*\(\s*\d{4}(?:\s*[-–]\s*\d{0,4})?\s*\)\s*$")
_ALTERNATIVE = re.compile(r"(?<=\S)\s*\([^()]*\)\s*$")  # "Postman, The (Postino, Il)": a trailing other-language title
_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)$")


def sanitize(text: object, max_chars: int = 300) -> str:
    """``text`` made safe to place inside a data block: cleaned, control markers removed, one line, cut.

    Args:
        text: Any value (``None`` and NaN give ``""``).
        max_chars: Longest result; longer text is cut at a word boundary and ends with "...".

    Returns:
        The cleaned single-line text.
    """
    out = clean_text(text)
    previous = None
    while previous != out:  # removing one marker may join the pieces of another ("<hist<x>ory>")
        previous, out = out, _CONTROL.sub(" ", out)
    out = " ".join(out.split())
    if len(out) > max_chars:
        cut = out[:max_chars].rsplit(" ", 1)[0] or out[:max_chars]
        out = cut.rstrip(" ,;:.") + "..."
    return out


def short_title(title: object) -> str:
    """A title as people say it: year and alternative titles dropped, a trailing article moved to the front.

    MovieLens writes "Usual Suspects, The (1995)" and "Boot, Das (Boat, The) (1981)"; the language model has read
    "The Usual Suspects" and "Das Boot". Shorter strings are also fewer tokens to score per candidate.
    """
    text = _YEAR_SUFFIX.sub("", sanitize(title, max_chars=200))
    while True:
        shorter = _ALTERNATIVE.sub("", text)
        if shorter == text or not shorter.strip():
            break
        text = shorter
    match = _ARTICLE.match(text)
    if match:
        text = f"{match['article']} {match['rest']}"
    return text
