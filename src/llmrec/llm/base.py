"""The LanguageModel protocol every backend implements (local transformers, OpenAI-compatible HTTP).

Ranking with a language model is done by likelihood, not by parsing free text: :meth:`LanguageModel.loglik`
scores many continuations of one prompt in one batched pass, with the shared prompt computed once. Free text
(:meth:`generate`, :meth:`stream`) is for phrasing explanations and chat answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

import numpy as np

__all__ = ["ItemTokenLM", "LanguageModel", "LogLik", "Message", "PrefixCachingLM", "Prompt", "as_messages"]


class Message(TypedDict):
    """One chat message (OpenAI shape)."""

    role: Literal["system", "user", "assistant"]
    content: str


Prompt = str | Sequence[Message]
"""A prompt: plain text (sent as one user message) or chat messages."""


def as_messages(prompt: Prompt) -> list[Message]:
    """Chat messages of a prompt (a string becomes one user message)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [Message(role=m["role"], content=m["content"]) for m in prompt]


@dataclass(frozen=True)
class LogLik:
    """Log-likelihoods of continuations of one prompt.

    Attributes:
        total: Sum of token log-probabilities per continuation (natural log), shape ``(n,)``.
        n_tokens: Number of tokens per continuation, shape ``(n,)``.
    """

    total: np.ndarray
    n_tokens: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Per-token mean log-probability (length-normalised, so long titles are not penalised)."""
        return self.total / np.maximum(self.n_tokens, 1)


@runtime_checkable
class LanguageModel(Protocol):
    """A causal language model llmrec can rank with and write with."""

    @property
    def model_id(self) -> str:
        """Stable identifier of the weights (and adapter), for caches and reports."""
        ...

    def loglik(self, prompt: Prompt, continuations: Sequence[str]) -> LogLik:
        """Log-likelihood of each continuation as the assistant's reply to ``prompt`` (one batched pass)."""
        ...

    def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> str:
        """The assistant's reply (greedy when ``temperature`` is 0)."""
        ...

    def stream(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """The reply as text pieces, as they are produced."""
        ...


@runtime_checkable
class PrefixCachingLM(Protocol):
    """A language model that can compute a prompt's beginning ahead of time and keep it for later calls.

    A reranker's prompt starts with what depends on the user only (instructions, their history) and ends with
    the candidates; computing the user's part once, when their history changes, leaves a request only the
    candidates to compute (see :meth:`llmrec.llm.rerank.LMReranker.warm`).
    """

    def prefill(self, prompt: Prompt, *, stop_at: str | None = None) -> int:
        """Compute and keep the cache of ``prompt`` as rendered, cut before ``stop_at``; returns tokens kept."""
        ...


@runtime_checkable
class ItemTokenLM(Protocol):
    """A language model that can read items as collaborative soft tokens (a local model with a CoLLM adapter).

    ``item_slot`` is the marker to write right after an item's title (``None`` when the model has no item
    tokens); :meth:`loglik_items` is :meth:`LanguageModel.loglik` with one item id per marker.
    """

    @property
    def item_slot(self) -> str | None:
        """The marker that becomes an item's soft token, or ``None``."""
        ...

    def loglik_items(
        self,
        prompt: Prompt,
        continuations: Sequence[str],
        *,
        prompt_items: Sequence[object],
        continuation_items: Sequence[Sequence[object]],
    ) -> LogLik:
        """Log-likelihood of each continuation, each marker replaced by its item's soft token."""
        ...
