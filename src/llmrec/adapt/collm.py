"""CoLLM-style collaborative tokens: train a projector from a scorer's item vectors into the LM's input space.

CoLLM (Zhang et al. 2023) gives a language model what collaborative filtering knows: each item mentioned in the
prompt gets, right after its title, one extra input embedding computed from the item's vector in a CF or sequential
model. Here the vectors come from a fitted llmrec scorer (:func:`item_table`: ALS/BPR item factors, SASRec/BERT4Rec
item embeddings), a two-layer MLP maps them to the model's hidden size, and the MLP is trained on the TALLRec
yes/no examples of :mod:`llmrec.adapt.instructions` (built with ``item_slots=True``) with the language model
frozen, or together with LoRA weights (``lora_r > 0``, as in CoLLM's second stage, where the LoRA weights of the
text-only stage keep training). Training runs through the one loop of :mod:`llmrec.adapt.trainer` (schedule,
checkpoints and exact resume, early stopping) and the adapter lands in the same registry, so ``--adapter NAME``
loads it wherever a pipeline is built and the ``yesno`` reranker then reads the collaborative tokens.

The item vectors are stored in the adapter, so serving never refits the scorer; an item that was not in the scorer's
catalogue has no vector and is refused with :class:`~llmrec.errors.UnknownIdError` naming the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from llmrec.adapt.instructions import InstructionConfig, InstructionExample
from llmrec.adapt.recipe import tune_on_split
from llmrec.adapt.trainer import StepInfo, TuneConfig, TuneResult, train_adapter
from llmrec.data.splits import Split, Stage
from llmrec.errors import ConfigError
from llmrec.llm.collm import (
    SLOT_ID,
    ItemTable,
    ProjectorSpec,
    encode_with_slots,
    inputs_embeds,
    is_collm_adapter,
    load_collm,
    new_projector,
    save_collm,
)
from llmrec.models.base import Scorer, TrainOptions

__all__ = [
    "VECTOR_SCORERS",
    "CollmTrainable",
    "CollmTuneConfig",
    "item_table",
    "tune_collm",
    "tune_collm_on_split",
]

VECTOR_SCORERS = ("als", "bpr", "sasrec", "bert4rec")
"""Registered scorers whose fitted state holds one vector per item (what the projector reads)."""

_IGNORE = -100


def item_table(scorer: Scorer) -> ItemTable:
    """The item vectors of a fitted scorer, standardised, keyed by external item id.

    ALS and BPR give their item factors (BPR's include its item-bias column); SASRec and BERT4Rec their item
    embedding table. Models without item vectors (EASE and ItemKNN learn item-item weights, popular a count,
    fusion mixes scores) cannot feed a projector.

    Raises:
        ConfigError: The scorer has no item vectors (the message names the scorers that do).
        NotFittedError: The scorer is not fitted.
    """
    data = scorer.data  # NotFittedError before fit
    raw: np.ndarray | None = None
    factors = getattr(scorer, "item_factors", None)
    if isinstance(factors, np.ndarray):
        raw = factors
    elif getattr(scorer, "model", None) is not None and hasattr(scorer.model, "item_weights"):  # type: ignore[attr-defined]
        raw = scorer.model.item_weights().detach().cpu().float().numpy()  # type: ignore[attr-defined]
    if raw is None:
        raise ConfigError(
            f"scorer {scorer.name!r} has no item vectors for CoLLM's projector: fit one that learns an item embedding "
            f"({', '.join(VECTOR_SCORERS)}; e.g. --scorer als)"
        )
    if raw.shape[0] != data.n_items:
        raise ConfigError(f"{scorer.name} gives {raw.shape[0]} item vectors for {data.n_items} items: refit it")
    return ItemTable.from_raw(data.item_vocab.ids, raw, scorer.name, scorer.config.model_dump())


class CollmTuneConfig(TuneConfig):
    """CoLLM settings on top of the shared training settings (:class:`~llmrec.adapt.trainer.TuneConfig`).

    Attributes:
        projector_hidden: Width of the projector's hidden layer.
        lora_r: Rank of LoRA weights trained together with the projector (on every linear layer); 0 keeps the
            language model frozen and trains the projector alone.
        lora_alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        lora_dropout: Dropout on the LoRA input.
        lora_lr_scale: The LoRA weights' learning rate is ``lr * lora_lr_scale`` (a freshly initialised projector
            needs a larger step than LoRA does).
        lr: The projector's learning rate.
        max_tokens: Longest example; soft tokens count as one token each.

    """

    kind: Literal["collm"] = "collm"
    projector_hidden: int = Field(default=256, ge=1, le=8192)
    lora_r: int = Field(default=0, ge=0, le=256)
    lora_alpha: float = Field(default=16.0, gt=0)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_lr_scale: float = Field(default=0.2, gt=0)
    lr: float = Field(default=1e-3, gt=0)

    def peft_config(self, model: Any) -> Any:
        """The PEFT ``LoraConfig`` of the LoRA part.

        Raises:
            ConfigError: ``lora_r`` is 0 (the language model stays frozen; there is no PEFT part).
        """
        from peft import LoraConfig

        if self.lora_r == 0:
            raise ConfigError("lora_r is 0: this CoLLM adapter has no LoRA part (set lora_r > 0 to train one)")
        return LoraConfig(
            r=self.lora_r,
            # peft annotates lora_alpha as int but only ever divides it by r; a fractional alpha works as-is.
            lora_alpha=self.lora_alpha,  # type: ignore[arg-type]
            lora_dropout=self.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )


class CollmTrainable:
    """The projector (and optional LoRA) trained on slot-marked yes/no examples (a trainer ``Trainable``).

    Args:
        config: The CoLLM settings.
        table: Item vectors the projector reads.
        model: The frozen base model.
        tokenizer: Its tokenizer.
        init_path: A CoLLM adapter folder to continue (its projector, and LoRA when it has one), or ``None``.

    Raises:
        ConfigError: ``init_path`` is not a CoLLM adapter, or was trained with another item table or shape.
    """

    def __init__(
        self, config: CollmTuneConfig, table: ItemTable, model: Any, tokenizer: Any, init_path: Path | None
    ) -> None:
        import torch
        from torch import nn

        self.config = config
        self.table = table
        self.tokenizer = tokenizer
        self.fingerprint: str | None = table.fingerprint()
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        from llmrec.llm.local import end_of_turn_id

        self.end = end_of_turn_id(tokenizer)
        hidden = int(model.config.hidden_size)
        self.spec = ProjectorSpec(table.dim, config.projector_hidden, hidden)
        embedding_rms = float(model.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
        projector = new_projector(self.spec, embedding_rms)
        lm = model
        if init_path is not None:
            if not is_collm_adapter(init_path):
                raise ConfigError(f"{init_path} is not a CoLLM adapter: continue it with its own kind's config")
            previous = load_collm(init_path, hidden)
            if previous.table.fingerprint() != self.fingerprint or previous.spec != self.spec:
                raise ConfigError(
                    f"CoLLM adapter {init_path.name!r} was trained with other item vectors or projector shapes: "
                    "train a new adapter (or --overwrite)"
                )
            projector.load_state_dict(previous.projector.state_dict())
        if config.lora_r > 0:
            from peft import PeftModel, get_peft_model

            if init_path is not None and (init_path / "adapter_config.json").is_file():
                lm = PeftModel.from_pretrained(model, str(init_path), is_trainable=True)
            else:
                lm = get_peft_model(model, config.peft_config(model))
        for p in projector.parameters():
            p.requires_grad_(True)
        self.module = nn.ModuleDict({"lm": lm, "projector": projector})
        self.vectors = torch.from_numpy(np.ascontiguousarray(table.vectors))

    @property
    def lm(self) -> Any:
        """The language model (PEFT-wrapped when LoRA is trained)."""
        return self.module["lm"]

    @property
    def projector(self) -> Any:
        """The projector module."""
        return self.module["projector"]

    def encode(self, examples: Sequence[InstructionExample], max_tokens: int) -> tuple[list[Any], int]:
        """``(ids with slots, n_prompt, table rows)`` per example, the chat prompt rendered as the reranker's.

        Raises:
            ConfigError: An example has no slots (built without ``item_slots``), or its slots and ids differ.
            UnknownIdError: An example's item has no vector in the table.
        """
        rows: list[Any] = []
        skipped = 0
        for ex in examples:
            if not ex.slot_items:
                raise ConfigError(
                    f"example of {ex.template} for user {ex.user_id} has no item slots: build CoLLM data with "
                    "InstructionConfig(tasks=('yesno',), templates=('yesno-0',), item_slots=True)"
                )
            text = self.tokenizer.apply_chat_template(list(ex.messages), tokenize=False, add_generation_prompt=True)
            prompt = encode_with_slots(self.tokenizer, text)
            target = encode_with_slots(self.tokenizer, ex.target)
            if self.end is not None:
                target.append(self.end)
            ids = prompt + target
            if ids.count(SLOT_ID) != len(ex.slot_items):
                raise ConfigError(
                    f"example for user {ex.user_id} marks {ids.count(SLOT_ID)} items but lists {len(ex.slot_items)} "
                    "slot_items: rebuild it with build_instructions(item_slots=True)"
                )
            if len(ids) > max_tokens:
                skipped += 1
                continue
            rows.append((ids, len(prompt), self.table.index(ex.slot_items)))
        return rows, skipped

    def batch(self, rows: Sequence[Any]) -> dict[str, Any]:
        """Right-padded ids (slots kept as ``SLOT_ID``), mask, labels (-100 on prompt, slots and padding)."""
        import torch

        width = max(len(ids) for ids, _, _ in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), _IGNORE, dtype=torch.long)
        for i, (row, n_prompt, _) in enumerate(rows):
            n = len(row)
            ids[i, :n] = torch.tensor(row, dtype=torch.long)
            mask[i, :n] = 1
            labels[i, n_prompt:n] = torch.tensor(row[n_prompt:], dtype=torch.long)
        labels[labels == SLOT_ID] = _IGNORE  # a soft token is an input, never something to predict
        return {"ids": ids, "attention_mask": mask, "labels": labels, "items": [items for _, _, items in rows]}

    def loss(self, batch: dict[str, Any]) -> Any:
        """The language model's loss on the reply tokens, reading soft tokens from the projector."""
        embeds = inputs_embeds(self.lm, self.projector, self.vectors, batch["ids"], batch["items"])
        return self.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def param_groups(self) -> list[dict[str, Any]]:
        """The projector at ``lr``; LoRA weights, when trained, at ``lr * lora_lr_scale``."""
        groups = [{"params": list(self.projector.parameters()), "lr_scale": 1.0}]
        lora = [p for p in self.lm.parameters() if p.requires_grad]
        if lora:
            groups.append({"params": lora, "lr_scale": self.config.lora_lr_scale})
        return groups

    def state(self) -> dict[str, Any]:
        """Projector weights (``projector.*``) and LoRA weights (``lora.*``)."""
        out = {f"projector.{k}": v.detach().clone().contiguous() for k, v in self.projector.state_dict().items()}
        if self.config.lora_r > 0:
            from peft import get_peft_model_state_dict

            for k, v in get_peft_model_state_dict(self.lm).items():
                out[f"lora.{k}"] = v.detach().clone().contiguous()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        """Put :meth:`state` tensors back."""
        self.projector.load_state_dict(
            {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
        )
        lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
        if lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.lm, lora)

    def save(self, out: Path) -> None:
        """The CoLLM files (projector, item table, config) and, with LoRA, PEFT's files beside them."""
        if self.config.lora_r > 0:
            self.lm.save_pretrained(str(out))
            (out / "README.md").unlink(missing_ok=True)
        save_collm(out, self.table, self.spec, self.projector.state_dict(), lora=self.config.lora_r > 0)


