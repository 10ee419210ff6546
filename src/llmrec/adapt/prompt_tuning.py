"""Prompt tuning: a few trained "virtual token" embeddings in front of every input, the language model frozen.

Only ``num_virtual_tokens x hidden`` numbers are trained (9 x 576 for SmolLM2-135M at 16 tokens: ~9k), so the
adapter is tiny and cannot damage what the model knows; it only learns *how to be asked*. The virtual tokens
start as the embeddings of a task description (``init_text``), which trains faster than random vectors.
:class:`~llmrec.llm.local.LocalLM` turns the saved adapter into a soft prompt in front of every prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmrec.adapt.instructions import InstructionExample
from llmrec.adapt.trainer import StepInfo, TuneConfig, TuneResult, train_adapter

__all__ = ["PromptTuneConfig", "tune_prompt"]


class PromptTuneConfig(TuneConfig):
    """Prompt-tuning settings on top of the shared training settings (:class:`~llmrec.adapt.trainer.TuneConfig`).

    Attributes:
        num_virtual_tokens: Trained embeddings put in front of every input.
        init_text: Their initial values are this text's token embeddings (repeated to fill); ``None`` = random.
        lr: Soft prompts need a far larger learning rate than LoRA weights.

    """

    kind: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(default=16, ge=1, le=512)
    init_text: str | None = "Recommend items the user will enjoy, judging from their history."
    lr: float = Field(default=1e-2, gt=0)

    def peft_config(self, model: Any) -> Any:
        """The PEFT ``PromptTuningConfig`` (random init here; :meth:`initialise` copies the text's embeddings)."""
        from peft import PromptTuningConfig, PromptTuningInit

        return PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=self.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )

    def initialise(self, peft_model: Any, tokenizer: Any) -> None:
        """Start the virtual tokens as the embeddings of ``init_text`` (what PEFT's TEXT init does, offline)."""
        import torch

        if not self.init_text:
            return
        ids = tokenizer(self.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            return
        embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding
        n = embedding.weight.shape[0]
        repeated = torch.tensor((ids * (n // len(ids) + 1))[:n], dtype=torch.long)
        with torch.no_grad():
            words = peft_model.get_input_embeddings()(repeated)
            embedding.weight.copy_(words.to(embedding.weight.dtype))


def tune_prompt(
    train: Sequence[InstructionExample],
    valid: Sequence[InstructionExample] = (),
    *,
    name: str,
    config: PromptTuneConfig | None = None,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    init_adapter: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TuneResult:
    """Train a soft prompt and save it as ``<adapter_dir>/<name>`` (see :func:`~llmrec.adapt.trainer.train_adapter`)."""
    return train_adapter(
        config or PromptTuneConfig(),
        train,
        valid,
        name=name,
        adapter_dir=adapter_dir,
        lm=lm,
        init_adapter=init_adapter,
        resume=resume,
        overwrite=overwrite,
        extra_metadata=extra_metadata,
        show_progress=show_progress,
        on_step=on_step,
    )
