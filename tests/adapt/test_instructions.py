"""Instruction data: deterministic, built from train only, PII-free, held-out templates kept out, JSONL round trip."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.adapt.instructions import (
    TASKS,
    TEMPLATES,
    InstructionConfig,
    InstructionExample,
    build_eval_examples,
    build_instructions,
    read_jsonl,
    write_jsonl,
)
from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, leave_last_out, temporal_split
from llmrec.errors import ConfigError, DataValidationError, LeakageError
from llmrec.llm.rerank import LMReranker, RerankConfig
from llmrec.text.titles import short_title

HELD_OUT = {t.id for t in TEMPLATES if t.held_out}


@pytest.fixture(scope="module")
def split(ml_sample: Dataset) -> Split:
    return leave_last_out(ml_sample)


def test_same_seed_same_examples_other_seed_other_examples(split: Split) -> None:
    config = InstructionConfig(examples=60, seed=3)
    first = [e.to_dict() for e in build_instructions(split, config)]
    again = [e.to_dict() for e in build_instructions(split, config)]
    other = [e.to_dict() for e in build_instructions(split, config.model_copy(update={"seed": 4}))]
    assert first == again
    assert first != other
    assert len(first) == 60
    assert {e["task"] for e in first} == set(TASKS)  # spread over every task


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("protocol", ["leave-last-out", "temporal"])
def test_no_validation_or_test_event_reaches_an_example(ml: Dataset, protocol: str) -> None:
    split = leave_last_out(ml) if protocol == "leave-last-out" else temporal_split(ml)
    examples = build_instructions(split, InstructionConfig(examples=400, seed=0))
    short = {i: short_title(t) for i, t in zip(ml.items["item_id"], ml.items["title"], strict=True)}
    held = pd.concat([split.valid.interactions, split.test.interactions])
    held_items = held.groupby("user_id")["item_id"].agg(set).to_dict()
    first_held = held.groupby("user_id")["timestamp"].min().to_dict()
    train_titles = split.train.interactions.groupby("user_id")["item_id"].agg(lambda s: {short[i] for i in s}).to_dict()
    checked = 0
    for ex in examples:
        hidden = held_items.get(ex.user_id, set())
        assert ex.item_id not in hidden
        if ex.user_id in first_held:
            assert ex.timestamp <= first_held[ex.user_id]  # the target event is never later than a held-out one
        history = ex.messages[-1]["content"].split("</history>")[0]
        for item in hidden:
            title = short[item]
            if title in train_titles.get(ex.user_id, set()):
                continue  # another item with the same title was in train
            assert ex.target != title and not ex.target.startswith(f"{title} - ")
            assert not ex.target.startswith(f"{title} suits")
            assert not re.search(rf"^- {re.escape(title)}(: \d\.\d)?$", history, re.MULTILINE)
            checked += 1
    assert checked > 100


def test_data_holding_held_out_events_is_refused(split: Split) -> None:
    with pytest.raises(LeakageError, match="training on the future"):
        build_instructions(split, data=split.train.union(split.test))
    with pytest.raises(LeakageError, match="valid"):
        build_instructions(split, data=split.fit_data("test"))  # train + validation, but stage is "valid"
    final = build_instructions(split, InstructionConfig(examples=30), stage="test")  # the final model may see valid
    valid_pairs = set(zip(split.valid.interactions["user_id"], split.valid.interactions["item_id"], strict=True))
    train_only = build_instructions(split, InstructionConfig(examples=600, tasks=("rating",)))
    assert not {(e.user_id, e.item_id) for e in train_only} & valid_pairs
    assert len(final) == 30


def test_personal_data_in_user_text_is_scrubbed(ml_sample: Dataset) -> None:
    items = ml_sample.items.copy()
    items["tags"] = "call me at +44 20 7946 0958|funny|mail jane.doe@example.com"
    users = pd.DataFrame(
        {
            "user_id": ml_sample.user_vocab.ids,
            "profile": "I love thrillers. Reach me at bob.smith@example.org or 415-555-2671.",
        }
    )
    data = Dataset(ml_sample.interactions, items, users, name="pii", validate=False)
    split = leave_last_out(data)
    examples = build_instructions(split, InstructionConfig(examples=80, tasks=("explain", "next", "rating")))
    text = "\n".join(m["content"] for e in examples for m in e.messages) + "\n".join(e.target for e in examples)
    for secret in ("jane.doe@example.com", "bob.smith@example.org", "7946 0958", "555-2671"):
        assert secret not in text
    assert "[EMAIL]" in text and "[PHONE]" in text  # the text around it stays
    assert "I love thrillers" in text and "funny" in text


def test_held_out_templates_only_when_asked(split: Split) -> None:
    train = build_instructions(split, InstructionConfig(examples=200, seed=1))
    assert not {e.template for e in train} & HELD_OUT
    zero_shot = build_instructions(split, InstructionConfig(examples=50, held_out=True, seed=1))
    assert {e.template for e in zero_shot} <= HELD_OUT
    assert {e.task for e in zero_shot} == set(TASKS)  # every task has a held-out phrasing


def test_served_templates_are_the_rerankers_own_prompts(split: Split) -> None:
    examples = build_instructions(split, InstructionConfig(examples=120, tasks=("yesno", "next"), history=5))
    served = [e for e in examples if e.template in ("yesno-0", "next-0")]
    assert served
    for ex in served:
        method = "yesno" if ex.task == "yesno" else "loglik"
        block = ex.messages[-1]["content"].split("<history>\n")[1].split("\n</history>")[0]
        history = [line[2:] for line in block.splitlines()]
        reranker = LMReranker(None, RerankConfig(method=method, history=5))  # type: ignore[arg-type]
        assert list(ex.messages) == reranker.prompt(history)
        if ex.task == "yesno":
            assert ex.target.endswith(" - Yes") == (ex.label == 1.0)
            value = split.train.interactions.query("user_id == @ex.user_id and item_id == @ex.item_id")["value"]
            assert (value.iloc[0] > 3) == (ex.label == 1.0)  # TALLRec label: rating > 3


def test_direct_candidates_hold_the_target_once_and_no_other_seen_item(split: Split) -> None:
    examples = build_instructions(split, InstructionConfig(examples=20, tasks=("direct",), candidates=6))
    for ex in examples:
        listed = ex.messages[-1]["content"].split("<candidates>\n")[1].split("\n</candidates>")[0].splitlines()
        assert len(listed) == 6
        if ex.template == "direct-0":
            assert ex.target == "ABCDEF"[int(ex.label or 0)]


def test_jsonl_round_trip_and_bad_lines(split: Split, tmp_path: Path) -> None:
    examples = build_instructions(split, InstructionConfig(examples=25))
    path = tmp_path / "out" / "train.jsonl"
    assert write_jsonl(examples, path) == 25
    assert read_jsonl(path) == examples
    assert all(isinstance(e, InstructionExample) for e in read_jsonl(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = '{"messages": "oops", "target": "x", "task": "next", "template": "next-0"}'
    lines[4] = "not json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        read_jsonl(path)
    assert [(p.line, p.field) for p in info.value.problems] == [(3, "messages"), (5, None)]


def test_bad_settings_name_the_fix(split: Split) -> None:
    with pytest.raises(ConfigError, match="tasks must be among"):
        build_instructions(split, InstructionConfig.model_construct(**{**InstructionConfig().__dict__, "tasks": ()}))
    late = int(np.max(split.train.timestamps))
    with pytest.raises(ConfigError, match="lower min_history"):
        build_instructions(split, InstructionConfig(since=late))


def test_eval_examples_target_held_out_events_with_fit_histories_only(split: Split) -> None:
    config = InstructionConfig(tasks=("yesno",), examples=30, history=4, seed=2)
    examples = build_eval_examples(split, config)
    assert len(examples) == 30 and {e.template for e in examples} == {"yesno-0"}
    test = split.test.interactions
    fit = split.fit_data("test").interactions
    titles = dict(zip(split.train.items["item_id"], split.train.items["title"], strict=True))
    for ex in examples:
        row = test[(test["user_id"] == ex.user_id) & (test["item_id"] == ex.item_id)]
        assert len(row) == 1 and int(row["timestamp"].iloc[0]) == ex.timestamp
        assert ex.label == float(row["value"].iloc[0] > 3)
        liked = fit[(fit["user_id"] == ex.user_id) & (fit["value"] >= 4.0)]["item_id"]
        block = ex.messages[-1]["content"].split("<history>\n")[1].split("\n</history>")[0]
        assert [line[2:] for line in block.splitlines()] == [short_title(titles[i]) for i in liked][-4:]
    only = build_instructions(split, InstructionConfig(tasks=("yesno",), templates=("yesno-1",), examples=10))
    assert {e.template for e in only} == {"yesno-1"}
    with pytest.raises(ConfigError, match="unknown template"):
        build_instructions(split, InstructionConfig(templates=("yesno-9",)))
    with pytest.raises(ConfigError, match="not a yesno template"):
        build_eval_examples(split, config, template="next-0")
