"""CoLLM collaborative tokens on the packaged SmolLM2 (a few steps, one thread): the projector's shape, where the
soft tokens go and that they move the yes/no score, training lowers the loss, the adapter round-trips through the
registry by name to the served scores, the pipeline's reranker reads it, and bad input names the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmrec.adapt.collm import CollmTuneConfig, item_table, tune_collm
from llmrec.adapt.instructions import InstructionConfig, InstructionExample, build_instructions
from llmrec.adapt.lora import LoraTuneConfig, tune_lora
from llmrec.adapt.registry import list_adapters, read_metadata, resolve_adapter
from llmrec.config import get_settings
from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, leave_last_out
from llmrec.errors import ConfigError, UnknownIdError
from llmrec.llm.collm import ITEM_SLOT, SLOT_ID, ItemTable, encode_with_slots, inputs_embeds
from llmrec.llm.local import LocalLM, LocalLMConfig
from llmrec.llm.rerank import RerankConfig
from llmrec.models.registry import get_scorer
from llmrec.pipeline import LMSpec, Pipeline, PipelineConfig, RetrieverSpec
from required import require

require("peft")

ONE = LocalLMConfig(threads=1)
SLOTTED = InstructionConfig(
    tasks=("yesno",), templates=("yesno-0",), examples=8, history=2, item_slots=True, seed=5
)  # fmt: skip


@pytest.fixture(scope="module")
def split(ml_sample: Dataset) -> Split:
    return leave_last_out(ml_sample)


@pytest.fixture(scope="module")
def table(split: Split) -> ItemTable:
    return item_table(get_scorer("als", factors=16, iterations=5).fit(split.train))


@pytest.fixture(scope="module")
def examples(split: Split) -> list[InstructionExample]:
    return build_instructions(split, SLOTTED)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collm-registry")


@pytest.fixture(scope="module")
def frozen(examples: list[InstructionExample], table: ItemTable, registry: Path) -> Any:
    """Projector only (LM frozen), trained on two examples at a high rate with a constant schedule."""
    config = CollmTuneConfig(
        max_steps=4, batch_size=2, lr=3e-3, schedule="constant", projector_hidden=32, eval_every=0, threads=1
    )
    return tune_collm(examples[:2], name="collm-frozen", table=table, config=config, adapter_dir=registry, lm=ONE)


def _yesno(lm: LocalLM, ex: InstructionExample, *, slots: bool) -> float:
    """log P(Yes) - log P(No) of the example's candidate, with or without the soft tokens."""
    title = ex.target.rsplit(" - ", 1)[0]
    if not slots:
        messages = [{**m, "content": m["content"].replace(ITEM_SLOT, "")} for m in ex.messages]
        text = title.replace(ITEM_SLOT, "")
        ll = lm.loglik(messages, [f"{text} - Yes", f"{text} - No"])
    else:
        items = [[ex.slot_items[-1]]] * 2
        replies = [f"{title} - Yes", f"{title} - No"]
        ll = lm.loglik_items(list(ex.messages), replies, prompt_items=ex.slot_items[:-1], continuation_items=items)
    return float(ll.total[0] - ll.total[1])


def _history_lines(ex: InstructionExample) -> list[str]:
    return ex.messages[-1]["content"].split("<history>\n")[1].split("\n</history>")[0].splitlines()


