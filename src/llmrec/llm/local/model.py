"""The in-process language model backend: :class:`LocalLM` (identity, prompts, scoring; generation is a mixin).

Ranking is the main job, so :meth:`LocalLM.loglik` is built for it: the prompt's key/value cache is computed once
and all continuations are scored against it in one forward pass (by default "packed": every candidate's tokens
side by side in one row, each attending to the prompt and to its own earlier tokens only, so no padding and no
copy of the prompt cache per candidate). Recent prompts' caches are kept (``prompt_cache_size``) so a prompt that
shares a beginning with an earlier one (same system prompt and instructions) only computes its new tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmrec.errors import ConfigError
from llmrec.llm.base import LogLik, Prompt, as_messages
from llmrec.llm.collm import ITEM_SLOT, encode_with_slots
from llmrec.llm.local.config import LocalLMConfig, TextScores
from llmrec.llm.local.generation import GenerationMixin
from llmrec.llm.local.loading import (
    _common_prefix,
    _load,
    _Loaded,
    _PromptEntry,
    _resolve_source,
    _source_name,
    _torch_threads,
)

logger = logging.getLogger("llmrec.llm.local")


@dataclass
class _Prefix:
    """A computed prompt: its cache tensors, the log-probs after its last token, its length in cache positions."""

    kv: list[tuple[Any, Any]]
    last_logprobs: Any  # (vocab,) float32
    length: int
    token_logprobs: Any | None = None  # (len-1,) float32, log-probs of tokens 1.. given the ones before
    top_ids: Any | None = None
    top_logprobs: Any | None = None


class LocalLM(GenerationMixin):
    """A causal LM running in this process (see the module docstring for loading and the scoring design).

    Args:
        config: Weights and runtime options; ``None`` = the packaged SmolLM2-135M-Instruct.

    Safe to share between threads (a server's workers): each forward pass holds the model's lock, so concurrent
    streams interleave token by token.

    Example:
        >>> lm = LocalLM()  # doctest: +SKIP
        >>> lm.loglik("Recommend a film.", ["Alien (1979)", "Heat (1995)"]).mean  # doctest: +SKIP
    """

    def __init__(self, config: LocalLMConfig | None = None) -> None:
        self.config = config or LocalLMConfig()

    # -- identity and loading ---------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """Name of the weights (GGUF file stem or folder name), ``+adapter`` and ``@dtype`` when not fp32."""
        folder, gguf = _resolve_source(self.config)
        name = _source_name(folder, gguf)
        if self.config.adapter:
            name += f"+{Path(self.config.adapter).name}"
        if self.config.dtype != "float32":
            name += f"@{self.config.dtype}"
        if self.config.quantize != "none":
            name += f"@{self.config.quantize}"
        return name

    def load(self) -> LocalLM:
        """Load the weights now (otherwise the first call does); returns ``self``."""
        self._state()
        return self

    @property
    def load_seconds(self) -> float:
        """Seconds the (first, process-wide) load of these weights took."""
        return self._state().load_s

    @property
    def load_source(self) -> str:
        """Where the weights came from: ``gguf`` (converted on this load), ``cache`` (fp32 copy), ``checkpoint``."""
        return self._state().source

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer (with the chat template)."""
        return self._state().tokenizer

    @property
    def chat_template(self) -> str:
        """The Jinja chat template, e.g. to give :class:`~llmrec.llm.openai_http.OpenAIConfig` the same one."""
        return str(self._state().tokenizer.chat_template)

    @property
    def end_of_turn_text(self) -> str:
        """Text of the end-of-turn token (``<|im_end|>`` for ChatML models); empty when there is none."""
        state = self._state()
        if state.end_of_turn_id is None:
            return ""
        return str(state.tokenizer.decode([state.end_of_turn_id], skip_special_tokens=False))

    def _state(self) -> _Loaded:
        return _load(self.config)

    # -- tokens -----------------------------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it: chat template applied, assistant turn opened.

        Raises:
            ConfigError: The model has no chat template (a base model: use :meth:`complete` on raw text).
        """
        tokenizer = self._state().tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{self.model_id} has no chat template: use complete() with raw text, or a chat model")
        return str(tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as is (special-token markers in it are parsed; nothing is added)."""
        return list(self._state().tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` exactly as generated (special-token markers kept, no space clean-up)."""
        tokenizer = self._state().tokenizer
        return str(tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text``."""
        return len(self.encode(text))

    # -- forward passes ---------------------------------------------------------------------------------------

    def _embed(self, state: _Loaded, ids: Any) -> Any:
        """Input embeddings of ``ids`` ``(batch, len)`` with the soft prompt in front."""
        import torch

        assert state.soft_prompt is not None, "only prompt-tuned models embed through _embed"
        embeds = state.model.get_input_embeddings()(ids)
        soft = state.soft_prompt.to(embeds.dtype).expand(ids.shape[0], -1, -1)
        return torch.cat([soft, embeds], dim=1)

    def _offset(self, state: _Loaded) -> int:
        return 0 if state.soft_prompt is None else int(state.soft_prompt.shape[1])

    def _new_cache(
        self, state: _Loaded, kv: list[tuple[Any, Any]] | None, length: int | None = None, batch: int = 1
    ) -> Any:
        """A fresh DynamicCache holding ``kv`` (cut to ``length`` positions, expanded to ``batch`` rows)."""
        from transformers import DynamicCache

        if kv is None:
            return DynamicCache(config=state.model.config)
        data = []
        for k, v in kv:
            k2, v2 = (k, v) if length is None else (k[:, :, :length], v[:, :, :length])
            if batch != 1:
                k2, v2 = k2.expand(batch, -1, -1, -1), v2.expand(batch, -1, -1, -1)
            data.append((k2, v2))
        return DynamicCache(ddp_cache_data=data, config=state.model.config)

    def _prefill(self, state: _Loaded, ids: list[int], *, all_logprobs: bool = False) -> _Prefix:
        """Compute (or reuse) the cache of a prompt. Caller holds ``state.lock`` and inference mode.

        With ``all_logprobs`` every prompt token's log-probability is computed too (for ``echo``), which needs
        the logits of every position, so the prompt is computed in full.
        """
        import torch

        if not ids:
            raise ValueError("empty prompt")
        offset = self._offset(state)
        key = tuple(ids)
        use_cache = self.config.prompt_cache_size > 0 and not state.sliding
        if use_cache and not all_logprobs and key in state.prompt_cache:
            state.prompt_cache.move_to_end(key)
            entry = state.prompt_cache[key]
            return _Prefix(entry.kv, entry.last_logprobs, offset + len(ids))
        reuse, reuse_kv = 0, None
        if use_cache and not all_logprobs:
            for cached_key, entry in state.prompt_cache.items():
                shared = min(_common_prefix(cached_key, key), len(ids) - 1)
                if shared > reuse:
                    reuse, reuse_kv = shared, entry.kv
        model = state.model
        keep = len(ids) if all_logprobs else 1
        if reuse_kv is not None:
            cache = self._new_cache(state, reuse_kv, length=offset + reuse)
            new = torch.tensor([ids[reuse:]], dtype=torch.long)
            out = model(input_ids=new, past_key_values=cache, use_cache=True, logits_to_keep=1)
        else:
            cache = self._new_cache(state, None)
            new = torch.tensor([ids], dtype=torch.long)
            if state.soft_prompt is not None:
                embeds = self._embed(state, new)
                out = model(inputs_embeds=embeds, past_key_values=cache, use_cache=True, logits_to_keep=keep)
            else:
                out = model(input_ids=new, past_key_values=cache, use_cache=True, logits_to_keep=keep)
        logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
        prefix = _Prefix(
            kv=[(layer.keys, layer.values) for layer in cache.layers],
            last_logprobs=logprobs[-1],
            length=offset + len(ids),
        )
        if all_logprobs:
            targets = torch.tensor(ids[1:], dtype=torch.long)
            prefix.token_logprobs = logprobs[:-1].gather(1, targets[:, None])[:, 0]
            top = logprobs[:-1].max(dim=-1)
            prefix.top_ids, prefix.top_logprobs = top.indices, top.values
        if use_cache and len(ids) <= 8192:
            state.prompt_cache[key] = _PromptEntry(prefix.kv, prefix.last_logprobs)
            state.prompt_cache.move_to_end(key)
            while len(state.prompt_cache) > self.config.prompt_cache_size:
                state.prompt_cache.popitem(last=False)
        return prefix

    def _score_targets(
        self,
        state: _Loaded,
        prefix_ids: list[int],
        targets: list[list[int]],
        strategy: str,
        *,
        tops: bool = False,
        prefix: _Prefix | None = None,
    ) -> tuple[_Prefix | None, list[Any], list[Any], list[Any]]:
        """Log-probability of every target token of every continuation of ``prefix_ids``.

        A continuation with targets ``t0..tn`` needs the log-probs after the prompt (for ``t0``) and after each
        of ``t0..t(n-1)``; so only ``t0..t(n-1)`` are fed to the model (the last target is never an input).

        Returns:
            The prefix (``None`` for the naive strategy), and per continuation: its target log-probs, and (when
            ``tops``) the most likely token id and its log-prob at each target position.
        """
        import torch

        if state.sliding and strategy != "naive":
            strategy = "naive"  # sliding-window caches cannot be cut and expanded safely
        attn = getattr(state.model.config, "_attn_implementation", "sdpa")
        if strategy == "packed" and attn not in ("sdpa", "eager"):
            strategy = "batch"  # a custom 4D mask is only understood by these two
        n = len(targets)
        lps: list[Any] = [None] * n
        top_ids: list[Any] = [None] * n
        top_lps: list[Any] = [None] * n
        if strategy == "naive":
            self._score_naive(state, prefix_ids, targets, lps, top_ids, top_lps, tops)
            return None, lps, top_ids, top_lps
        if prefix is None:
            prefix = self._prefill(state, prefix_ids)
        # Chunks of continuations with at most max_batch_tokens fed tokens each.
        chunks: list[list[int]] = [[]]
        budget = 0
        for i, t in enumerate(targets):
            fed = max(len(t) - 1, 0)
            if chunks[-1] and budget + fed > self.config.max_batch_tokens:
                chunks.append([])
                budget = 0
            chunks[-1].append(i)
            budget += fed
        first_top = prefix.last_logprobs.max(dim=-1)
        for chunk in chunks:
            rows = self._forward_chunk(state, prefix, [targets[i] for i in chunk], strategy)
            for i, row in zip(chunk, rows, strict=True):
                t = targets[i]
                if not t:
                    lps[i] = torch.zeros(0)
                    top_ids[i] = torch.zeros(0, dtype=torch.long)
                    top_lps[i] = torch.zeros(0)
                    continue
                dist = prefix.last_logprobs[None] if row is None else torch.cat([prefix.last_logprobs[None], row])
                target = torch.tensor(t, dtype=torch.long)
                lps[i] = dist.gather(1, target[:, None])[:, 0]
                if tops:
                    if row is None:
                        top_ids[i], top_lps[i] = first_top.indices[None], first_top.values[None]
                    else:
                        top = dist.max(dim=-1)
                        top_ids[i], top_lps[i] = top.indices, top.values
        return prefix, lps, top_ids, top_lps

    def _forward_chunk(self, state: _Loaded, prefix: _Prefix, targets: list[list[int]], strategy: str) -> list[Any]:
        """Log-prob rows ``(len(t) - 1, vocab)`` after each fed token of each continuation (``None`` if none)."""
        import torch

        fed = [t[:-1] for t in targets]
        lengths = [len(f) for f in fed]
        total = sum(lengths)
        if total == 0:
            return [None] * len(targets)
        model = state.model
        p = prefix.length
        if strategy == "packed":
            ids = torch.tensor([[tok for f in fed for tok in f]], dtype=torch.long)
            positions = torch.tensor([[p + j for n in lengths for j in range(n)]], dtype=torch.long)
            allowed = torch.zeros(1, 1, total, p + total, dtype=torch.bool)
            allowed[..., :p] = True
            start = 0
            for n in lengths:
                allowed[0, 0, start : start + n, p + start : p + start + n] = torch.ones(n, n, dtype=torch.bool).tril()
                start += n
            mask: Any = allowed
            if getattr(model.config, "_attn_implementation", "sdpa") == "eager":
                dtype = next(model.parameters()).dtype
                mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            cache = self._new_cache(state, prefix.kv)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            flat = torch.log_softmax(out.logits[0].float(), dim=-1)
        else:  # batch: the prompt cache expanded to a right-padded batch
            width = max(lengths)
            ids = torch.zeros(len(fed), width, dtype=torch.long)
            real = torch.zeros(len(fed), width, dtype=torch.bool)
            for r, f in enumerate(fed):
                if f:
                    ids[r, : len(f)] = torch.tensor(f, dtype=torch.long)
                    real[r, : len(f)] = True
            mask2d = torch.cat([torch.ones(len(fed), p, dtype=torch.long), real.long()], dim=1)
            cache = self._new_cache(state, prefix.kv, batch=len(fed))
            out = model(input_ids=ids, attention_mask=mask2d, past_key_values=cache, logits_to_keep=real)
            flat = torch.log_softmax(out.logits.reshape(-1, out.logits.shape[-1]).float(), dim=-1)
        rows: list[Any] = []
        start = 0
        for n in lengths:
            rows.append(flat[start : start + n] if n else None)
            start += n
        return rows

    def _score_naive(
        self,
        state: _Loaded,
        prefix_ids: list[int],
        targets: list[list[int]],
        lps: list[Any],
        top_ids: list[Any],
        top_lps: list[Any],
        tops: bool,
    ) -> None:
        """Reference scoring: prompt + continuation as full sequences in one right-padded batch, no cache."""
        import torch

        offset = self._offset(state)
        seqs = [prefix_ids + t[:-1] for t in targets]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), offset + width, dtype=torch.long)
        keep = torch.zeros(len(seqs), offset + width, dtype=torch.bool)
        for r, (s, t) in enumerate(zip(seqs, targets, strict=True)):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : offset + len(s)] = 1
            if t:
                first = offset + len(prefix_ids) - 1
                keep[r, first : first + len(t)] = True
        model = state.model
        if state.soft_prompt is not None:
            out = model(inputs_embeds=self._embed(state, ids), attention_mask=mask, logits_to_keep=keep)
        else:
            out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep)
        flat = torch.log_softmax(out.logits.reshape(-1, out.logits.shape[-1]).float(), dim=-1)
        start = 0
        for r, t in enumerate(targets):
            rows = flat[start : start + len(t)]
            start += len(t)
            target = torch.tensor(t, dtype=torch.long)
            lps[r] = rows.gather(1, target[:, None])[:, 0] if t else torch.zeros(0)
            if tops:
                top = rows.max(dim=-1) if t else None
                top_ids[r] = top.indices if top is not None else torch.zeros(0, dtype=torch.long)
                top_lps[r] = top.values if top is not None else torch.zeros(0)

    # -- the protocol -----------------------------------------------------------------------------------------

    def prefill(self, prompt: Prompt, *, stop_at: str | None = None) -> int:
        """Compute ``prompt``'s key/value cache now and keep it, so later prompts that begin the same reuse it.

        The prompt is rendered as :meth:`loglik` renders it and cut right before the first ``stop_at`` (for
        example a reranker's candidate list, which changes per request, while the user's part before it does
        not). The kept cache is one of the ``prompt_cache_size`` most recent, so keep that at least the number
        of users warmed at once.

        Returns:
            How many tokens are now cached; 0 when the cache is off (``prompt_cache_size=0``) or the model has
            sliding-window layers (its caches cannot be cut and reused).

        Raises:
            ConfigError: ``stop_at`` does not occur in the rendered prompt.
        """
        import torch

        text = self.render(prompt)
        if stop_at is not None:
            cut = text.find(stop_at)
            if cut < 0:
                raise ConfigError(f"prefill: {stop_at!r} is not in the prompt, so there is nothing to cut it at")
            text = text[:cut]
        state = self._state()
        if self.config.prompt_cache_size == 0 or state.sliding or not text:
            return 0
        ids = self.encode(text)
        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            self._prefill(state, ids)
        return len(ids)

    def loglik(
        self,
        prompt: Prompt,
        continuations: Sequence[str],
        *,
        end_of_turn: bool | None = None,
        strategy: Literal["packed", "batch", "naive"] | None = None,
    ) -> LogLik:
        """Log-likelihood of each continuation as the assistant's reply to ``prompt``, in one batched pass.

        The prompt is chat-templated (assistant turn opened) and computed once; each continuation is tokenized
        on its own and appended to the prompt's tokens. With ``end_of_turn`` the end-of-turn token is scored too
        (and counted in ``n_tokens``), so the score is that of the complete reply.

        Args:
            prompt: Text or chat messages.
            continuations: Candidate replies (e.g. item titles).
            end_of_turn: Override of ``config.end_of_turn``.
            strategy: Override of ``config.loglik_strategy`` (``naive`` is the slow reference).

        Returns:
            Total log-probability (natural log) and token count per continuation.
        """
        import torch

        if not continuations:
            return LogLik(np.zeros(0), np.zeros(0, dtype=np.int64))
        state = self._state()
        score_end = self.config.end_of_turn if end_of_turn is None else end_of_turn
        prefix_ids = self.encode(self.render(prompt))
        targets = []
        for text in continuations:
            t = self.encode(text) if text else []
            if score_end and state.end_of_turn_id is not None:
                t = [*t, state.end_of_turn_id]
            targets.append(t)
        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            _, lps, _, _ = self._score_targets(state, prefix_ids, targets, strategy or self.config.loglik_strategy)
        total = np.array([float(lp.sum()) for lp in lps], dtype=np.float64)
        return LogLik(total=total, n_tokens=np.array([len(t) for t in targets], dtype=np.int64))

    @property
    def item_slot(self) -> str | None:
        """The marker to put after an item's title for its soft token, with a CoLLM adapter; else ``None``.

        See :mod:`llmrec.llm.collm`; without a CoLLM adapter :meth:`loglik_items` is unavailable.
        """
        if self.config.adapter is None:
            return None
        return ITEM_SLOT if self._state().collm is not None else None

    def loglik_items(
        self,
        prompt: Prompt,
        continuations: Sequence[str],
        *,
        prompt_items: Sequence[object],
        continuation_items: Sequence[Sequence[object]],
        end_of_turn: bool | None = None,
    ) -> LogLik:
        """:meth:`loglik` with collaborative soft tokens (a CoLLM adapter): one item id per slot marker.

        Each :data:`~llmrec.llm.collm.ITEM_SLOT` in the prompt and in a continuation becomes the projected vector
        of the next item id given for it. The prompt (soft tokens included) is computed once and the continuations
        run as one batch against it; slots are fed to the model but not scored (``n_tokens`` counts the scored
        tokens only).

        Args:
            prompt: Text or chat messages, with :attr:`item_slot` after each item title that has an id.
            continuations: Candidate replies (e.g. ``"Heat<slot> - Yes"``).
            prompt_items: External item ids of the prompt's slots, in order.
            continuation_items: Per continuation, the external item ids of its slots, in order.
            end_of_turn: Override of ``config.end_of_turn``.

        Raises:
            ConfigError: The model wears no CoLLM adapter, or slots and ids do not pair up.
            UnknownIdError: An item id has no vector in the adapter (the message names the fix).
        """
        import torch

        state = self._state()
        if state.collm is None:
            raise ConfigError(
                f"{self.model_id} wears no CoLLM adapter, so it has no item soft tokens: load one with "
                "LocalLMConfig(adapter=NAME) (llmrec tune collm), or score with loglik()"
            )
        if len(continuation_items) != len(continuations):
            raise ConfigError(
                f"continuation_items needs one list per continuation: {len(continuation_items)} for "
                f"{len(continuations)}"
            )
        if not continuations:
            return LogLik(np.zeros(0), np.zeros(0, dtype=np.int64))
        runtime = state.collm
        score_end = self.config.end_of_turn if end_of_turn is None else end_of_turn
        prompt_ids = encode_with_slots(state.tokenizer, self.render(prompt))
        targets = []
        for text in continuations:
            t = encode_with_slots(state.tokenizer, text) if text else []
            if score_end and state.end_of_turn_id is not None:
                t = [*t, state.end_of_turn_id]
            targets.append(t)
        prompt_rows = runtime.rows(prompt_items)
        rows = [runtime.rows(items) for items in continuation_items]
        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            lps = runtime.score(state.model, prompt_ids, prompt_rows, targets, rows)
        total = np.array([float(lp.sum()) for lp in lps], dtype=np.float64)
        return LogLik(total=total, n_tokens=np.array([len(lp) for lp in lps], dtype=np.int64))

    def score_texts(self, texts: Sequence[str]) -> list[TextScores]:
        """Per-token log-probabilities of raw texts (no chat template): the ``echo`` + ``logprobs`` of a server.

        The longest token prefix shared by all texts is computed once (a ranking request sends one prompt with
        many candidate endings), then the endings are scored as in :meth:`loglik`.
        """
        import torch

        state = self._state()
        tok = state.tokenizer
        encoded = [tok(t, add_special_tokens=True, return_offsets_mapping=True) for t in texts]
        ids_list = [list(e["input_ids"]) for e in encoded]
        results: list[TextScores | None] = [None] * len(texts)
        # Group texts by their first token (a shared prefix needs at least one token).
        groups: dict[int | None, list[int]] = {}
        for i, ids in enumerate(ids_list):
            groups.setdefault(ids[0] if ids else None, []).append(i)
        with state.lock, _torch_threads(self.config.threads), torch.inference_mode():
            for first, members in groups.items():
                if first is None:
                    for i in members:
                        results[i] = TextScores([], [], [], np.zeros(0), [], np.zeros(0))
                    continue
                shared = min(len(ids_list[i]) for i in members)
                for i in members[1:]:
                    shared = min(shared, _common_prefix(ids_list[members[0]], ids_list[i]))
                prefix_ids = ids_list[members[0]][:shared]
                targets = [ids_list[i][shared:] for i in members]
                prefix = self._prefill(state, prefix_ids, all_logprobs=True)
                _, lps, top_ids, top_lps = self._score_targets(
                    state, prefix_ids, targets, self.config.loglik_strategy, tops=True, prefix=prefix
                )
                assert prefix.token_logprobs is not None and prefix.top_ids is not None
                assert prefix.top_logprobs is not None
                for j, i in enumerate(members):
                    ids = ids_list[i]
                    logprobs = np.concatenate([[np.nan], prefix.token_logprobs.numpy(), lps[j].numpy()]).astype(
                        np.float64
                    )
                    tops_ids = [*prefix.top_ids.tolist(), *top_ids[j].tolist()]
                    tops_lp = np.concatenate([[np.nan], prefix.top_logprobs.numpy(), top_lps[j].numpy()])
                    results[i] = TextScores(
                        token_ids=ids,
                        tokens=[tok.decode([t], skip_special_tokens=False) for t in ids],
                        offsets=[int(o[0]) for o in encoded[i]["offset_mapping"]],
                        logprobs=logprobs,
                        top_tokens=["", *(tok.decode([t], skip_special_tokens=False) for t in tops_ids)],
                        top_logprobs=tops_lp.astype(np.float64),
                    )
        return [r for r in results if r is not None]
