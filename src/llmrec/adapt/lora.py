"""LoRA fine-tuning of the local language model on instruction data (peft, CPU).

Low-rank adapters on the chosen linear layers (all of them by default) are the only trained weights; the base
model stays frozen. The saved adapter is ~5 MB for SmolLM2-135M at ``r=8`` and is *merged* into the weights when
:class:`~llmrec.llm.local.LocalLM` loads it, so a tuned reranker scores as fast as the untuned one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmrec.adapt.instructions import InstructionExample
from llmrec.adapt.trainer import StepInfo, TuneConfig, TuneResult, train_adapter
from llmrec.errors import ConfigError

__all__ = ["LoraTuneConfig", "tune_lora"]


class LoraTuneConfig(TuneConfig):
    """LoRA settings on top of the shared training settings (:class:`~llmrec.adapt.trainer.TuneConfig`).

    Attributes:
        r: Rank of each low-rank update.
        alpha: Scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapter's input.
        target_modules: Module names to adapt, or ``"all-linear"`` (every linear layer but the output head).
        last_layers: Adapt only the last this many decoder layers (``None`` = all). Backpropagation then stops at
            the lowest adapted layer, so a step costs little more than a forward pass: on 2 CPU cores the last 8
            of SmolLM2's 30 layers train about 1.6x faster per example than all of them.

    """

    kind: Literal["lora"] = "lora"
    r: int = Field(default=8, ge=1, le=256)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] | Literal["all-linear"] = "all-linear"
    last_layers: int | None = Field(default=None, ge=1)

    def peft_config(self, model: Any) -> Any:
        """The PEFT ``LoraConfig`` for a causal LM.

        Raises:
            ConfigError: ``last_layers`` on a model whose config does not say how many layers it has.
        """
        from peft import LoraConfig

        targets: str | list[str] = (
            self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        )
        layers: list[int] | None = None
        if self.last_layers is not None:
            n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
            if not isinstance(n, int):
                raise ConfigError("last_layers needs a model whose config has num_hidden_layers: leave it unset")
            layers = list(range(max(0, n - self.last_layers), n))
            if targets == "all-linear":  # peft takes a layer subset only with named modules
                targets = _layer_linear_names(model)
        return LoraConfig(
            r=self.r,
            # peft annotates lora_alpha as int but only ever divides it by r; a fractional alpha works as-is.
            lora_alpha=self.alpha,  # type: ignore[arg-type]
            lora_dropout=self.dropout,
            target_modules=targets,
            layers_to_transform=layers,
            task_type="CAUSAL_LM",
        )


def _layer_linear_names(model: Any) -> list[str]:
    """The short names of the linear modules inside the decoder layers (``q_proj``, ``up_proj``...)."""
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    }
    return sorted(names)


def tune_lora(
    train: Sequence[InstructionExample],
    valid: Sequence[InstructionExample] = (),
    *,
    name: str,
    config: LoraTuneConfig | None = None,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    init_adapter: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TuneResult:
    """Train a LoRA adapter and save it as ``<adapter_dir>/<name>`` (see :func:`~llmrec.adapt.trainer.train_adapter`).

    Example:
        >>> examples = build_instructions(leave_last_out(load_movielens()))  # doctest: +SKIP
        >>> config = LoraTuneConfig(max_steps=200)
        >>> tune_lora(examples[:900], examples[900:], name="ml-all", config=config)  # doctest: +SKIP
    """
    return train_adapter(
        config or LoraTuneConfig(),
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
