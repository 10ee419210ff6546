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

Submodules: ``config`` (:class:`ExplainConfig`), ``text`` (tokens, sentences, patterns), ``catalogue``
(:class:`Catalogue`, the mention index), ``evidence`` (:class:`History`, :func:`build_evidence`), ``check`` (the
check and the result types), ``generate`` (template, prompt, repair, streaming), ``explainer``
(:class:`Explainer`, grounding rates).
"""

from __future__ import annotations

from llmrec.catalogue import Catalogue
from llmrec.llm.explain.check import CheckResult, Citation, Explanation, Problem, check
from llmrec.llm.explain.config import ExplainConfig
from llmrec.llm.explain.evidence import Evidence, History, HistoryLink, build_evidence
from llmrec.llm.explain.explainer import Explainer, grounding_rate, raw_grounding_rate
from llmrec.llm.explain.generate import (
    ExplanationStream,
    explanation_prompt,
    repair,
    stream_explanation,
    template_explanation,
)
from llmrec.llm.explain.quality import ExplanationQuality, copies_evidence, explanation_quality, is_informative
from llmrec.llm.explain.text import EXPLANATION_WORDS, split_sentences
from llmrec.text.matching import looks_like_instruction

__all__ = [
    "EXPLANATION_WORDS",
    "Catalogue",
    "CheckResult",
    "Citation",
    "Evidence",
    "ExplainConfig",
    "Explainer",
    "Explanation",
    "ExplanationQuality",
    "ExplanationStream",
    "History",
    "HistoryLink",
    "Problem",
    "build_evidence",
    "check",
    "copies_evidence",
    "explanation_prompt",
    "explanation_quality",
    "grounding_rate",
    "is_informative",
    "looks_like_instruction",
    "raw_grounding_rate",
    "repair",
    "split_sentences",
    "stream_explanation",
    "template_explanation",
]
