"""The adversarial catalogue on every path that reads item text, with the defences on (issue 17, item 5).

A small slice (12 users, 120 movies plus the 12 attacks and their twins) of what ``benchmarks/injection.py``
measures: no off-catalogue output, no leak and no instruction-like phrase shown on any path, and no injected item
ranked above its neutral twin by text search, the content scorer or the chat.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from benchmark_module import load_benchmark
from llmrec.data.dataset import Dataset
from llmrec.encode.encoder import TextEncoderConfig


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("injection")


@pytest.fixture(scope="module")
def setup(bench: ModuleType, ml: Dataset) -> tuple[Dataset, Any]:
    attacks = bench.load_attacks()
    data = bench.build_data(ml, attacks, 12, 120)
    return data, bench.Judge(attacks).allow_titles(data.items["title"].tolist())


def _clean(row: dict[str, Any]) -> None:
    for rate in ("off_catalogue", "leak", "instruction_shown", "injected_text_in_prompt", "broken_blocks"):
        assert row["metrics"].get(rate, 0.0) == 0.0, (row["model"], rate, row["metrics"])


def test_explanations_never_show_attack_text_leaks_or_other_titles(bench: ModuleType, setup: Any) -> None:
    data, judge = setup
    rows = bench.measure_explanations(data, 4, judge)
    defended = [r for r in rows if r["defence"] in {"strip", "strip + check"}]
    assert len(defended) == 2
    for row in defended:
        _clean(row)


def test_rerank_prompts_carry_titles_only_and_rank_twins_alike(bench: ModuleType, setup: Any) -> None:
    data, judge = setup
    for row in bench.measure_prompts(data, 4, judge):
        _clean(row)
        assert row["target_met"], row


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_text_search_content_and_chat_do_not_lift_injected_items(bench: ModuleType, setup: Any) -> None:
    pytest.importorskip("onnxruntime")
    data, judge = setup
    adv = data.item_vocab.index([bench.ADV + a["id"] for a in bench.load_attacks()["items"]])
    twin = data.item_vocab.index([bench.TWIN + a["id"] for a in bench.load_attacks()["items"]])
    rows = bench.measure_scoring(data, (adv, twin), judge, TextEncoderConfig(backend="onnx"), defences=("strip",))
    assert {r["path"] for r in rows} == {"content", "text_search", "chat"}
    for row in rows:
        _clean(row)
        assert row["target_met"], row  # not above the twin beyond noise (the chat breaks exact ties by position)
        if row["path"] != "chat":
            assert row["metrics"]["rank_diff"] == 0.0, row  # same text, same vector: always the same rank
