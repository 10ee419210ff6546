"""From a split to a named adapter in one call: instruction data, a validation share, training, metadata.

:func:`tune_on_split` is what ``llmrec tune lora|prompt`` runs (and what a notebook or the benchmark can run):
it builds instruction examples from the split's fit data, holds out a share of *users* for the validation loss
(so no user is on both sides), trains the adapter kind its config names, and records where the data came from
(dataset, protocol, stage, the newest interaction seen) in the adapter's metadata.

Incremental updates continue an existing adapter on interactions newer than its recorded ``train_cutoff`` only,
never retraining from scratch, and refuse combinations that would leak evaluation targets (an adapter trained
with the validation targets must not be evaluated on validation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.adapt.instructions import InstructionConfig, InstructionExample, build_instructions, write_jsonl
from llmrec.adapt.registry import adapter_root, check_name, list_adapters, read_metadata
from llmrec.adapt.trainer import StepInfo, Trainable, TuneConfig, TuneResult, train_adapter
from llmrec.data.splits import Split, Stage
from llmrec.errors import ConfigError, LeakageError

__all__ = ["split_by_user", "tune_on_split"]


def split_by_user(
    examples: Sequence[InstructionExample], valid_fraction: float, seed: int = 0
) -> tuple[list[InstructionExample], list[InstructionExample]]:
    """(train, valid): the examples of a seeded ``valid_fraction`` of the users go to validation.

    Raises:
        ConfigError: ``valid_fraction`` is outside ``[0, 1)``.
    """
    if not 0 <= valid_fraction < 1:
        raise ConfigError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    users = sorted({e.user_id for e in examples})
    if valid_fraction == 0 or len(users) < 2:
        return list(examples), []
    n_valid = max(1, round(valid_fraction * len(users)))
    chosen = set(np.random.default_rng(seed).permutation(np.array(users, dtype=object))[:n_valid].tolist())
    return [e for e in examples if e.user_id not in chosen], [e for e in examples if e.user_id in chosen]


def _fmt_time(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def tune_on_split(
    split: Split,
    config: TuneConfig,
    *,
    name: str,
    instructions: InstructionConfig | None = None,
    stage: Stage = "valid",
    valid_fraction: float = 0.1,
    incremental: bool = False,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    resume: bool = False,
    overwrite: bool = False,
    export: str | Path | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    make_trainable: Callable[[Any, Any, Path | None], Trainable] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> TuneResult:
    """Build instruction data from ``split`` and train the adapter ``config`` describes, saved under ``name``.

    Args:
        split: The split the adapter will be evaluated on; examples come from ``split.fit_data(stage)`` only.
        config: :class:`~llmrec.adapt.lora.LoraTuneConfig` or :class:`~llmrec.adapt.prompt_tuning.PromptTuneConfig`.
        name: Registry name of the adapter (continued in place with ``incremental``).
        instructions: Tasks, number of examples, history length, seed.
        stage: ``"valid"``: learn from train only; ``"test"``: from train + validation (a final model).
        valid_fraction: Share of users whose examples make up the validation loss (0 = none).
        incremental: Continue the existing adapter ``name`` on events newer than its ``train_cutoff`` only.
        adapter_dir: The registry folder (``None`` = ``Settings.adapter_dir``).
        lm: :class:`~llmrec.llm.local.LocalLMConfig` of the base weights (``None`` = the packaged SmolLM2).
        resume: Continue an interrupted run from its checkpoint.
        overwrite: Replace an existing adapter of that name.
        export: Also write the training examples here as JSONL.
        show_progress: A progress bar with the running loss.
        on_step: Called after every optimizer step.
        make_trainable: What to train (``None`` = the PEFT adapter of ``config``; CoLLM passes its projector).
        extra_metadata: More fields for the adapter's metadata JSON.

    Raises:
        ConfigError: ``incremental`` for an adapter that does not exist or has no cutoff, or nothing new to learn.
        LeakageError: ``incremental`` with ``stage="valid"`` for an adapter that has seen the validation targets.
    """
    instructions = instructions or InstructionConfig()
    init_adapter = None
    previous: dict[str, Any] = {}
    if incremental:
        root = adapter_root(adapter_dir)
        init_adapter = root / check_name(name)
        if not (init_adapter / "adapter_config.json").is_file():
            known = ", ".join(list_adapters(root)) or "none yet"
            raise ConfigError(
                f"--incremental continues an existing adapter, but there is no adapter {name!r} in {root} "
                f"(known: {known}). Train it first without --incremental"
            )
        previous = read_metadata(init_adapter)
        cutoff = previous.get("train_cutoff")
        if cutoff is None:
            raise ConfigError(
                f"adapter {name!r} records no train_cutoff, so what is new cannot be told: retrain it with llmrec tune"
            )
        if previous.get("stage") == "test" and stage == "valid":
            raise LeakageError(
                f"adapter {name!r} was trained on train + validation (stage 'test'); training it further for "
                "validation would evaluate it on targets it has seen. Continue with stage 'test' (--stage test)"
            )
        if previous.get("dataset") not in (None, split.train.name):
            raise ConfigError(
                f"adapter {name!r} was trained on {previous['dataset']!r}, not {split.train.name!r}: continue it on "
                "the same dataset or train a new one"
            )
        instructions = instructions.model_copy(update={"since": int(cutoff)})
    try:
        examples = build_instructions(split, instructions, stage=stage)
    except ConfigError:
        if incremental:
            raise ConfigError(
                f"no interactions newer than adapter {name!r}'s cutoff {_fmt_time(int(previous['train_cutoff']))}: "
                "nothing new to learn (ingest new interactions first)"
            ) from None
        raise
    train, valid = split_by_user(examples, valid_fraction, instructions.seed)
    if export is not None:
        write_jsonl(train, export)
    fit = split.fit_data(stage)
    extra = {
        "dataset": split.train.name,
        "protocol": split.protocol,
        "stage": stage,
        "instructions": instructions.model_dump(),
        "valid_fraction": valid_fraction,
        "data_cutoff": int(fit.timestamps.max()) if len(fit) else None,
        **(extra_metadata or {}),
    }
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
        make_trainable=make_trainable,
    )
