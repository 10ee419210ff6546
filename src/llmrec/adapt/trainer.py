"""One training loop for every PEFT adapter kind (LoRA, prompt tuning): plain torch on CPU.

The loop is shared; only the PEFT config differs (:class:`TuneConfig.peft_config`). What it trains is a
:class:`Trainable`: :class:`PeftTrainable` for the PEFT kinds, :class:`~llmrec.adapt.collm.CollmTrainable` for
CoLLM's projector (the model, the batches and the saved files differ; the loop, schedule, checkpoints and early
stopping are this one). What it does:

- **Same format as inference.** Each example's messages are chat-templated with the assistant turn opened (as
  :meth:`~llmrec.llm.local.LocalLM.render` does), the target is tokenized on its own and followed by the
  end-of-turn token (as :meth:`~llmrec.llm.local.LocalLM.loglik` scores a reply). The loss is the mean
  cross-entropy over those target tokens only; prompt tokens and padding are masked out. Examples longer than
  ``max_tokens`` are skipped (counted), never cut, so training never sees a prompt the reranker would not send.
- **Deterministic and resumable.** The batch order of each epoch comes from ``seed + epoch`` and torch is
  re-seeded per step, so step ``s`` always sees the same batch and dropout mask. A checkpoint (trainable weights,
  best weights, optimizer state as safetensors, counters as JSON) lets an interrupted run resume exactly where it
  stopped.
- **Early stopping** on the validation loss, checked every ``eval_every`` steps; the best weights are kept and
  saved at the end.
- **Saved as PEFT saves** (``save_pretrained``: safetensors + ``adapter_config.json``) plus
  :data:`~llmrec.adapt.registry.METADATA_FILE`, into the registry folder of the adapter's name; no pickle
  anywhere (the optimizer state is safetensors too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.adapt.instructions import InstructionExample
from llmrec.adapt.registry import METADATA_FILE, adapter_root, check_name, read_metadata
from llmrec.errors import ConfigError
from llmrec.progress import progress

__all__ = ["PeftTrainable", "StepInfo", "Trainable", "TuneConfig", "TuneResult", "train_adapter"]

log = logging.getLogger(__name__)

_CHECKPOINT = "checkpoint"
_IGNORE = -100


class TuneConfig(BaseModel):
    """Settings every adapter kind shares (the optimisation, the data budget, stopping and checkpoints).

    Attributes:
        kind: The adapter kind (fixed by each subclass).
        lr: AdamW learning rate (peak, after warm-up).
        epochs: Passes over the training examples (when ``max_steps`` is ``None``).
        max_steps: Optimizer steps; overrides ``epochs`` when set.
        batch_size: Examples per step.
        max_tokens: Longest example (prompt + target + end-of-turn) in tokens; longer ones are skipped.
        warmup_steps: Steps of linear warm-up from 0 to ``lr``.
        schedule: ``linear`` (decay to 0 at the last step) or ``constant`` after warm-up.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip (``None`` = no clipping).
        seed: Seed of the initial adapter weights, the batch order and dropout.
        eval_every: Validation loss every this many steps (and at the end); 0 = at the end only.
        patience: Stop after this many validations without improvement (``None`` = never stop early).
        checkpoint_every: Write a resumable checkpoint every this many steps (``None`` = at every validation).
        threads: torch intra-op threads while training (``None`` = torch's setting).
        max_seconds: Stop after the optimizer step that passes this wall time (``None`` = no limit); the best
            weights so far are kept and saved as usual (a CPU budget, e.g. "LoRA within 30 minutes").

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lora", "prompt", "collm"]
    lr: float = Field(default=2e-4, gt=0)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=4, ge=1)
    max_tokens: int = Field(default=384, ge=8)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["linear", "constant"] = "linear"
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    seed: int = 0
    eval_every: int = Field(default=50, ge=0)
    patience: int | None = Field(default=3, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)

    def peft_config(self, model: Any) -> Any:
        """The PEFT config of this adapter kind for ``model`` (subclasses implement it)."""
        raise NotImplementedError

    def initialise(self, peft_model: Any, tokenizer: Any) -> None:
        """Set initial adapter weights after ``get_peft_model`` (default: PEFT's own initialisation)."""