def test_examples_mark_each_shown_title_and_list_its_item(examples: list[InstructionExample], split: Split) -> None:
    ex = examples[0]
    history = _history_lines(ex)
    assert len(history) == len(ex.slot_items) - 1 == 2 and all(line.endswith(ITEM_SLOT) for line in history)
    assert ex.target.endswith((f"{ITEM_SLOT} - Yes", f"{ITEM_SLOT} - No")) and ex.slot_items[-1] == ex.item_id
    titles = split.train.items.set_index("item_id")["title"]
    assert str(titles[ex.slot_items[0]]).startswith(history[0][2:].removesuffix(ITEM_SLOT).split(" ")[0])
    plain = build_instructions(split, SLOTTED.model_copy(update={"item_slots": False}))
    assert plain[0].slot_items == () and ITEM_SLOT not in plain[0].messages[-1]["content"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_soft_tokens_sit_right_after_the_titles_with_the_lm_hidden_size(
    frozen: Any, examples: list[InstructionExample], lm: LocalLM
) -> None:
    import torch

    served = LocalLM(ONE.model_copy(update={"adapter": str(frozen.path)}))
    runtime = served._state().collm
    hidden = lm._state().model.config.hidden_size
    ex = examples[0]
    vectors = runtime.vectors[runtime.rows(ex.slot_items)]
    assert runtime.projector(vectors).shape == (len(ex.slot_items), hidden) == (3, 576)
    text = lm.render(list(ex.messages)) + ex.target
    ids = encode_with_slots(lm.tokenizer, text)
    slots = [i for i, t in enumerate(ids) if t == SLOT_ID]
    pieces = text.split(ITEM_SLOT)
    shown = [line[2:].removesuffix(ITEM_SLOT) for line in _history_lines(ex)]
    titles = [*shown, ex.target.split(ITEM_SLOT)[0]]
    assert len(slots) == 3 and len(titles) == 3
    for k, (position, title) in enumerate(zip(slots, titles, strict=True)):
        before = lm.tokenizer.decode([t for t in ids[:position] if t != SLOT_ID])
        assert before == "".join(pieces[: k + 1]) and before.endswith(title)  # the slot follows its title exactly
    with torch.no_grad():
        model = lm._state().model
        embeds = inputs_embeds(
            model, runtime.projector, runtime.vectors, torch.tensor([ids]), [runtime.rows(ex.slot_items)]
        )
        words = model.get_input_embeddings()(torch.tensor([[t for t in ids if t != SLOT_ID]]))
    assert embeds.shape == (1, len(ids), hidden)
    torch.testing.assert_close(embeds[0, slots], runtime.projector(vectors))
    keep = [i for i in range(len(ids)) if i not in slots]
    torch.testing.assert_close(embeds[0, keep], words[0])


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_soft_tokens_change_the_yes_no_score_and_depend_on_the_item(
    frozen: Any, examples: list[InstructionExample], lm: LocalLM
) -> None:
    served = LocalLM(ONE.model_copy(update={"adapter": str(frozen.path)}))
    ex = examples[0]
    with_items, text_only = _yesno(served, ex, slots=True), _yesno(lm, ex, slots=False)
    assert abs(with_items - text_only) > 1e-2  # the LM is frozen here: only the soft tokens differ
    other = next(e for e in examples if e.slot_items[-1] != ex.slot_items[-1])
    swapped = type(ex)(**{**ex.__dict__, "slot_items": (*ex.slot_items[:-1], other.slot_items[-1])})
    assert abs(_yesno(served, swapped, slots=True) - with_items) > 1e-3  # same text, another item's vector


def test_a_few_steps_reduce_the_training_loss(frozen: Any) -> None:
    losses = [record["loss"] for record in frozen.history]  # the same two examples every step
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05
    meta = read_metadata(frozen.path)
    assert meta["kind"] == "collm" and meta["scorer"]["name"] == "als" and meta["config"]["lora_r"] == 0


@pytest.mark.slow  # trains CoLLM with LoRA
def test_saved_with_lora_and_loaded_by_name_it_serves_its_validation_loss(
    examples: list[InstructionExample], table: ItemTable, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = CollmTuneConfig(
        max_steps=2, batch_size=2, lora_r=2, projector_hidden=16, eval_every=0, patience=None, threads=1
    )
    valid = examples[4:6]
    result = tune_collm(
        examples[2:4], valid, name="collm-lora", table=table, config=config, adapter_dir=registry, lm=ONE
    )
    names = {p.name for p in result.path.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "collm_config.json",
        "collm_projector.safetensors",
    } <= names
    assert "collm-lora" in list_adapters(registry) and "collm-frozen" in list_adapters(registry)
    monkeypatch.setenv("LLMREC_ADAPTER_DIR", str(registry))
    get_settings.cache_clear()
    try:
        path = resolve_adapter("collm-lora")
    finally:
        get_settings.cache_clear()
    served = LocalLM(ONE.model_copy(update={"adapter": str(path)}))
    scored = [
        served.loglik_items(
            list(e.messages), [e.target], prompt_items=e.slot_items[:-1], continuation_items=[[e.slot_items[-1]]]
        )
        for e in valid
    ]
    loss = -sum(s.total[0] for s in scored) / sum(s.n_tokens[0] for s in scored)
    assert loss == pytest.approx(result.metadata["valid_loss_best"], abs=2e-3)  # training forward == serving forward
    again = LocalLM(ONE.model_copy(update={"adapter": str(result.path)}))  # the same adapter, by path
    assert _yesno(again, valid[0], slots=True) == pytest.approx(_yesno(served, valid[0], slots=True), abs=1e-9)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_the_pipeline_reranker_reads_the_items(frozen: Any, ml_sample: Dataset) -> None:
    config = PipelineConfig(
        retriever=RetrieverSpec(name="popular"),
        candidates=3,
        rerank=RerankConfig(method="yesno", history=2),
        lm=LMSpec(local={"threads": 1, "adapter": str(frozen.path)}),
    )
    pipe = Pipeline(config).fit(ml_sample)
    batch = pipe.rerank_scores(["1"])
    assert np.isfinite(batch.lm_scores).all()
    history = pipe.history(int(ml_sample.user_vocab.index(["1"])[0]))
    items = list(batch.retrieved.items[0])
    direct = pipe.reranker.score(
        [pipe.titles[i] for i in history],
        [pipe.titles[i] for i in batch.retrieved.item_idx[0]],
        history_ids=list(ml_sample.item_vocab.ids_of(history)),
        candidate_ids=items,
    )
    np.testing.assert_allclose(batch.lm_scores[0], direct, atol=1e-9)
    with pytest.raises(ConfigError, match="needs? the items' ids.*history_ids and candidate_ids"):
        pipe.reranker.score(["Heat"], ["Alien"])


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_bad_input_names_the_fix(
    frozen: Any, examples: list[InstructionExample], split: Split, table: ItemTable, registry: Path, lm: LocalLM
) -> None:
    with pytest.raises(ConfigError, match=r"'popular' has no item vectors.*als, bpr, sasrec, bert4rec"):
        item_table(get_scorer("popular").fit(split.train))
    served = LocalLM(ONE.model_copy(update={"adapter": str(frozen.path)}))
    ex = examples[0]
    with pytest.raises(UnknownIdError, match=r"\['no-such-item'\].*no collaborative vector.*retrain the adapter"):
        served.loglik_items(
            list(ex.messages), [ex.target], prompt_items=["no-such-item", "1"], continuation_items=[["1"]]
        )
    with pytest.raises(ConfigError, match=r"\[2\] item slots per row but \[1\] item ids"):
        served.loglik_items(list(ex.messages), [ex.target], prompt_items=["1"], continuation_items=[["1"]])
    with pytest.raises(ConfigError, match="wears no CoLLM adapter"):
        lm.loglik_items("hi", ["x"], prompt_items=[], continuation_items=[[]])
    with pytest.raises(ConfigError, match="item slots.*tune_collm"):
        tune_lora(examples[:2], name="slots-for-lora", config=LoraTuneConfig(max_steps=1), adapter_dir=registry)
    plain = build_instructions(split, SLOTTED.model_copy(update={"item_slots": False}))
    with pytest.raises(ConfigError, match="no item slots.*item_slots=True"):
        tune_collm(plain[:2], name="no-slots", table=table, config=CollmTuneConfig(max_steps=1), adapter_dir=registry)
