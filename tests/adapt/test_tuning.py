"""LoRA and prompt tuning of the packaged SmolLM2 (a handful of steps, one thread): the adapters load through
LocalLMConfig(adapter=...) and move the scores the right way; checkpoints resume exactly; early stopping keeps the
best weights; the registry resolves names and paths.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from llmrec.adapt.instructions import InstructionConfig, InstructionExample, build_instructions
from llmrec.adapt.lora import LoraTuneConfig, tune_lora
from llmrec.adapt.prompt_tuning import PromptTuneConfig, tune_prompt
from llmrec.adapt.registry import METADATA_FILE, list_adapters, read_metadata, resolve_adapter
from llmrec.adapt.trainer import StepInfo
from llmrec.config import get_settings
from llmrec.data.dataset import Dataset
from llmrec.data.splits import leave_last_out
from llmrec.errors import ConfigError
from llmrec.llm.local import LocalLM, LocalLMConfig
from required import require

require("peft")

LORA = LoraTuneConfig(max_steps=4, batch_size=2, lr=3e-3, r=4, eval_every=0, checkpoint_every=2, threads=1)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def examples(ml_sample: Dataset) -> list[InstructionExample]:
    config = InstructionConfig(examples=6, tasks=("yesno",), history=2, seed=5)
    return build_instructions(leave_last_out(ml_sample), config)


@pytest.fixture(scope="module")
def lora_run(examples: list[InstructionExample], tmp_path_factory: pytest.TempPathFactory, lm: Any) -> Any:
    root = tmp_path_factory.mktemp("adapters")
    return tune_lora(examples[:4], name="ml-yesno", config=LORA, adapter_dir=root, lm=LocalLMConfig(threads=1))


def _target_loglik(model: Any, examples: list[InstructionExample]) -> float:
    return float(np.mean([model.loglik(list(e.messages), [e.target]).total[0] for e in examples]))


@pytest.mark.slow  # trains an adapter on the language model
def test_lora_adapter_is_saved_peft_style_and_raises_the_trained_replies(lora_run: Any, lm: Any, examples: Any) -> None:
    path = lora_run.path
    assert {p.name for p in path.iterdir()} == {"adapter_model.safetensors", "adapter_config.json", METADATA_FILE}
    assert json.loads((path / "adapter_config.json").read_text())["peft_type"] == "LORA"
    meta = read_metadata(path)
    assert meta["kind"] == "lora" and meta["steps"] == 4 and meta["n_train"] == 4
    assert meta["train_cutoff"] == max(e.timestamp for e in examples[:4])
    assert meta["base_model"] == lm.model_id and meta["tasks"] == {"yesno": 4}
    tuned = LocalLM(LocalLMConfig(threads=1, adapter=str(path)))
    before, after = _target_loglik(lm, examples[:4]), _target_loglik(tuned, examples[:4])
    assert after > before + 0.5  # the replies it was trained on became clearly more likely


@pytest.mark.slow  # trains an adapter on the language model
def test_an_interrupted_run_resumes_to_the_same_weights(lora_run: Any, examples: Any, tmp_path: Path) -> None:
    def stop_after_two(info: StepInfo) -> None:
        if info.step == 2:
            raise Interrupted

    kwargs: dict[str, Any] = {"name": "ml-yesno", "config": LORA, "adapter_dir": tmp_path}
    with pytest.raises(Interrupted):
        tune_lora(examples[:4], on_step=stop_after_two, lm=LocalLMConfig(threads=1), **kwargs)
    assert (tmp_path / "ml-yesno" / "checkpoint" / "optimizer.safetensors").is_file()
    with pytest.raises(ConfigError, match="resume"):
        tune_lora(examples[:4], lm=LocalLMConfig(threads=1), **kwargs)
    other = [replace(examples[0], target="Other - No"), *examples[1:4]]
    with pytest.raises(ConfigError, match="other data or settings"):
        tune_lora(other, lm=LocalLMConfig(threads=1), resume=True, **kwargs)
    steps: list[int] = []
    resumed = tune_lora(
        examples[:4], lm=LocalLMConfig(threads=1), resume=True, on_step=lambda i: steps.append(i.step), **kwargs
    )
    assert steps == [3, 4] and resumed.steps == 4
    assert not (resumed.path / "checkpoint").exists()
    got = load_file(str(resumed.path / "adapter_model.safetensors"))
    want = load_file(str(lora_run.path / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6)
    with pytest.raises(ConfigError, match="already exists"):
        tune_lora(examples[:4], lm=LocalLMConfig(threads=1), **kwargs)


@pytest.mark.slow  # trains an adapter on the language model
def test_prompt_tuning_stops_early_and_keeps_the_best_soft_prompt(examples: Any, lm: Any, tmp_path: Path) -> None:
    # Train on "Yes" and validate on "No" for the same prompts at a high learning rate: validation soon gets worse.
    train = [replace(e, target="Yes") for e in examples[:4]]
    valid = [replace(e, target="No") for e in train]
    config = PromptTuneConfig(
        num_virtual_tokens=4, max_steps=4, batch_size=2, lr=0.1, eval_every=1, patience=1, threads=1
    )
    result = tune_prompt(train, valid, name="soft", config=config, adapter_dir=tmp_path, lm=LocalLMConfig(threads=1))
    meta = result.metadata
    losses = [meta["valid_loss_start"]] + [r["valid_loss"] for r in result.history]
    assert meta["stopped_early"] and meta["steps"] < 4 and len(result.history) == meta["steps"]
    assert meta["best_step"] == int(np.argmin(losses)) and losses[-1] >= min(losses)
    assert meta["valid_loss_best"] == pytest.approx(min(losses))
    # The saved soft prompt is the best one: served through LocalLM it reproduces the best validation loss.
    tuned = LocalLM(LocalLMConfig(threads=1, adapter=str(result.path)))
    scored = [tuned.loglik(list(e.messages), [e.target]) for e in valid]
    served_loss = -sum(s.total[0] for s in scored) / sum(s.n_tokens[0] for s in scored)
    assert served_loss == pytest.approx(meta["valid_loss_best"], abs=1e-3)
    assert soft_prompt_moved(result.path, lm, config) == (meta["best_step"] > 0)


def soft_prompt_moved(path: Path, lm: Any, config: PromptTuneConfig) -> bool:
    soft = load_file(str(path / "adapter_model.safetensors"))["prompt_embeddings"]
    init = lm.tokenizer(config.init_text, add_special_tokens=False)["input_ids"][: config.num_virtual_tokens]
    words = lm._state().model.get_input_embeddings().weight.detach().numpy()[init]
    return not np.allclose(soft, words, atol=1e-6)  # the starting point is the init text's embeddings


@pytest.mark.slow  # loads the language model with the adapter twice
def test_registry_resolves_names_and_paths(
    lora_run: Any, examples: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = lora_run.path.parent
    assert list_adapters(root) == ["ml-yesno"]
    assert resolve_adapter("ml-yesno", root) == lora_run.path
    assert resolve_adapter(str(lora_run.path), tmp_path) == lora_run.path.resolve()
    with pytest.raises(ConfigError, match=r"unknown adapter 'nope'.*known adapters in .*: ml-yesno"):
        resolve_adapter("nope", root)
    with pytest.raises(ConfigError, match="no adapters in"):
        resolve_adapter("nope", tmp_path / "empty")
    monkeypatch.setenv("LLMREC_ADAPTER_DIR", str(root))
    get_settings.cache_clear()
    try:
        assert resolve_adapter("ml-yesno") == lora_run.path  # the settings' folder by default
        by_name = LocalLM(LocalLMConfig(threads=1, adapter="ml-yesno"))  # the LM takes a registered name too
        by_path = LocalLM(LocalLMConfig(threads=1, adapter=str(lora_run.path)))
        assert _target_loglik(by_name, examples[:2]) == pytest.approx(_target_loglik(by_path, examples[:2]))
    finally:
        get_settings.cache_clear()
    with pytest.raises(ConfigError, match="is not allowed"):
        tune_lora([], name="../escape", adapter_dir=tmp_path)


def test_too_long_examples_are_refused_not_cut(examples: Any, tmp_path: Path) -> None:
    config = LORA.model_copy(update={"max_tokens": 16})
    with pytest.raises(ConfigError, match="longer than max_tokens=16"):
        tune_lora(examples[:2], name="short", config=config, adapter_dir=tmp_path, lm=LocalLMConfig(threads=1))


@pytest.mark.slow  # builds LoRA models on the language model
def test_last_layers_adapts_only_the_top_layers_and_the_head_only_sees_targets(examples: Any) -> None:
    import torch
    from peft import get_peft_model

    from llmrec.adapt.trainer import PeftTrainable, _loss, _target_loss
    from llmrec.llm.local import load_trainable

    model, _ = load_trainable(LocalLMConfig(threads=1))
    n = model.config.num_hidden_layers
    peft_model = get_peft_model(model, LoraTuneConfig(r=4, last_layers=2).peft_config(model))
    lora = [name for name, _ in peft_model.named_parameters() if "lora_" in name]
    assert {int(name.split(".layers.")[1].split(".")[0]) for name in lora} == {n - 2, n - 1}
    kinds = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora}
    assert {"q_proj", "v_proj", "down_proj"} <= kinds  # "all-linear" still means every linear of those layers
    trainable = PeftTrainable(LoraTuneConfig(r=4), *load_trainable(LocalLMConfig(threads=1)), None)
    rows, _ = trainable.encode(examples[:3], 512)
    batch = trainable.batch(rows)
    with torch.no_grad():  # the targeted head gives the full forward's loss
        full = float(_loss(trainable.module, batch))
        assert float(_target_loss(trainable.module, batch)) == pytest.approx(full, rel=1e-4)