def _maker(config: CollmTuneConfig, table: ItemTable) -> Callable[[Any, Any, Path | None], CollmTrainable]:
    def make(model: Any, tokenizer: Any, init_path: Path | None) -> CollmTrainable:
        return CollmTrainable(config, table, model, tokenizer, init_path)

    return make


def _table_metadata(table: ItemTable) -> dict[str, Any]:
    return {"scorer": {"name": table.scorer, "config": table.scorer_config}, "n_items_with_vectors": len(table.ids)}


def tune_collm(
    train: Sequence[InstructionExample],
    valid: Sequence[InstructionExample] = (),
    *,
    name: str,
    table: ItemTable,
    config: CollmTuneConfig | None = None,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    init_adapter: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TuneResult:
    """Train a CoLLM projector on slot-marked examples and save it as ``<adapter_dir>/<name>``.

    Args:
        train: Examples from ``build_instructions`` with ``item_slots=True`` (the served yes/no template).
        valid: Validation examples of the same kind (early stopping, best weights); may be empty.
        name: Registry name.
        table: The item vectors (:func:`item_table` of a scorer fitted on the same training data).
        config: Projector, LoRA and optimisation settings.
        adapter_dir: The registry folder (``None`` = ``Settings.adapter_dir``).
        lm: :class:`~llmrec.llm.local.LocalLMConfig` of the base weights (``None`` = the packaged SmolLM2).
        init_adapter: A CoLLM adapter folder to continue (same item table and shapes).
        resume: Continue from the checkpoint an interrupted run left.
        overwrite: Replace an existing adapter of that name.
        extra_metadata: More fields for the metadata JSON.
        show_progress: A progress bar with the running loss.
        on_step: Called after every optimizer step.

    Returns:
        Where the adapter is and what training did.
    """
    config = config or CollmTuneConfig()
    extra = {**_table_metadata(table), **(extra_metadata or {})}
    return train_adapter(
        config,
        train,
        valid,
        name=name,
        adapter_dir=adapter_dir,
        lm=lm,
        init_adapter=init_adapter,
        resume=resume,
        overwrite=overwrite,
        extra_metadata=extra,
        show_progress=show_progress,
        on_step=on_step,
        make_trainable=_maker(config, table),
    )


def tune_collm_on_split(
    split: Split,
    config: CollmTuneConfig | None = None,
    *,
    name: str,
    scorer: str = "als",
    scorer_config: dict[str, Any] | None = None,
    instructions: InstructionConfig | None = None,
    stage: Stage = "valid",
    valid_fraction: float = 0.1,
    seed: int = 0,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    resume: bool = False,
    overwrite: bool = False,
    export: str | Path | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TuneResult:
    """Fit ``scorer`` on the split's fit data, then train a CoLLM adapter on yes/no examples from the same data.

    The scorer and the instruction data both see ``split.fit_data(stage)`` only, so the adapter never learns from
    an evaluation target. ``instructions`` is forced to the served yes/no template with item slots.

    Raises:
        ConfigError: ``scorer`` is unknown or has no item vectors (see :func:`item_table`).
    """
    from llmrec.models.registry import get_scorer

    if scorer not in VECTOR_SCORERS:
        raise ConfigError(
            f"scorer {scorer!r} has no item vectors for CoLLM's projector: choose one of {', '.join(VECTOR_SCORERS)}"
        )
    fitted = get_scorer(scorer, **(scorer_config or {})).fit(split.fit_data(stage), TrainOptions(seed=seed))
    table = item_table(fitted)
    config = config or CollmTuneConfig()
    instructions = (instructions or InstructionConfig()).model_copy(
        update={"tasks": ("yesno",), "templates": ("yesno-0",), "item_slots": True}
    )
    return tune_on_split(
        split,
        config,
        name=name,
        instructions=instructions,
        stage=stage,
        valid_fraction=valid_fraction,
        adapter_dir=adapter_dir,
        lm=lm,
        resume=resume,
        overwrite=overwrite,
        export=export,
        show_progress=show_progress,
        on_step=on_step,
        make_trainable=_maker(config, table),
        extra_metadata=_table_metadata(table),
    )
