"""Writing grounded explanations: the template, the model prompt, repair and sentence-by-sentence streaming.

:func:`template_explanation` says the evidence in one sentence (the fast path and the fallback);
:func:`explanation_prompt` asks a language model to phrase it; :func:`repair` and :func:`stream_explanation` run
the model's sentences through the same filter, which keeps only those that pass :func:`check`, so a finished text
and a stream end in the same :class:`Explanation`.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmrec.catalogue import Catalogue
from llmrec.llm.base import LanguageModel, Message
from llmrec.llm.explain.check import Citation, Explanation, Problem, Source, check
from llmrec.llm.explain.config import ExplainConfig, settings_of
from llmrec.llm.explain.evidence import Evidence
from llmrec.llm.explain.text import _close_unfinished, _complete, _join_titles, split_sentences
from llmrec.llm.prompts import DATA_NOTICE, data_block, sanitize


def template_explanation(evidence: Evidence, *, item_noun: str = "title") -> Explanation:
    """An explanation built from evidence alone (grounded by construction), short and readable.

    ``"Because you liked Heat and Ronin: also Action and Thriller, with heist, 1996."`` — the linked titles, the
    genres and tags they share with the candidate, and the candidate's year. Without links: the candidate's
    own genres and tags.
    """
    citations: list[Citation] = []
    year = f", {evidence.year}" if evidence.year else ""
    if evidence.links:
        titles = [link.title for link in evidence.links]
        citations += [Citation("item", link.title, link.item_id) for link in evidence.links]
        genres = list(dict.fromkeys(g for link in evidence.links for g in link.shared_genres))[:3]
        tags = list(dict.fromkeys(t for link in evidence.links for t in link.shared_tags))[:2]
        citations += [Citation("genre", g) for g in genres] + [Citation("tag", t) for t in tags]
        if genres:
            what = "also " + _join_titles(genres) + (f", with {_join_titles(tags)}" if tags else "")
        elif tags:
            what = "also " + _join_titles(tags)
        else:
            what = f"a similar {item_noun}"
        text = f"Because you liked {_join_titles(titles)}: {what}{year}."
    elif evidence.genres or evidence.tags:
        genres, tags = list(evidence.genres), list(evidence.tags[:2])
        citations += [Citation("genre", g) for g in genres] + [Citation("tag", t) for t in tags]
        what = _join_titles(genres) + (f", with {_join_titles(tags)}" if genres and tags else _join_titles(tags))
        text = f"Recommended for its {'genres' if genres else 'tags'}: {what}{year}."
    else:
        text = f"Recommended {item_noun}{year}."
    if evidence.year:
        citations.append(Citation("year", str(evidence.year)))
    return Explanation(
        item_id=evidence.item_id,
        text=text,
        citations=tuple(citations),
        grounded=True,
        source="template",
        evidence=evidence,
    )


def explanation_prompt(evidence: Evidence, *, item_noun: str = "title") -> list[Message]:
    """The chat prompt asking a model to phrase ``evidence`` (data stays inside an ``<evidence>`` block).

    The system message carries :data:`~llmrec.llm.prompts.DATA_NOTICE`; the instruction sits outside the data
    block and names no item, so nothing from the catalogue is ever read as an instruction.
    """
    noun = sanitize(item_noun, max_chars=30) or "title"
    system = (
        f"You explain {noun} recommendations in one or two short sentences, using only the facts in the evidence. "
        f"Name the {noun}s the user liked. Do not mention any other {noun}, genre or year. " + DATA_NOTICE
    )
    user = (
        data_block("evidence", evidence.lines())
        + f"\n\nIn one or two sentences, tell the user why they may like the recommended {noun}, "
        f"naming the {noun}s they liked."
    )
    return [Message(role="system", content=system), Message(role="user", content=user)]


def repair(text: str, evidence: Evidence, catalogue: Catalogue, *, config: ExplainConfig | None = None) -> Explanation:
    """The explanation made from model ``text``: failing sentences dropped, the template when none is left.

    The same sentence filter as :func:`stream_explanation`, applied to a finished text: sentences are checked in
    order, at most ``max_sentences`` are kept, an unfinished last sentence is dropped (or, when it is the only
    one, closed with a full stop), and when nothing grounded remains the template is used.

    Args:
        text: The model's text.
        evidence: What it may rest on.
        catalogue: The catalogue.
        config: Settings; the catalogue's when ``None``.

    Returns:
        An :class:`Explanation` with source ``"lm"`` (kept whole), ``"repaired"`` or ``"template"``.
    """
    process = _SentenceFilter(evidence, catalogue, config or settings_of(catalogue), raw=text)
    sentences = split_sentences(text, catalogue)
    for i, sentence in enumerate(sentences):
        process.feed(sentence, final=i == len(sentences) - 1)
        if process.full:
            break
    process.finish()
    assert process.result is not None  # finish() always settles one
    return process.result


class _SentenceFilter:
    """Checks model sentences one at a time and releases the ones that pass (shared by repair and streaming)."""

    def __init__(self, evidence: Evidence, catalogue: Catalogue, config: ExplainConfig, raw: str = "") -> None:
        self.evidence, self.catalogue, self.config = evidence, catalogue, config
        self.raw = raw
        self.kept: list[str] = []
        self.citations: dict[Citation, None] = {}
        self.problems: list[Problem] = []
        self.repairs: list[str] = []
        self.consumed = 0
        self.result: Explanation | None = None

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.config.max_sentences

    def feed(self, sentence: str, *, final: bool) -> list[str]:
        """Check one sentence; return the text to release (with a leading space after the first) or nothing."""
        self.consumed += 1
        sentence = " ".join(sentence.split())
        if not sentence or self.full:
            return []
        if final and not _complete(sentence):
            if self.kept:
                self.repairs.append(f"dropped unfinished sentence {self.consumed}: {sentence!r}")
                return []
            sentence = _close_unfinished(sentence)
            self.repairs.append(f"closed unfinished sentence {self.consumed}")
        if not _complete(sentence):
            sentence += "."  # a line of its own ("User liked: Heat - shares Action") becomes a sentence
        result = check(sentence, self.evidence, self.catalogue, config=self.config)
        if not result.ok:
            self.problems.extend(result.problems)
            values = ", ".join(f"{p.kind} {p.value!r}" for p in result.problems)
            self.repairs.append(f"dropped sentence {self.consumed} (not in evidence: {values})")
            return []
        self.citations.update(dict.fromkeys(result.citations))
        piece = sentence if not self.kept else " " + sentence
        self.kept.append(sentence)
        return [piece]

    def finish(self) -> list[str]:
        """Settle the explanation; return the text still to release (the template, when it is needed)."""
        text = " ".join(self.kept)
        cites = tuple(self.citations)
        release: list[str] = []
        if self.kept:
            source: Source = "repaired" if self.problems else "lm"
        else:
            template = template_explanation(self.evidence, item_noun=self.config.item_noun)
            why = "no sentence of the model passed the check" if self.raw.strip() else "the model wrote nothing"
            self.repairs.append(f"{why}: fell back to the template")
            text, cites, release, source = template.text, template.citations, [template.text], "template"
        self.result = Explanation(
            item_id=self.evidence.item_id,
            text=text,
            citations=cites,
            grounded=True,
            source=source,
            problems=tuple(self.problems),
            repairs=tuple(self.repairs),
            raw_text=self.raw,
            evidence=self.evidence,
        )
        return release


class ExplanationStream:
    """Text pieces of an explanation, released sentence by sentence after each passed the check.

    Iterate it for the pieces; afterwards :attr:`explanation` holds the final :class:`Explanation`, whose
    ``text`` equals the joined pieces.
    """

    def __init__(self, pieces: Iterator[str], holder: list[Explanation]) -> None:
        self._pieces = pieces
        self._holder = holder

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    @property
    def explanation(self) -> Explanation:
        """The final explanation (the rest of the stream is consumed first when it has not finished)."""
        if not self._holder:
            for _ in self._pieces:
                pass
        return self._holder[0]


_STOP = ["\n\n", "<evidence>", "</evidence>", "<|"]


def stream_explanation(
    lm: LanguageModel | None,
    evidence: Evidence,
    catalogue: Catalogue,
    *,
    config: ExplainConfig | None = None,
) -> ExplanationStream:
    """Stream an explanation of ``evidence``: the model's sentences, each released only once it passed the check.

    A sentence is released when the model has started the next one (or finished), and only if it passes
    :func:`check`; a failing sentence is withheld. If none passes, the template text is released instead.
    Generation stops as soon as ``max_sentences`` sentences were released.

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel`; ``None`` streams the template.
        evidence: What the explanation may rest on.
        catalogue: The catalogue (for the check).
        config: Settings; the catalogue's when ``None``.

    Returns:
        An :class:`ExplanationStream` (iterate it, then read ``.explanation``).
    """
    config = config or settings_of(catalogue)
    holder: list[Explanation] = []

    def pieces() -> Iterator[str]:
        if lm is None:
            template = template_explanation(evidence, item_noun=config.item_noun)
            holder.append(template)
            yield template.text
            return
        process = _SentenceFilter(evidence, catalogue, config)
        source = lm.stream(
            explanation_prompt(evidence, item_noun=config.item_noun),
            max_new_tokens=config.max_new_tokens,
            temperature=0.0,
            stop=_STOP,
        )
        buffer = ""
        try:
            for piece in source:
                buffer += piece
                finished = split_sentences(buffer, catalogue)[:-1]  # the last one may still grow
                for sentence in finished[process.consumed :]:
                    yield from process.feed(sentence, final=False)
                if process.full:
                    break
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        rest = split_sentences(buffer, catalogue)[process.consumed :]
        for i, sentence in enumerate(rest):
            if process.full:
                break
            yield from process.feed(sentence, final=i == len(rest) - 1)
        process.raw = buffer
        released = process.finish()
        assert process.result is not None
        holder.append(process.result)
        yield from released

    return ExplanationStream(pieces(), holder)