@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step did (given to ``on_step``).

    Attributes:
        step: Steps done so far (1 after the first).
        total: Steps planned.
        loss: Mean target-token loss of this step's batch.
        lr: Learning rate used.
        valid_loss: Validation loss when it was computed after this step, else ``None``.

    """

    step: int
    total: int
    loss: float
    lr: float
    valid_loss: float | None = None


@dataclass(frozen=True)
class TuneResult:
    """What a training run produced.

    Attributes:
        path: The adapter folder (load it with ``LocalLMConfig(adapter=str(path))``).
        metadata: The JSON written beside it (config, data, losses, timings).
        history: ``{"step", "loss", "valid_loss"}`` records, one per step.

    """

    path: Path
    metadata: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Optimizer steps taken in total (over resumed runs too)."""
        return int(self.metadata["steps"])


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None and n != before:
            torch.set_num_threads(before)


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    n_prompt: int


def _encode(examples: Sequence[InstructionExample], tokenizer: Any, max_tokens: int) -> tuple[list[_Encoded], int]:
    """Token ids of each example (prompt as the reranker renders it, then target + end-of-turn); skipped count."""
    from llmrec.llm.local import end_of_turn_id

    end = end_of_turn_id(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the base model has no chat template: adapters are tuned on chat prompts")
    out: list[_Encoded] = []
    skipped = 0
    for ex in examples:
        text = tokenizer.apply_chat_template(list(ex.messages), tokenize=False, add_generation_prompt=True)
        prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        target = list(tokenizer(ex.target, add_special_tokens=False)["input_ids"]) if ex.target else []
        if end is not None:
            target.append(end)
        if not target or len(prompt) + len(target) > max_tokens:
            skipped += 1
            continue
        out.append(_Encoded(prompt + target, len(prompt)))
    return out, skipped


def _batch(rows: Sequence[_Encoded], pad: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding)."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), _IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        ids[i, :n] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, r.n_prompt : n] = torch.tensor(r.ids[r.n_prompt :], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the target tokens of ``batch`` (PEFT adds the virtual tokens' -100 labels)."""
    return model(**batch).loss


def _target_loss(model: Any, batch: dict[str, Any]) -> Any:
    """:func:`_loss` with the output head applied only where a target token is predicted.

    The head (hidden size x vocabulary) on every position is about a fifth of a small model's forward pass and as
    much again backwards, while the targets are a few tokens after a long prompt. Same value as ``_loss`` for
    adapters that change no input length (LoRA; not prompt tuning's virtual tokens).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    labels = batch["labels"][:, 1:]
    rows, cols = torch.nonzero(labels != _IGNORE, as_tuple=True)
    logits = base.get_output_embeddings()(hidden[rows, cols])
    return torch.nn.functional.cross_entropy(logits.float(), labels[rows, cols])


def _valid_loss(trainable: Trainable, rows: Sequence[Any], batch_size: int) -> float:
    """Token-weighted mean target loss over ``rows`` with dropout off."""
    import torch

    trainable.module.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = trainable.batch(rows[start : start + batch_size])
            n = int((batch["labels"] != _IGNORE).sum())
            total += float(trainable.loss(batch)) * n
            tokens += n
    trainable.module.train()
    return total / max(tokens, 1)


def _fingerprint(examples: Sequence[InstructionExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps(ex.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _lr_at(config: TuneConfig, step: int, total: int) -> float:
    """Learning rate of 0-based ``step``: linear warm-up, then constant or linear decay to 0."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(total - config.warmup_steps, 1)
    return config.lr * max(0.0, 1.0 - (step - config.warmup_steps) / span)


# -- what the loop trains ------------------------------------------------------------------------------------------


class Trainable(Protocol):
    """The adapter-kind-specific side of training: the model, how examples become batches, state and files.

    Attributes:
        module: The torch module run in the loop (``train()``/``eval()`` toggle dropout).
        fingerprint: Anything besides the config and examples that a resumed run must share (``None``: nothing).
    """

    module: Any
    fingerprint: str | None

    def encode(self, examples: Sequence[InstructionExample], max_tokens: int) -> tuple[list[Any], int]:
        """Encoded rows of the examples that fit ``max_tokens``, and how many were skipped."""
        ...

    def batch(self, rows: Sequence[Any]) -> dict[str, Any]:
        """One batch of rows; it has ``labels`` (-100 where no loss is taken)."""
        ...

    def loss(self, batch: dict[str, Any]) -> Any:
        """Mean cross-entropy over the batch's target tokens (a scalar tensor)."""
        ...

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups (``params`` and optionally ``lr_scale``, a factor on the scheduled learning rate)."""
        ...

    def state(self) -> dict[str, Any]:
        """The trained tensors (cloned, contiguous): what checkpoints and the best weights hold."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Put tensors from :meth:`state` back."""
        ...

    def save(self, out: Path) -> None:
        """Write the adapter's files into ``out`` (safetensors + JSON)."""
        ...


class PeftTrainable:
    """A PEFT adapter (LoRA, prompt tuning) on the frozen base model, trained on plain chat examples.

    Args:
        config: The adapter kind's config (its ``peft_config`` and ``initialise``).
        model: The base model (frozen).
        tokenizer: Its tokenizer.
        init_path: An adapter folder of the same kind to continue, or ``None`` for fresh weights.
    """

    fingerprint: str | None = None

    def __init__(self, config: TuneConfig, model: Any, tokenizer: Any, init_path: Path | None) -> None:
        from peft import PeftModel, get_peft_model

        self.tokenizer = tokenizer
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if init_path is not None:
            self.module = PeftModel.from_pretrained(model, str(init_path), is_trainable=True)
        else:
            self.module = get_peft_model(model, config.peft_config(model))
            config.initialise(self.module, tokenizer)
        self._prompt_learning = bool(self.module.active_peft_config.is_prompt_learning)

    def encode(self, examples: Sequence[InstructionExample], max_tokens: int) -> tuple[list[Any], int]:
        """Token rows (prompt as the reranker renders it, then target + end-of-turn).

        Raises:
            ConfigError: An example carries item slots: those are CoLLM examples (train them with ``tune_collm``).
        """
        if any(ex.slot_items for ex in examples):
            raise ConfigError(
                "these examples carry CoLLM item slots (InstructionConfig(item_slots=True)): train them with "
                "llmrec.adapt.collm.tune_collm, or build the examples without item_slots"
            )
        return _encode(examples, self.tokenizer, max_tokens)

    def batch(self, rows: Sequence[Any]) -> dict[str, Any]:
        """Right-padded ids, mask and labels."""
        return _batch(rows, self.pad)

    def loss(self, batch: dict[str, Any]) -> Any:
        """The mean target-token loss (PEFT's forward for prompt learning, which adds the virtual tokens' labels)."""
        if self._prompt_learning:
            return _loss(self.module, batch)
        return _target_loss(self.module, batch)

    def param_groups(self) -> list[dict[str, Any]]:
        """One group: every trainable adapter weight."""
        return [{"params": [p for p in self.module.parameters() if p.requires_grad]}]

    def state(self) -> dict[str, Any]:
        """The adapter weights as PEFT saves them."""
        return _trainable_state(self.module)

    def load_state(self, state: dict[str, Any]) -> None:
        """Set the adapter weights."""
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.module, state)

    def save(self, out: Path) -> None:
        """PEFT's ``save_pretrained`` (without its model-card stub, which says nothing ours does not)."""
        self.module.save_pretrained(str(out))
        (out / "README.md").unlink(missing_ok=True)


