"""Rerank a retriever's candidates with a causal language model, by likelihood (never by parsing free text).

Three ways to ask the model, all through :meth:`LanguageModel.loglik`, so one batched pass per user scores every
candidate against a prompt whose key/value cache is computed once:

- ``loglik``: the prompt shows the user's history and asks for one more item; each candidate's title is scored
  as the reply (length-normalised). Titles the model likes for every user (short, famous ones) would win
  everywhere, so by default the score is *calibrated*: the title's log-likelihood under a history-free prompt is
  subtracted (pointwise mutual information with the history). That prior depends on the title only and is
  cached, so it costs nothing per request.
- ``yesno``: the TALLRec-style verbalizer. The reply format is ``"<title> - Yes"`` / ``"<title> - No"``; both
  share the title, so ``log P(Yes) - log P(No)`` given the title comes out of the same packed pass. When the
  language model wears a CoLLM adapter (it has an ``item_slot``, see :mod:`llmrec.llm.collm`), every history title
  and the candidate's title are followed by that item's collaborative soft token, so this method then needs the
  item ids (``history_ids``, ``candidate_ids``; the pipeline passes them).
- ``listwise``: the candidates are listed with letters and the reply is the letter of the best one. A small
  model strongly prefers the first letters, so the list is shown in several orders (as given, reversed, then
  cyclic shifts) and a candidate's score is its mean log-probability over the orders (position-bias control).
- ``letters``: the ``listwise`` prompt shown once, in the retriever's order, and every candidate scored in ONE
  forward pass by the next-token log-probability of its letter (no end-of-turn token, no second order). It is the
  format a LoRA adapter is tuned on (:mod:`llmrec.adapt.letters`, ``benchmarks/rerank_tune.py``): the tuned model
  has learnt where the retriever's order is right and where it is not, so one pass is enough, and one forward
  of ~350 tokens replaces the scoring of 20 titles (the latency target).

The prompt puts the user's part (instructions, history) before the candidates, so :meth:`LMReranker.warm` can
compute it ahead, when the user's history changes; a request then computes only the candidate list (with a model
that keeps prompt caches, :class:`~llmrec.llm.base.PrefixCachingLM`). With fp32 weights the scores do not change;
with int8 weights they do (``RerankConfig.warm`` explains why and how to evaluate that path).

Every method returns one score per given candidate, so a rerank is a permutation of the candidate set: an item
outside it can never come out. :func:`blend` mixes the language model's opinion with the retriever's scores.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import ConfigError
from llmrec.llm.base import ItemTokenLM, LanguageModel, Message, PrefixCachingLM
from llmrec.llm.prompts import DATA_NOTICE, data_block, sanitize

__all__ = ["Demonstration", "LMReranker", "RerankConfig", "blend", "letter_logprobs"]

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class RerankConfig(BaseModel):
    """How the language model is asked about the candidates.

    Attributes:
        method: ``loglik``, ``yesno``, ``listwise`` or ``letters`` (see the module docstring), or ``encoder``: the
            text encoder's similarity to the user's recent items (:class:`~llmrec.llm.encoder_rerank.EncoderReranker`,
            which the pipeline builds instead of an :class:`LMReranker`).
        history: How many of the user's most recent (liked) items the prompt shows.
        calibrate: For ``loglik``: subtract each title's history-free log-likelihood.
        permutations: For ``listwise``: how many orders of the list are scored and averaged.
        weight: Share of the language model in :func:`blend` (0 = the retriever's order, 1 = the model's).
        item_noun: What the items are called in the prompt ("movie", "book", ...).
        prior_cache_size: How many titles' history-free log-likelihoods to keep.
        half_life: For ``encoder`` (:mod:`llmrec.llm.encoder_rerank`, the text encoder instead of the causal model):
            recency decay of the user's history vector, in interactions (1 = the last item weighs half).
        warm: Compute the user's part of the prompt as a pass of its own before the candidates (what
            :meth:`LMReranker.warm` does ahead of a request), so a request scores the same whether or not the user
            was warmed. With fp32 weights the scores are the same either way; with int8 weights they are not:
            dynamic quantisation scales the activations of each pass together, so where a pass is cut changes the
            scores (measured: up to ~1-3 nats per letter), and a warmed serving path must be evaluated as such.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["loglik", "yesno", "listwise", "letters", "encoder"] = "loglik"
    history: int = Field(default=10, ge=1, le=100)
    calibrate: bool = True
    permutations: int = Field(default=2, ge=1, le=26)
    weight: float = Field(default=0.3, ge=0.0, le=1.0)
    item_noun: str = Field(default="movie", min_length=1, max_length=30)
    prior_cache_size: int = Field(default=50_000, ge=0)
    half_life: float = Field(default=1.0, gt=0.0)
    warm: bool = False


