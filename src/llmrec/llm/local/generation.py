"""Text generation of the in-process language model: greedy and sampled streams, completions, beam search.

A mixin of :class:`~llmrec.llm.local.LocalLM`: it decodes token by token on the prompt cache that scoring
computes (holding the model lock per forward step, so concurrent streams interleave), holds back text that could
still become a stop string, and runs transformers' constrained beam search for generative retrieval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.errors import ConfigError
from llmrec.llm.base import Prompt
from llmrec.llm.local.config import BeamHypothesis
from llmrec.llm.local.loading import _torch_threads

if TYPE_CHECKING:
    from llmrec.llm.local.config import LocalLMConfig
    from llmrec.llm.local.loading import _Loaded
    from llmrec.llm.local.model import _Prefix


class GenerationMixin:
    """Generation methods of :class:`~llmrec.llm.local.LocalLM` (see the module docstring)."""

    config: LocalLMConfig

    if TYPE_CHECKING:  # declarations of what LocalLM provides

        @property
        def model_id(self) -> str: ...  # noqa: D102
        def _state(self) -> _Loaded: ...
        def render(self, prompt: Prompt) -> str: ...  # noqa: D102
        def encode(self, text: str) -> list[int]: ...  # noqa: D102
        def _embed(self, state: _Loaded, ids: Any) -> Any: ...
        def _offset(self, state: _Loaded) -> int: ...
        def _new_cache(
            self, state: _Loaded, kv: list[tuple[Any, Any]] | None, length: int | None = None, batch: int = 1
        ) -> Any: ...
        def _prefill(self, state: _Loaded, ids: list[int], *, all_logprobs: bool = False) -> _Prefix: ...

    def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> str:
        """The assistant's reply: greedy when ``temperature`` is 0, sampled (reproducibly with ``seed``) otherwise.

        Generation ends at the end-of-turn/EOS token, after ``max_new_tokens``, or at the first ``stop`` string
        (which is not included in the reply). Equal to joining :meth:`stream`'s pieces.
        """
        pieces = self.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop, seed=seed)
        return "".join(pieces)

    def stream(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """The reply as text pieces, as they are produced (see :meth:`generate`)."""
        return self._stream_text(self.render(prompt), max_new_tokens, temperature, stop, seed)

    def beam_search(
        self,
        prompt: Prompt,
        allowed: Callable[[list[int]], Sequence[int]],
        *,
        num_beams: int = 5,
        num_return: int | None = None,
        max_new_tokens: int = 32,
    ) -> list[BeamHypothesis]:
        """Constrained beam search for the assistant's reply to ``prompt`` (transformers' own ``generate``).

        At every step ``allowed(tokens_so_far)`` names the tokens a beam may take next (it gets the generated tokens
        only, never the prompt), which is how a caller restricts replies to a closed set such as a catalogue's
        item identifiers. Scores are plain sums of token log-probabilities (``length_penalty=0``), taken before the
        constraint is applied, so they equal the reply's :meth:`loglik`. A search ends at the end-of-turn token.

        Args:
            prompt: Text or chat messages (chat-templated, assistant turn opened).
            allowed: Tokens allowed after a given generated prefix; must never be empty (return the end-of-turn
                token for a prefix that cannot go on).
            num_beams: Beams kept per step (at least 2 are run: transformers treats 1 as greedy search).
            num_return: Hypotheses returned (``None`` = ``num_beams``); at most ``num_beams``.
            max_new_tokens: Longest reply, end-of-turn token included.

        Returns:
            Finished hypotheses, best first (placeholders for beams that never finished are left out).
        """
        import torch
        from transformers import GenerationConfig

        if num_beams < 1 or max_new_tokens < 1:
            raise ConfigError(f"num_beams and max_new_tokens must be >= 1, got {num_beams} and {max_new_tokens}")
        num_return = num_beams if num_return is None else num_return
        if not 1 <= num_return <= num_beams:
            raise ConfigError(f"num_return must be between 1 and num_beams={num_beams}, got {num_return}")
        state = self._state()
        end = state.end_of_turn_id
        if end is None:
            raise ConfigError(f"{self.model_id} has no end-of-turn or EOS token: beam search cannot end a reply")
        beams = max(2, num_beams)
        ids = torch.tensor([self.encode(self.render(prompt))], dtype=torch.long)
        config = GenerationConfig(
            num_beams=beams,
            num_return_sequences=num_return,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=False,
            eos_token_id=end,
            pad_token_id=end,
            output_scores=True,
            return_dict_in_generate=True,
        )
        if state.soft_prompt is None:
            inputs: dict[str, Any] = {"input_ids": ids}
            start = ids.shape[1]  # generate returns prompt + reply
        else:  # a soft prompt goes in front as embeddings; generate then returns the reply only
            inputs = {"inputs_embeds": self._embed(state, ids)}
            start = 0
        inputs["attention_mask"] = torch.ones(1, ids.shape[1] + self._offset(state), dtype=torch.long)

        def constrain(batch_id: int, sequence: Any) -> list[int]:
            return [int(t) for t in allowed([int(t) for t in sequence[start:].tolist()])]

        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            out = state.model.generate(**inputs, generation_config=config, prefix_allowed_tokens_fn=constrain)
        hypotheses = []
        for row, score in zip(out.sequences[:, start:].tolist(), out.sequences_scores.tolist(), strict=True):
            if not np.isfinite(score) or score <= -1e8:  # -1e9 marks a beam slot that never finished
                continue
            ended = end in row
            hypotheses.append(BeamHypothesis(row[: row.index(end)] if ended else row, float(score), ended))
        return hypotheses

    def complete(
        self,
        text: str,
        *,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> str:
        """Continue raw ``text`` (no chat template): what an OpenAI ``/v1/completions`` call does."""
        return "".join(self._stream_text(text, max_new_tokens, temperature, stop, seed))

    def stream_complete(
        self,
        text: str,
        *,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """The continuation of raw ``text`` as pieces, as they are produced (a streamed :meth:`complete`)."""
        return self._stream_text(text, max_new_tokens, temperature, stop, seed)

    def _stream_text(
        self, text: str, max_new_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
    ) -> Iterator[str]:
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        stops = [s for s in (stop or []) if s]
        ids = self.encode(text)
        if max_new_tokens <= 0 or not ids:
            return iter(())
        return self._decode_loop(ids, max_new_tokens, temperature, stops, seed)

    def _token_loop(self, ids: list[int], max_new_tokens: int, temperature: float, seed: int | None) -> Iterator[int]:
        """Token ids of the continuation of ``ids`` (the model lock is held per forward step, not across yields)."""
        import torch

        state = self._state()
        seed = self.config.seed if seed is None else seed
        generator = torch.Generator().manual_seed(seed) if seed is not None and temperature > 0 else None
        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            prefix = self._prefill(state, ids)
            cache = self._new_cache(state, prefix.kv)
            logprobs = prefix.last_logprobs
        for step in range(max_new_tokens):
            if temperature > 0:
                with torch.inference_mode():
                    probs = torch.softmax(logprobs / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(logprobs.argmax())
            if token in state.eos_ids:
                return
            yield token
            if step == max_new_tokens - 1:
                return
            with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
                out = state.model(
                    input_ids=torch.tensor([[token]], dtype=torch.long), past_key_values=cache, use_cache=True
                )
                logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    def _decode_loop(
        self, ids: list[int], max_new_tokens: int, temperature: float, stops: list[str], seed: int | None
    ) -> Iterator[str]:
        """Text pieces of the continuation, holding back what could still turn into a stop string."""
        tok = self._state().tokenizer
        generated: list[int] = []
        emitted = 0
        for token in self._token_loop(ids, max_new_tokens, temperature, seed):
            generated.append(token)
            text = tok.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            cut = _first_stop(text, stops, emitted)
            if cut is not None:
                if cut > emitted:
                    yield text[emitted:cut]
                return
            safe = len(text)
            while safe > emitted and text[safe - 1] == "\ufffd":  # an unfinished multi-byte character
                safe -= 1
            safe -= _held_back(text[:safe], stops)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        text = tok.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if len(text) > emitted:
            yield text[emitted:]


def _first_stop(text: str, stops: list[str], emitted: int) -> int | None:
    """Index of the earliest stop string in ``text`` (searching only where a new one can be), else ``None``."""
    found: int | None = None
    for s in stops:
        i = text.find(s, max(0, emitted - len(s) + 1))
        if i >= 0 and (found is None or i < found):
            found = i
    return found


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop string."""
    held = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:n]):
                held = n
                break
    return held
