"""Whether an explanation is worth reading: informative, and not a copy of the evidence it was given.

Grounding (:func:`~llmrec.llm.explain.grounding_rate`) says an explanation claims nothing false; it does not say
the explanation helps. A model can pass the check by restating its prompt ("Jaws (1975): The user liked: Scream
3 (2000)."). Two measures, per explanation, on its final text:

* **informative**: it names something specific (a history item the user liked, or a genre or tag the candidate
  shares) *and* says why, with a reason word ("because", "since", "shares", "also", "like"...).
* **copy**: a sentence restates an evidence line: it carries one of the evidence block's labels ("User liked:",
  "Recommended:", "Genres:", "- shares"), or its words are almost all those of one evidence line (token overlap
  at least 0.8 of the sentence and of the line).

:func:`explanation_quality` gives the rates over a list, with the share of model-phrased explanations kept
unrepaired, which is what decides between the model's phrasing and the template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from llmrec.llm.explain.check import Explanation
from llmrec.llm.explain.text import split_sentences
from llmrec.text.matching import _tokens

__all__ = ["ExplanationQuality", "copies_evidence", "explanation_quality", "is_informative"]

_REASON = frozenset(
    {
        "because", "since", "as", "shares", "share", "sharing", "shared", "also", "like", "likes", "liked",
        "enjoyed", "loved", "similar", "both", "same", "fan",
    }
)  # fmt: skip
_LABEL = re.compile(r"\b(?:user liked|recommended|genres|tags)\s*:|\s-\s+shares\b|\s-\s+similar\b", re.IGNORECASE)
_OVERLAP = 0.8


def is_informative(explanation: Explanation) -> bool:
    """Names a liked history item or a shared genre or tag, and gives a reason."""
    specific = any(c.kind in ("item", "genre", "tag") for c in explanation.citations)
    return specific and bool(_REASON.intersection(_tokens(explanation.text)))


def copies_evidence(explanation: Explanation) -> bool:
    """A sentence restates an evidence line (its labels, or nearly all of one line's words and nothing more)."""
    if _LABEL.search(explanation.text):
        return True
    evidence = explanation.evidence
    if evidence is None:
        return False
    lines = [set(_tokens(line)) for line in evidence.lines()]
    for sentence in split_sentences(explanation.text):
        words = set(_tokens(sentence))
        if not words:
            continue
        for line in lines:
            shared = len(words & line)
            if line and shared >= _OVERLAP * len(words) and shared >= _OVERLAP * len(line):
                return True
    return False


@dataclass(frozen=True)
class ExplanationQuality:
    """Rates over a list of explanations (``None`` where the list has none of the kind).

    Attributes:
        n: Explanations measured.
        informative_rate: Share that is informative (:func:`is_informative`).
        copy_rate: Share that copies an evidence line (:func:`copies_evidence`).
        lm_kept_rate: Of the explanations a model phrased, the share kept whole (source ``"lm"``, not repaired
            and not replaced by the template).
        lm_informative_copy_free_rate: Of those, the share kept whole, informative and copy-free: the bar the
            model's phrasing must pass to be worth its cost.
    """

    n: int
    informative_rate: float | None
    copy_rate: float | None
    lm_kept_rate: float | None
    lm_informative_copy_free_rate: float | None


def explanation_quality(explanations: Sequence[Explanation]) -> ExplanationQuality:
    """Informativeness, copying and the model's kept share over ``explanations``."""
    n = len(explanations)
    phrased = [e for e in explanations if e.raw_text is not None]
    good = [e for e in phrased if e.source == "lm" and is_informative(e) and not copies_evidence(e)]
    return ExplanationQuality(
        n=n,
        informative_rate=sum(map(is_informative, explanations)) / n if n else None,
        copy_rate=sum(map(copies_evidence, explanations)) / n if n else None,
        lm_kept_rate=sum(e.source == "lm" for e in phrased) / len(phrased) if phrased else None,
        lm_informative_copy_free_rate=len(good) / len(phrased) if phrased else None,
    )
