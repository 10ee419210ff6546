"""``llmrec tune``: adapt the local language model (LoRA, prompt tuning, CoLLM) and list the adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmrec.cli.common import DatasetOpt, DbOpt, _friendly_errors, app, console
from llmrec.errors import ConfigError

# --------------------------------------------------------------------------------------------------------------
# llmrec tune: adapt the language model (LoRA, prompt tuning) on instruction data from the training split
# --------------------------------------------------------------------------------------------------------------

tune_app = typer.Typer(
    help="Adapt the local language model to recommendation (LoRA, prompt tuning); `--adapter NAME` then uses it.",
    no_args_is_help=True,
)
app.add_typer(tune_app, name="tune")

NameOpt = Annotated[str, typer.Option(help="Registry name of the adapter (then: --adapter NAME).")]
ProtocolOpt = Annotated[str, typer.Option(help="Split protocol: leave-last-out or temporal.")]
StageOpt = Annotated[str, typer.Option(help="valid: learn from train only; test: train + validation (a final model).")]
TasksOpt = Annotated[str, typer.Option(help="Comma-separated tasks: next, direct, yesno, rating, explain.")]
ExamplesOpt = Annotated[int, typer.Option(help="Instruction examples to build (spread over the tasks).")]
HistoryOpt = Annotated[int, typer.Option(help="Items of history each prompt shows.")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimizer steps (default: --epochs passes over the data).")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the examples when --steps is not given.")]
BatchOpt = Annotated[int, typer.Option(help="Examples per step.")]
MaxTokensOpt = Annotated[int, typer.Option(help="Longest example in tokens (longer ones are skipped).")]
ValidOpt = Annotated[float, typer.Option(help="Share of users held out for the validation loss.")]
EvalOpt = Annotated[int, typer.Option(help="Validation loss (and checkpoint) every N steps; 0 = at the end only.")]
PatienceOpt = Annotated[int, typer.Option(help="Stop after N validations without improvement.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data draw, adapter init, batch order and dropout.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch threads while training.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing adapter of that name.")]
IncrementalOpt = Annotated[
    bool, typer.Option(help="Continue the existing adapter NAME on interactions newer than its training cutoff.")
]
ExportOpt = Annotated[Path | None, typer.Option(help="Also write the training examples here (JSONL).")]


def _run_tune(config: Any, name: str, dataset: str, protocol: str, stage: str, tasks: str, examples: int,
              history: int, valid_fraction: float, seed: int, incremental: bool, resume: bool, overwrite: bool,
              export: Path | None, db: str | None,
              scorer: tuple[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Build the split and instruction data, train, print a summary (shared by every adapter kind).

    ``scorer`` (name, config) is CoLLM's: the model fitted on the same split whose item vectors the projector reads.
    """
    from pydantic import ValidationError

    from llmrec.adapt.instructions import InstructionConfig
    from llmrec.adapt.recipe import tune_on_split
    from llmrec.data.registry import load_named
    from llmrec.data.splits import make_split

    if stage not in ("valid", "test"):
        raise ConfigError(f"--stage must be valid or test, got {stage!r}")
    try:
        names = tuple(t.strip() for t in tasks.split(",") if t.strip())  # validated against the task names here
        instructions = InstructionConfig.model_validate(
            {"tasks": names, "examples": examples, "history": history, "seed": seed}
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid --tasks/--examples/--history: {exc}") from exc
    data = load_named(dataset, db, prefer_store=False)
    split = make_split(data, protocol)
    if scorer is not None:
        from llmrec.adapt.collm import tune_collm_on_split

        result = tune_collm_on_split(
            split,
            config,
            name=name,
            scorer=scorer[0],
            scorer_config=scorer[1],
            instructions=instructions,
            stage=stage,  # type: ignore[arg-type]
            valid_fraction=valid_fraction,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            export=export,
            show_progress=True,
        )
    else:
        result = tune_on_split(
            split,
            config,
            name=name,
            instructions=instructions,
            stage=stage,  # type: ignore[arg-type]
            valid_fraction=valid_fraction,
            incremental=incremental,
            resume=resume,
            overwrite=overwrite,
            export=export,
            show_progress=True,
        )
    meta = result.metadata
    table = Table(title=f"{meta['kind']} adapter {name!r}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    loss = meta.get("valid_loss_best")
    rows = [
        ("folder", str(result.path)),
        ("data", f"{meta['dataset']} ({meta['protocol']}, stage {meta['stage']}): {meta['n_train']} train / "
                 f"{meta['n_valid']} validation examples, tasks {', '.join(meta['tasks'])}"),
        ("steps", f"{meta['steps_this_run']} this run ({meta['steps']} in total)"
                  + (", stopped early" if meta["stopped_early"] else "")),
        ("validation loss", f"{meta['valid_loss_start']:.3f} -> {loss:.3f} (best at step {meta['best_step']})"
                            if loss is not None and meta.get("valid_loss_start") is not None else "-"),
        ("train loss (last step)", f"{meta['train_loss_last']:.3f}"),
        ("time, memory", f"{meta['wall_s']:.0f} s, peak {meta['peak_rss_mb']:.0f} MB"),
        ("use it", f"llmrec recommend --user 1 --adapter {name}"),
    ]  # fmt: skip
    if "scorer" in meta:
        rows.insert(1, ("item vectors", f"{meta['scorer']['name']} ({meta['n_items_with_vectors']} items)"))
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@tune_app.command("lora")
@_friendly_errors
def tune_lora_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    tasks: TasksOpt = "next,direct,yesno,rating,explain",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-4,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="all-linear, or comma-separated module names (e.g. q_proj,v_proj).")
    ] = "all-linear",
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    incremental: IncrementalOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """LoRA fine-tuning of the local language model on instruction data from the training split."""
    from pydantic import ValidationError

    from llmrec.adapt.lora import LoraTuneConfig

    modules: Any = target_modules if target_modules == "all-linear" else tuple(target_modules.split(","))
    try:
        config = LoraTuneConfig(
            r=rank, alpha=alpha, dropout=dropout, target_modules=modules, lr=lr, epochs=epochs, max_steps=steps,
            batch_size=batch_size, max_tokens=max_tokens, eval_every=eval_every, patience=patience, seed=seed,
            threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid LoRA settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, tasks, examples, history, valid_fraction, seed, incremental,
              resume, overwrite, export, db)  # fmt: skip


