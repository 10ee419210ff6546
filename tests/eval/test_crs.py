"""The ReDial CRS protocol (llmrec.eval.crs) on real test dialogues: samples, exclusion, recall bounds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from llmrec.catalogue import Catalogue
from llmrec.data.movielens import load_movielens
from llmrec.data.redial import Dialogue, load_redial, load_redial_mapping
from llmrec.eval.crs import CRSSample, build_samples, dialogue_states, evaluate_ranker, recall_at, render_message
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
from llmrec.query import Query
from required import skip_or_fail


def _redial_dir() -> Path:
    env = os.environ.get("LLMREC_DATA_DIR")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"
    folder = base / "redial"
    if not (folder / "test_data.jsonl").is_file():
        message = f"ReDial not found at {folder}; set LLMREC_DATA_DIR to the shared datasets folder"
        skip_or_fail(message)
    return folder


@pytest.fixture(scope="module")
def mapping() -> dict[str, str]:
    return load_redial_mapping(_redial_dir())


@pytest.fixture(scope="module")
def dialogues(mapping: dict[str, str]) -> list[Dialogue]:
    """Three real dialogues that each give samples, one with a repeated target."""
    all_dialogues = load_redial(_redial_dir())
    chosen: list[Dialogue] = []
    repeated = next(d for d in all_dialogues if any(s.repeated for s in build_samples([d], mapping).samples))
    chosen.append(repeated)
    for d in all_dialogues:
        if len(chosen) == 3:
            break
        if d is not repeated and len(build_samples([d], mapping).samples) >= 2:
            chosen.append(d)
    return chosen


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    config = PipelineConfig(retriever=RetrieverSpec(name="itemknn"), candidates=50, rerank=None)
    return Pipeline(config).fit(load_movielens())


def test_samples_come_from_recommender_turns_with_context_before_them(
    dialogues: list[Dialogue], mapping: dict[str, str]
) -> None:
    built = build_samples(dialogues, mapping)
    assert built.n_dialogues == 3
    assert len(built.samples) >= 5
    for s in built.samples:
        message = s.dialogue.messages[s.position]
        assert s.dialogue.role(message) == "respondent"
        assert s.target in {mapping[m] for m in message.mentions if m in mapping}
        earlier = {mapping[m] for msg in s.context for m in msg.mentions if m in mapping}
        assert set(s.context_items) == earlier
        assert set(s.seeker_items) <= set(s.context_items)
    assert built.n_repeated >= 1
    assert built.summary()["n_samples_new"] == len(built.samples) - built.n_repeated


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_exclusion_never_ranks_a_mentioned_item_and_recall_is_a_share(
    dialogues: list[Dialogue], mapping: dict[str, str], pipeline: Pipeline
) -> None:
    samples = build_samples(dialogues, mapping).samples
    returned: list[tuple[CRSSample, bool, list[str]]] = []

    def ranker(sample: CRSSample, exclude: bool) -> list[str]:
        query = Query(liked=tuple(sample.context_items), exclude_seen=exclude)
        recs = pipeline.recommend([query], 50, rerank=False)
        items = [str(i) for i in recs.items[0]]
        returned.append((sample, exclude, items))
        return items

    result = evaluate_ranker(samples, ranker)
    for sample, exclude, items in returned:
        if exclude:
            assert not set(items) & set(sample.context_items)
    for variant in ("excluded", "included"):
        assert set(result.metrics[variant]) == {"recall@1", "recall@10", "recall@50"}
        values = list(result.metrics[variant].values())
        assert all(0.0 <= v <= 1.0 for v in values)
        assert values == sorted(values)  # recall grows with k
    assert result.n_samples["included"] == len(samples)
    assert result.n_samples["excluded"] == sum(not s.repeated for s in samples)


def test_a_target_placed_in_the_history_is_excluded(dialogues: list[Dialogue], mapping: dict[str, str]) -> None:
    sample = build_samples(dialogues, mapping).samples[0]
    cheat = CRSSample(sample.dialogue, sample.position, sample.target, (*sample.context_items, sample.target), ())

    def oracle(s: CRSSample, exclude: bool) -> list[str]:
        return [s.target, *s.context_items]  # a ranker that repeats the dialogue back

    result = evaluate_ranker([cheat], oracle)
    assert result.n_samples["excluded"] == 0  # a repeated target is not scored in the standardized variant
    assert result.metrics["included"]["recall@1"] == 1.0
    fresh = CRSSample(sample.dialogue, sample.position, sample.target, sample.context_items, ())

    def leaky(s: CRSSample, exclude: bool) -> list[str]:
        return [*s.context_items, "1", "2"]

    ranks = evaluate_ranker([fresh], leaky, variants=("excluded",)).hits["excluded"]
    assert ranks.tolist() == ([0] if sample.target == "1" else [1] if sample.target == "2" else [-1])


def test_recall_at_counts_ranks_below_k() -> None:
    assert recall_at(np.array([0, 9, 10, -1]), (1, 10, 50)) == {"recall@1": 0.25, "recall@10": 0.5, "recall@50": 0.75}


def test_dialogue_states_read_the_context_without_the_future(
    dialogues: list[Dialogue], mapping: dict[str, str], pipeline: Pipeline
) -> None:
    dialogue = dialogues[0]
    catalogue = Catalogue.of(pipeline.data)
    states = dialogue_states(dialogue, catalogue, mapping)
    assert len(states) == len(dialogue.messages) + 1
    assert states[0].liked == []
    for position in range(len(dialogue.messages) + 1):
        mentioned_so_far = {mapping[m] for msg in dialogue.messages[:position] for m in msg.mentions if m in mapping}
        state = states[position]
        assert set(state.liked + state.disliked + state.seen + state.rejected) >= mentioned_so_far
    text = render_message(dialogue.messages[0], dialogue)
    assert "@" not in text or not any(ch.isdigit() for ch in text.split("@", 1)[1][:1])


def test_on_progress_counts_samples_over_every_variant(dialogues: list[Dialogue], mapping: dict[str, str]) -> None:
    samples = build_samples(dialogues, mapping).samples
    calls: list[tuple[int, int | None, str]] = []

    def on_progress(done: int, total: int | None, message: str) -> None:
        calls.append((done, total, message))

    result = evaluate_ranker(samples, lambda s, exclude: ["1", "2"], on_progress=on_progress)
    n_excluded, n_included = result.n_samples["excluded"], result.n_samples["included"]
    total = n_excluded + n_included
    assert [done for done, _, _ in calls] == list(range(1, total + 1))
    assert {t for _, t, _ in calls} == {total}
    assert calls[n_excluded - 1][2] == f"excluded: {n_excluded}/{n_excluded} samples"
    assert calls[-1][2] == f"included: {n_included}/{n_included} samples"