# -- checkpoints (safetensors + JSON; never pickle) ---------------------------------------------------------------


def _trainable_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def _save_checkpoint(
    folder: Path, trainable: Trainable, optimizer: Any, best: dict[str, Any] | None, state: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable.state(), str(tmp / "trainable.safetensors"))
    if best is not None:
        save_file(best, str(tmp / "best.safetensors"))
    opt = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().clone().contiguous().reshape(value.shape)
        for index, entry in opt["state"].items()
        for key, value in entry.items()
    }
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {**state, "param_groups": opt["param_groups"]}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _load_checkpoint(
    folder: Path, trainable: Trainable, optimizer: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    trainable.load_state(load_file(str(folder / "trainable.safetensors")))
    best_file = folder / "best.safetensors"
    best = load_file(str(best_file)) if best_file.is_file() else None
    tensors = load_file(str(folder / "optimizer.safetensors"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state, best


# -- the loop ------------------------------------------------------------------------------------------------------


def _prepare_out(out: Path, *, resume: bool, overwrite: bool, init_adapter: Path | None) -> bool:
    """Make ``out`` ready; returns whether a checkpoint there should be resumed."""
    checkpoint = out / _CHECKPOINT
    finished = (out / METADATA_FILE).is_file()
    continuing = init_adapter is not None and init_adapter.resolve() == out.resolve()
    if overwrite:
        if out.exists() and not continuing:
            shutil.rmtree(out)
        else:
            shutil.rmtree(checkpoint, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        return False
    if checkpoint.is_dir():
        if resume:
            return True
        raise ConfigError(
            f"{out} holds the checkpoint of an interrupted run: resume it (resume=True, --resume) or start over "
            "(overwrite=True, --overwrite)"
        )
    if finished and not continuing:
        raise ConfigError(
            f"adapter {out.name!r} already exists in {out.parent}: choose another name, overwrite it (--overwrite), "
            "or continue training it on new data (--incremental)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return False


def train_adapter(
    config: TuneConfig,
    train: Sequence[InstructionExample],
    valid: Sequence[InstructionExample] = (),
    *,
    name: str,
    adapter_dir: str | Path | None = None,
    lm: Any | None = None,
    init_adapter: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    show_progress: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    make_trainable: Callable[[Any, Any, Path | None], Trainable] | None = None,
) -> TuneResult:
    """Train an adapter of ``config.kind`` on ``train`` and save it as ``<adapter_dir>/<name>``.

    Args:
        config: The adapter kind's config (:class:`~llmrec.adapt.lora.LoraTuneConfig`,
            :class:`~llmrec.adapt.prompt_tuning.PromptTuneConfig`).
        train: Training examples (from :func:`~llmrec.adapt.instructions.build_instructions`).
        valid: Validation examples for the loss that drives early stopping and picks the weights kept; empty =
            no validation (the last weights are kept).
        name: The adapter's registry name.
        adapter_dir: The registry folder (``None`` = ``Settings.adapter_dir``).
        lm: The base weights (a :class:`~llmrec.llm.local.LocalLMConfig`; ``None`` = the packaged SmolLM2).
        init_adapter: An existing adapter folder of the same kind to continue training (incremental updates);
            ``None`` starts from fresh adapter weights.
        resume: Continue from the checkpoint an interrupted run left in the folder.
        overwrite: Replace an existing adapter of that name (ignored for the folder ``init_adapter`` names).
        extra_metadata: More fields for the metadata JSON (dataset, split, training cutoff...).
        show_progress: A rich progress bar with the running loss.
        on_step: Called after every optimizer step (and validation) with a :class:`StepInfo`.
        make_trainable: ``(model, tokenizer, init_path) -> Trainable``: what to train on the (frozen) base model;
            ``None`` = the PEFT adapter ``config`` describes (:class:`PeftTrainable`). CoLLM passes its projector.

    Returns:
        Where the adapter is and what training did.

    Raises:
        ConfigError: No trainable example (all longer than ``max_tokens``), a name clash, a checkpoint of another
            config or data, or ``init_adapter`` of another kind.
    """
    import torch

    from llmrec.llm.local import LocalLM, LocalLMConfig, load_trainable

    lm = lm if lm is not None else LocalLMConfig()
    out = adapter_root(adapter_dir) / check_name(name)
    init_path = Path(init_adapter).expanduser() if init_adapter is not None else None
    if init_path is not None:
        kind = read_metadata(init_path).get("kind")
        if kind is not None and kind != config.kind:
            raise ConfigError(f"adapter {init_path} is a {kind} adapter: continue it with a {kind} config")
    if not train:
        raise ConfigError("no training examples: build some with build_instructions (raise examples)")
    resuming = _prepare_out(out, resume=resume, overwrite=overwrite, init_adapter=init_path)
    started = time.perf_counter()
    with _threads(config.threads):
        model, tokenizer = load_trainable(lm)
        for p in model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(config.seed)
        if make_trainable is not None:
            trainable = make_trainable(model, tokenizer, init_path)
        else:
            trainable = PeftTrainable(config, model, tokenizer, init_path)
        train_rows, skipped = trainable.encode(train, config.max_tokens)
        valid_rows, skipped_valid = trainable.encode(valid, config.max_tokens)
        if not train_rows:
            raise ConfigError(
                f"all {len(train)} training examples are longer than max_tokens={config.max_tokens}: raise "
                "max_tokens or shorten the history shown (InstructionConfig.history)"
            )
        trainable.module.train()
        groups = trainable.param_groups()
        params = [p for group in groups for p in group["params"]]
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        per_epoch = math.ceil(len(train_rows) / config.batch_size)
        total = config.max_steps if config.max_steps is not None else config.epochs * per_epoch
        fingerprint = {"train": _fingerprint(train), "valid": _fingerprint(valid), "config": config.model_dump()}
        if trainable.fingerprint is not None:
            fingerprint["trainable"] = trainable.fingerprint
        step, best_loss, best_step, bad, history = 0, math.inf, 0, 0, []
        first_valid: float | None = None
        best: dict[str, Any] | None = None
        if resuming:
            state, best = _load_checkpoint(out / _CHECKPOINT, trainable, optimizer)
            if state.get("fingerprint") != json.loads(json.dumps(fingerprint)):
                raise ConfigError(
                    f"the checkpoint in {out} was made with other data or settings: rerun with the same ones, or "
                    "start over with overwrite=True (--overwrite)"
                )
            step, best_step = state["step"], state["best_step"]
            best_loss = math.inf if state["best_loss"] is None else state["best_loss"]
            bad, history, first_valid = state["bad"], state["history"], state["first_valid"]
            log.info("resuming %s at step %d of %d", out, step, total)
        elif valid_rows:  # the starting weights are the first candidate: tuning must beat them to be kept
            first_valid = _valid_loss(trainable, valid_rows, config.batch_size)
            best_loss, best = first_valid, trainable.state()
        every_ckpt = config.checkpoint_every or config.eval_every or 0
        stopped_early = False
        running = _RunningLoss()
        label = f"tuning {config.kind} adapter {name}"
        with progress(show_progress, label, total, completed=step) as advance:
            while step < total:
                epoch, k = divmod(step, per_epoch)
                order = np.random.default_rng(config.seed + epoch).permutation(len(train_rows))
                rows = [train_rows[i] for i in order[k * config.batch_size : (k + 1) * config.batch_size]]
                lr = _lr_at(config, step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                torch.manual_seed(config.seed * 1_000_003 + step)  # dropout mask depends on the step only
                loss = trainable.loss(trainable.batch(rows))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                step += 1
                loss_value = float(loss.detach())
                record: dict[str, Any] = {"step": step, "loss": loss_value, "valid_loss": None}
                at_eval = step == total or (config.eval_every and step % config.eval_every == 0)
                if valid_rows and at_eval:
                    value = _valid_loss(trainable, valid_rows, config.batch_size)
                    record["valid_loss"] = value
                    if value < best_loss - 1e-6:
                        best_loss, best_step, bad = value, step, 0
                        best = trainable.state()
                    else:
                        bad += 1
                    stopped_early = config.patience is not None and bad >= config.patience and step < total
                history.append(record)
                advance(status=running.status(loss_value, record["valid_loss"]))
                if every_ckpt and step % every_ckpt == 0 and step < total and not stopped_early:
                    state = {
                        "step": step,
                        "best_loss": best_loss if math.isfinite(best_loss) else None,
                        "best_step": best_step,
                        "bad": bad,
                        "history": history,
                        "first_valid": first_valid,
                        "fingerprint": fingerprint,
                    }
                    _save_checkpoint(out / _CHECKPOINT, trainable, optimizer, best, state)
                if on_step is not None:
                    on_step(StepInfo(step, total, loss_value, lr, record["valid_loss"]))
                if stopped_early:
                    log.info("early stop at step %d: no better validation loss for %d checks", step, bad)
                    break
                if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                    if valid_rows and record["valid_loss"] is None:  # the last weights get their validation too
                        value = _valid_loss(trainable, valid_rows, config.batch_size)
                        history[-1]["valid_loss"] = value
                        if value < best_loss - 1e-6:
                            best_loss, best_step, best = value, step, trainable.state()
                    stopped_early = True
                    log.info("time budget of %.0f s spent at step %d of %d", config.max_seconds, step, total)
                    break
        if best is not None:
            trainable.load_state(best)
        trainable.save(out)
    previous = read_metadata(init_path) if init_path is not None else {}
    metadata = {
        "kind": config.kind,
        "name": name,
        "base_model": LocalLM(lm).model_id,
        "base_config": lm.model_dump(),
        "config": config.model_dump(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "steps": step + int(previous.get("steps", 0)),
        "steps_this_run": step,
        "planned_steps": total,
        "stopped_early": stopped_early,
        "best_step": best_step if best is not None else step,
        "valid_loss_start": first_valid,
        "valid_loss_best": best_loss if best is not None else None,
        "train_loss_last": history[-1]["loss"] if history else None,
        "n_train": len(train_rows),
        "n_valid": len(valid_rows),
        "skipped_too_long": skipped + skipped_valid,
        "tasks": dict(Counter(ex.task for ex in train)),
        "templates": dict(Counter(ex.template for ex in train)),
        "train_cutoff": max(ex.timestamp for ex in train),
        "continued_from": str(init_path) if init_path is not None else None,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **(extra_metadata or {}),
    }
    if previous.get("train_cutoff") is not None and metadata.get("train_cutoff") is not None:
        metadata["train_cutoff"] = max(int(previous["train_cutoff"]), int(metadata["train_cutoff"]))
    tmp = out / f".{METADATA_FILE}.tmp"
    tmp.write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / METADATA_FILE)
    shutil.rmtree(out / _CHECKPOINT, ignore_errors=True)
    log.info("saved %s adapter %s (%d steps, %.0f s)", config.kind, out, step, metadata["wall_s"])
    return TuneResult(out, metadata, history)


class _RunningLoss:
    """The status of a tuning bar: the mean loss of the last 20 steps and the latest validation loss."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=20)
        self._valid = "-"

    def status(self, loss: float, valid: float | None) -> str:
        """Take one step's loss (and validation loss when there was one); returns the text to show."""
        self._recent.append(loss)
        if valid is not None:
            self._valid = f"{valid:.3f}"
        return f"loss {np.mean(self._recent):.3f}  valid {self._valid}"
