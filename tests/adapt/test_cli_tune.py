"""`llmrec tune lora|prompt|list` and `--adapter NAME` through typer's CliRunner (a few steps, one thread)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrec.adapt.instructions import read_jsonl
from llmrec.adapt.registry import read_metadata
from llmrec.cli import app
from llmrec.config import get_settings
from required import require

require("peft")
runner = CliRunner()
FAST = ["--tasks", "yesno", "--examples", "8", "--history", "2", "--batch-size", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMREC_ADAPTER_DIR", str(root))
        patch.setenv("HF_HUB_OFFLINE", "1")
        get_settings.cache_clear()
        yield root
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def tuned(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    export = tmp_path_factory.mktemp("export") / "train.jsonl"
    args = ["tune", "lora", "--name", "cli-lora", *FAST, "--steps", "2", "--lr", "5e-3", "--export", str(export)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lora adapter 'cli-lora'" in result.output and "--adapter cli-lora" in result.output
    assert len(read_jsonl(export)) == read_metadata(registry / "cli-lora")["n_train"]
    return registry / "cli-lora"


@pytest.mark.slow  # trains an adapter, then recommends with it
def test_tune_lora_writes_a_named_adapter_that_recommend_uses(tuned: Path) -> None:
    from llmrec.llm.local.loading import _LOADED

    meta = read_metadata(tuned)
    assert meta["kind"] == "lora" and meta["steps"] == 2 and meta["dataset"] == "movielens-small"
    assert meta["stage"] == "valid" and meta["n_valid"] > 0  # a share of users held out for the validation loss
    listed = runner.invoke(app, ["tune", "list"])
    assert listed.exit_code == 0 and "cli-lora" in listed.output and "lora" in listed.output
    args = ["recommend", "--user", "1", "--k", "3", "--retriever", "popular", "--method", "yesno"]
    result = runner.invoke(app, [*args, "--adapter", "cli-lora"])
    assert result.exit_code == 0, result.output
    assert "top-3 for user 1 (popular + LM rerank (yesno))" in result.output
    assert any(key[2] == str(tuned) for key in _LOADED)  # the pipeline's language model wears the adapter


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_unknown_adapter_and_name_clash_name_the_fix(tuned: Path) -> None:
    result = runner.invoke(app, ["recommend", "--user", "1", "--retriever", "popular", "--adapter", "nope"])
    assert result.exit_code == 2 and "unknown adapter 'nope'" in result.output and "cli-lora" in result.output
    assert "Traceback" not in result.output
    again = runner.invoke(app, ["tune", "lora", "--name", "cli-lora", *FAST, "--steps", "1"])
    assert again.exit_code == 2 and "already exists" in again.output and "--overwrite" in again.output
    missing = runner.invoke(app, ["tune", "lora", "--name", "missing", "--incremental", *FAST])
    assert missing.exit_code == 2 and "no adapter 'missing'" in missing.output and "cli-lora" in missing.output
    bad = runner.invoke(app, ["tune", "lora", "--name", "x", "--tasks", "yesno,dance"])
    assert bad.exit_code == 2 and "--tasks" in bad.output


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_incremental_update_trains_only_on_newer_interactions(tuned: Path, tmp_path: Path) -> None:
    before = read_metadata(tuned)
    export = tmp_path / "new.jsonl"
    args = ["tune", "lora", "--name", "cli-lora", "--incremental", *FAST, "--steps", "1", "--export", str(export)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    after = read_metadata(tuned)
    assert after["steps"] == before["steps"] + 1 and after["continued_from"] == str(tuned)
    new = read_jsonl(export)
    assert new and all(e.timestamp > before["train_cutoff"] for e in new)
    assert after["train_cutoff"] >= max(e.timestamp for e in new) and after["train_cutoff"] > before["train_cutoff"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_prompt_tuning_from_the_cli_and_the_leakage_guard(registry: Path) -> None:
    args = ["tune", "prompt", "--name", "cli-soft", *FAST, "--steps", "1", "--virtual-tokens", "4", "--stage", "test"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((registry / "cli-soft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4
    leak = runner.invoke(app, ["tune", "prompt", "--name", "cli-soft", "--incremental", *FAST, "--stage", "valid"])
    assert leak.exit_code == 2 and "LeakageError" in leak.output and "--stage test" in leak.output


@pytest.mark.slow  # trains an adapter, then recommends with it
def test_tune_collm_then_recommend_with_it(registry: Path) -> None:
    from llmrec.llm.local.loading import _LOADED

    fast = ["--examples", "4", "--history", "2", "--batch-size", "2", "--threads", "1", "--steps", "1"]
    args = ["tune", "collm", "--name", "cli-collm", *fast, "--scorer-config", '{"factors": 8, "iterations": 2}']
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "collm adapter 'cli-collm'" in result.output and "als (9742 items)" in result.output
    meta = read_metadata(registry / "cli-collm")
    assert meta["kind"] == "collm" and meta["scorer"]["config"]["factors"] == 8 and meta["tasks"] == {"yesno": 3}
    rec = ["recommend", "--user", "1", "--k", "2", "--retriever", "popular", "--method", "yesno", "--adapter"]
    served = runner.invoke(app, [*rec, "cli-collm"])
    assert served.exit_code == 0, served.output
    assert any(key[2] == str(registry / "cli-collm") and loaded.collm is not None for key, loaded in _LOADED.items())
    bad = runner.invoke(app, ["tune", "collm", "--name", "x", "--scorer", "ease", *fast])
    assert bad.exit_code == 2 and "no item vectors" in bad.output and "als, bpr, sasrec, bert4rec" in bad.output
    bad_json = runner.invoke(app, ["tune", "collm", "--name", "x", "--scorer-config", "{factors: 8}", *fast])
    assert bad_json.exit_code == 2 and "--scorer-config must be a JSON object" in bad_json.output