@dataclass(frozen=True)
class Demonstration:
    """One in-context example: another (training) user's history and the item that came next."""

    history: tuple[str, ...]
    answer: str


class LMReranker:
    """Scores candidate items for one user with a language model (see the module docstring).

    Args:
        lm: Any :class:`~llmrec.llm.base.LanguageModel` that implements ``loglik``.
        config: How to prompt and score; defaults to calibrated log-likelihood.

    Example:
        >>> reranker = LMReranker(LocalLM())  # doctest: +SKIP
        >>> reranker.score(["Heat", "Ronin"], ["The Matrix", "Toy Story"])  # doctest: +SKIP
        array([ 0.41, -0.12])
    """

    def __init__(self, lm: LanguageModel, config: RerankConfig | None = None) -> None:
        self.config = config or RerankConfig()
        if self.config.method == "encoder":
            raise ConfigError(
                "the encoder rerank does not ask a causal language model",
                field="method",
                fix="use llmrec.llm.encoder_rerank.EncoderReranker (the pipeline builds it for method='encoder')",
            )
        self.lm = lm
        self._priors: OrderedDict[str, float] = OrderedDict()

    # -- prompts ------------------------------------------------------------------------------------------------

    def _system(self) -> Message:
        noun = self.config.item_noun
        return {"role": "system", "content": f"You recommend {noun}s. {DATA_NOTICE}"}

    def _ask(self, history: Sequence[str], slot: str = "") -> str:
        noun = self.config.item_noun
        shown = [f"- {sanitize(t, 120)}{slot}" for t in list(history)[-self.config.history :]] or ["- (nothing yet)"]
        intro = f"The user enjoyed these {noun}s, most recent last:"
        return f"{intro}\n{data_block('history', shown)}\n"

    def prompt(
        self, history: Sequence[str], demonstrations: Sequence[Demonstration] = (), *, slot: str = ""
    ) -> list[Message]:
        """The chat prompt for ``loglik``/``yesno`` (demonstrations become earlier question/answer turns).

        ``slot`` (a CoLLM model's ``item_slot``) is put right after each title of ``history`` that is shown (the
        last ``config.history``); demonstrations stay text only.
        """
        noun = self.config.item_noun
        if self.config.method == "yesno":
            question = f"Name a {noun} and say whether the user will like it, as 'Title - Yes' or 'Title - No'."
        else:
            question = f"Name one more {noun} the user will enjoy. Reply with the title only."
        messages: list[Message] = [self._system()]
        for demo in demonstrations:
            messages.append({"role": "user", "content": self._ask(demo.history) + question})
            answer = sanitize(demo.answer, 120) + (" - Yes" if self.config.method == "yesno" else "")
            messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": self._ask(history, slot) + question})
        return messages

    def listwise_prompt(self, history: Sequence[str], candidates: Sequence[str]) -> list[Message]:
        """The chat prompt for ``listwise``: candidates labelled A, B, ... in the given order."""
        noun = self.config.item_noun
        listed = [f"{LETTERS[i]}. {sanitize(c, 120)}" for i, c in enumerate(candidates)]
        question = (
            f"Which {noun} from the candidates will the user enjoy most?\n{data_block('candidates', listed)}\n"
            "Reply with its letter only."
        )
        return [self._system(), {"role": "user", "content": self._ask(history) + question}]

    # -- caching ------------------------------------------------------------------------------------------------

    def warm(self, history: Sequence[str]) -> int:
        """Compute the user's part of the prompt now, so their next :meth:`score` computes only the candidates.

        For ``letters`` and ``listwise`` that is everything before the candidate list (instructions and the
        history); for ``loglik`` and ``yesno`` the whole prompt (the candidates are its replies). Call it when a
        user's history changes, ahead of their requests: with fp32 weights the scores are the same, only sooner (with
        int8 they are not, see ``RerankConfig.warm``). A language model
        that cannot keep a prompt's cache (a remote one) makes this a no-op.

        Returns:
            How many prompt tokens are now cached (0 when the model keeps none).
        """
        if not isinstance(self.lm, PrefixCachingLM):
            return 0
        if self.config.method in ("letters", "listwise"):
            return self.lm.prefill(self.listwise_prompt(history, ["-"]), stop_at="<candidates>")
        if self.config.method == "yesno" and isinstance(self.lm, ItemTokenLM) and self.lm.item_slot:
            return 0  # the history carries soft tokens, which only loglik_items computes
        return self.lm.prefill(self.prompt(history))

    # -- scoring ------------------------------------------------------------------------------------------------

    def score(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        demonstrations: Sequence[Demonstration] = (),
        *,
        history_ids: Sequence[object] | None = None,
        candidate_ids: Sequence[object] | None = None,
    ) -> np.ndarray:
        """The language model's score of each candidate title for a user with ``history`` (higher = better).

        Args:
            history: Titles of the user's items, oldest first (the last ``config.history`` are shown).
            candidates: Candidate titles (distinct), in the retriever's order.
            demonstrations: In-context examples (``loglik`` and ``yesno`` only).
            history_ids: External item ids of ``history`` (same order); used by ``yesno`` when the language model
                wears a CoLLM adapter, ignored otherwise.
            candidate_ids: External item ids of ``candidates``; as ``history_ids``.

        Returns:
            ``(len(candidates),)`` float64 scores.

        Raises:
            ConfigError: ``listwise`` with more than 26 candidates, or with demonstrations; ``yesno`` with a CoLLM
                model but without item ids, or ids that do not match the titles in number.
            UnknownIdError: An item id has no collaborative vector in the CoLLM adapter.
        """
        if not len(candidates):
            return np.zeros(0)
        if self.config.warm:
            self.warm(history)  # a no-op lookup when the user was warmed ahead
        method = self.config.method
        if method in ("listwise", "letters"):
            if demonstrations:
                raise ConfigError(f"{method} reranking takes no demonstrations; use method='loglik' for few-shot")
            if method == "letters":
                return self._letters(history, candidates)
            return self._listwise(history, candidates)
        titles = [sanitize(c, 120) for c in candidates]
        if method == "yesno" and isinstance(self.lm, ItemTokenLM) and self.lm.item_slot:
            return self._yesno_items(self.lm, history, titles, demonstrations, history_ids, candidate_ids)
        prompt = self.prompt(history, demonstrations)
        if method == "yesno":
            ll = self.lm.loglik(prompt, [f"{t} - Yes" for t in titles] + [f"{t} - No" for t in titles])
            n = len(titles)
            return np.asarray(ll.total[:n] - ll.total[n:], dtype=np.float64)
        scores = np.asarray(self.lm.loglik(prompt, titles).mean, dtype=np.float64)
        if self.config.calibrate:
            scores = scores - self.priors(titles)
        return scores

    def _yesno_items(
        self,
        lm: ItemTokenLM,
        history: Sequence[str],
        titles: list[str],
        demonstrations: Sequence[Demonstration],
        history_ids: Sequence[object] | None,
        candidate_ids: Sequence[object] | None,
    ) -> np.ndarray:
        """``yesno`` with each shown title followed by its item's soft token (a CoLLM language model)."""
        slot = lm.item_slot or ""
        if history_ids is None or candidate_ids is None:
            raise ConfigError(
                f"{self.lm.model_id} wears a CoLLM adapter: its yes/no scores need the items' ids. Fix: pass "
                "history_ids and candidate_ids to LMReranker.score (the pipeline does), or load the model without it"
            )
        if len(history_ids) != len(history) or len(candidate_ids) != len(titles):
            raise ConfigError(
                f"history_ids/candidate_ids must pair up with the titles: {len(history_ids)} ids for "
                f"{len(history)} history titles, {len(candidate_ids)} for {len(titles)} candidates"
            )
        shown = list(history_ids)[-self.config.history :] if history else []
        prompt = self.prompt(history, demonstrations, slot=slot)
        replies = [f"{t}{slot} - Yes" for t in titles] + [f"{t}{slot} - No" for t in titles]
        items = [[c] for c in candidate_ids] * 2
        ll = lm.loglik_items(prompt, replies, prompt_items=shown, continuation_items=items)
        n = len(titles)
        return np.asarray(ll.total[:n] - ll.total[n:], dtype=np.float64)

    def priors(self, titles: Sequence[str]) -> np.ndarray:
        """Mean log-likelihood of each title under the history-free prompt (cached per title)."""
        missing = list(dict.fromkeys(t for t in titles if t not in self._priors))
        if missing:
            ll = self.lm.loglik(self.prompt([]), missing)
            for title, value in zip(missing, ll.mean, strict=True):
                self._priors[title] = float(value)
            while len(self._priors) > self.config.prior_cache_size:
                self._priors.popitem(last=False)
        return np.array([self._priors.get(t, 0.0) for t in titles], dtype=np.float64)

    def orders(self, n: int) -> list[np.ndarray]:
        """The ``config.permutations`` list orders ``listwise`` shows: as given, reversed, then spread-out shifts."""
        p = self.config.permutations
        base = np.arange(n)
        unique: list[np.ndarray] = []
        for order in [base, base[::-1], *(np.roll(base, -(j * n // p)) for j in range(1, p))]:
            if not any(np.array_equal(order, u) for u in unique):
                unique.append(order)
        return unique[:p]

    def _letters(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """One pass: each candidate's letter's next-token log-probability after the listwise prompt."""
        n = len(candidates)
        if n > len(LETTERS):  # before the prompt, which labels the candidates with the letters
            raise ConfigError(f"letters reranking labels candidates A-Z: give at most 26, got {n}")
        return letter_logprobs(self.lm, self.listwise_prompt(history, candidates), n)

    def _listwise(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        n = len(candidates)
        if n > len(LETTERS):
            raise ConfigError(f"listwise reranking labels candidates A-Z: give at most 26, got {n}")
        total = np.zeros(n)
        orders = self.orders(n)
        for order in orders:
            shown = [candidates[i] for i in order]
            ll = self.lm.loglik(self.listwise_prompt(history, shown), list(LETTERS[:n]))
            total[order] += ll.total  # position p holds candidate order[p]
        return total / len(orders)


def letter_logprobs(lm: LanguageModel, prompt: list[Message], n: int) -> np.ndarray:
    """Next-token log-probability of each of the first ``n`` letters after ``prompt`` (one forward pass).

    The letter alone is scored (no end-of-turn token) when the model allows it (``LocalLM``), so the ``n`` values
    are outcomes of one next-token distribution; other models score the letter as a whole reply.

    Raises:
        ConfigError: ``n`` is above 26 (the letters A-Z label the candidates).
    """
    if n > len(LETTERS):
        raise ConfigError(f"letters reranking labels candidates A-Z: give at most 26, got {n}")
    letters = list(LETTERS[:n])
    if "end_of_turn" in inspect.signature(lm.loglik).parameters:
        ll = lm.loglik(prompt, letters, end_of_turn=False)  # type: ignore[call-arg]
    else:
        ll = lm.loglik(prompt, letters)
    return np.asarray(ll.total, dtype=np.float64)


def _standardise(values: np.ndarray) -> np.ndarray:
    """Finite values shifted to mean 0 and scaled to standard deviation 1; the rest ``-inf``."""
    finite = np.isfinite(values)
    out = np.full(values.shape, -np.inf)
    if finite.any():
        v = values[finite]
        spread = v.std()
        out[finite] = (v - v.mean()) / (spread if spread > 0 else 1.0)
    return out


def blend(retriever: np.ndarray, lm: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * z(retriever) + weight * z(lm)``: both standardised within the candidate list.

    Standardising puts a dot product and a log-probability on one scale; ``weight`` 0 keeps the retriever's order
    and 1 is the language model's alone. Non-finite retriever scores stay ``-inf`` (never recommended).
    """
    if retriever.shape != lm.shape:
        raise ConfigError(f"score shapes differ: retriever {retriever.shape}, language model {lm.shape}")
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"weight must be within [0, 1], got {weight}")
    base = _standardise(retriever)
    out = np.full(base.shape, -np.inf)
    finite = np.isfinite(base)
    out[finite] = (1 - weight) * base[finite] + weight * _standardise(lm)[finite]
    return out