@tune_app.command("prompt")
@_friendly_errors
def tune_prompt_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    tasks: TasksOpt = "next,direct,yesno,rating,explain",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (soft prompts need a large one).")] = 1e-2,
    virtual_tokens: Annotated[int, typer.Option(help="Trained virtual tokens in front of every prompt.")] = 16,
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    incremental: IncrementalOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """Prompt tuning (a trained soft prompt, the language model frozen) on instruction data from the training split."""
    from pydantic import ValidationError

    from llmrec.adapt.prompt_tuning import PromptTuneConfig

    try:
        config = PromptTuneConfig(
            num_virtual_tokens=virtual_tokens, lr=lr, epochs=epochs, max_steps=steps, batch_size=batch_size,
            max_tokens=max_tokens, eval_every=eval_every, patience=patience, seed=seed, threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid prompt-tuning settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, tasks, examples, history, valid_fraction, seed, incremental,
              resume, overwrite, export, db)  # fmt: skip


@tune_app.command("collm")
@_friendly_errors
def tune_collm_command(
    name: NameOpt,
    dataset: DatasetOpt = "movielens-small",
    protocol: ProtocolOpt = "leave-last-out",
    stage: StageOpt = "valid",
    scorer: Annotated[str, typer.Option(help="Source of the item vectors: als, bpr, sasrec or bert4rec.")] = "als",
    scorer_config: Annotated[
        str, typer.Option(help="The scorer's settings as a JSON object, e.g. '{\"factors\": 32}'.")
    ] = "{}",
    examples: ExamplesOpt = 512,
    history: HistoryOpt = 5,
    steps: StepsOpt = None,
    epochs: EpochsOpt = 1,
    batch_size: BatchOpt = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the projector.")] = 1e-3,
    projector_hidden: Annotated[int, typer.Option(help="Width of the projector's hidden layer.")] = 256,
    lora_rank: Annotated[
        int, typer.Option(help="Rank of LoRA weights trained with the projector; 0 keeps the language model frozen.")
    ] = 0,
    lora_lr_scale: Annotated[float, typer.Option(help="LoRA learning rate = lr x this.")] = 0.2,
    max_tokens: MaxTokensOpt = 384,
    valid_fraction: ValidOpt = 0.1,
    eval_every: EvalOpt = 50,
    patience: PatienceOpt = 3,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    export: ExportOpt = None,
    db: DbOpt = None,
) -> None:
    """CoLLM collaborative tokens: a projector from a CF model's item vectors into the LM, on yes/no examples."""
    from pydantic import ValidationError

    from llmrec.adapt.collm import CollmTuneConfig

    try:
        options = json.loads(scorer_config)
    except ValueError as exc:
        raise ConfigError(f"--scorer-config must be a JSON object ({exc}), e.g. '{{\"factors\": 32}}'") from exc
    if not isinstance(options, dict):
        raise ConfigError("--scorer-config must be a JSON object, e.g. '{\"factors\": 32}'")
    try:
        config = CollmTuneConfig(
            projector_hidden=projector_hidden, lora_r=lora_rank, lora_lr_scale=lora_lr_scale, lr=lr, epochs=epochs,
            max_steps=steps, batch_size=batch_size, max_tokens=max_tokens, eval_every=eval_every, patience=patience,
            seed=seed, threads=threads,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid CoLLM settings: {exc}") from exc
    _run_tune(config, name, dataset, protocol, stage, "yesno", examples, history, valid_fraction, seed, False,
              resume, overwrite, export, db, scorer=(scorer, options))  # fmt: skip


@tune_app.command("list")
@_friendly_errors
def tune_list() -> None:
    """List the adapters in the registry (LLMREC_ADAPTER_DIR, default ~/.llmrec/adapters)."""
    from llmrec.adapt.registry import adapter_root, list_adapters, read_metadata

    root = adapter_root()
    names = list_adapters(root)
    if not names:
        console.print(f"no adapters in {root} yet: train one with `llmrec tune lora --name NAME`")
        return
    table = Table(title=f"adapters in {root}")
    for column in ("name", "kind", "dataset", "tasks", "steps", "valid loss", "cutoff", "created"):
        table.add_column(column)
    for name in names:
        meta = read_metadata(root / name)
        loss = meta.get("valid_loss_best")
        cutoff = meta.get("train_cutoff")
        table.add_row(
            name,
            str(meta.get("kind", "?")),
            str(meta.get("dataset", "?")),
            ",".join(meta.get("tasks", {})),
            str(meta.get("steps", "?")),
            f"{loss:.3f}" if isinstance(loss, int | float) else "-",
            _iso_day(cutoff),
            str(meta.get("created", "?")),
        )
    console.print(table)


def _iso_day(timestamp: object) -> str:
    import datetime as dt

    if not isinstance(timestamp, int | float):
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


# llmrec synth: synthetic data at any size (power-law popularity, sessions over time, item texts)
