"""The one-pass letter reranker: its training examples read the train split only, its scores are one pass over the
letter tokens, a tuned adapter round-trips through the registry with its card and reranks through the Pipeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmrec.adapt.instructions import InstructionExample
from llmrec.adapt.letters import LetterDataConfig, build_letter_examples, letter_losses
from llmrec.adapt.registry import read_metadata, resolve_adapter
from llmrec.data.dataset import Dataset
from llmrec.data.splits import Split, leave_last_out
from llmrec.errors import ConfigError
from llmrec.llm.base import LogLik
from llmrec.llm.rerank import LETTERS, LMReranker, RerankConfig
from required import require

DATA = LetterDataConfig(candidates=4, targets_per_user=2, history=2, inserted_share=1.0, seed=3)


@pytest.fixture(scope="module")
def split(ml_sample: Dataset) -> Split:
    return leave_last_out(ml_sample)


@pytest.fixture(scope="module")
def examples(split: Split) -> list[Any]:
    return build_letter_examples(split, DATA, rerank=RerankConfig(method="letters", history=2))


def test_letter_examples_come_from_the_train_split_only(split: Split, examples: list[Any]) -> None:
    """No target is a validation or test event, and every target is earlier than its user's validation event."""
    held_out = {
        (str(u), str(i))
        for part in (split.valid, split.test)
        for u, i in zip(part.user_vocab.ids[part.user_idx], part.item_vocab.ids[part.item_idx], strict=True)
    }
    first_held = {
        str(split.valid.user_vocab.ids[u]): int(t)
        for u, t in zip(split.valid.user_idx, split.valid.timestamps, strict=True)
    }
    train_events = {
        (str(u), str(i))
        for u, i in zip(
            split.train.user_vocab.ids[split.train.user_idx],
            split.train.item_vocab.ids[split.train.item_idx],
            strict=True,
        )
    }
    assert len(examples) > 20
    for ex in examples:
        assert (ex.user_id, ex.item_id) in train_events
        assert (ex.user_id, ex.item_id) not in held_out
        assert ex.timestamp <= first_held.get(ex.user_id, ex.timestamp)
        assert ex.target in LETTERS[: DATA.candidates] and ex.task == "letters"
        assert f"{ex.target}. " in ex.messages[-1]["content"]


def test_a_leaked_test_event_would_be_caught(split: Split, examples: list[Any]) -> None:
    """The check above is not vacuous: with the test events put back into train they show up as targets."""
    leaky = Split("leave-last-out", split.train.union(split.test), split.valid, split.test)
    test_pairs = {
        (str(u), str(i))
        for u, i in zip(
            split.test.user_vocab.ids[split.test.user_idx], split.test.item_vocab.ids[split.test.item_idx], strict=True
        )
    }
    leaked = build_letter_examples(leaky, DATA, rerank=RerankConfig(method="letters", history=2))
    assert any((ex.user_id, ex.item_id) in test_pairs for ex in leaked)
    assert not any((ex.user_id, ex.item_id) in test_pairs for ex in examples)


class _LetterLM:
    """Puts all its mass on the letter of the candidate that repeats the user's last title."""

    model_id = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str], dict[str, Any]]] = []

    def loglik(self, prompt: Any, continuations: list[str], end_of_turn: bool | None = None) -> LogLik:
        self.calls.append((prompt, continuations, {"end_of_turn": end_of_turn}))
        text = prompt[-1]["content"]
        last = text.split("</history>")[0].strip().splitlines()[-1].removeprefix("- ")
        obvious = next(line[0] for line in text.splitlines() if line[1:3] == ". " and line[3:] == last)
        total = np.array([0.0 if c == obvious else -9.0 for c in continuations])
        return LogLik(total, np.ones(len(continuations), dtype=np.int64))

    def generate(self, prompt: Any, **kwargs: Any) -> str:
        raise NotImplementedError

    def stream(self, prompt: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_letters_scores_every_candidate_in_one_pass_and_ranks_the_obvious_one_first() -> None:
    lm = _LetterLM()
    reranker = LMReranker(lm, RerankConfig(method="letters"))  # type: ignore[arg-type]
    scores = reranker.score(["Heat", "Alien"], ["Toy Story", "Jaws", "Alien", "Fargo"])
    assert int(np.argmax(scores)) == 2
    assert len(lm.calls) == 1  # one forward pass for the whole list
    assert lm.calls[0][1] == ["A", "B", "C", "D"] and lm.calls[0][2]["end_of_turn"] is False


def test_letters_with_the_packaged_model_are_next_token_log_probabilities(lm: Any) -> None:
    reranker = LMReranker(lm, RerankConfig(method="letters"))
    scores = reranker.score(["Toy Story", "Finding Nemo"], ["Toy Story 2", "Schindler's List", "Se7en"])
    assert scores.shape == (3,) and np.all(scores < 0)
    assert np.logaddexp.reduce(scores) <= 1e-6  # three outcomes of one distribution


def _at(example: InstructionExample, position: int) -> InstructionExample:
    return dataclasses.replace(example, label=float(position), target=LETTERS[position])


def test_the_position_prior_is_learnt_from_train_and_scored_on_valid(examples: list[Any]) -> None:
    first = [_at(examples[0], 0)] * 6 + [_at(examples[0], 1)] * 2  # add-one counts over 4 letters: 7, 3, 1, 1
    losses = letter_losses(first, [_at(examples[1], 0), _at(examples[1], 3)], candidates=4)
    assert losses["uniform"] == pytest.approx(np.log(4))
    assert losses["position_prior"] == pytest.approx(-(np.log(7 / 12) + np.log(1 / 12)) / 2)
    assert "model" not in losses
    with pytest.raises(ConfigError, match="label"):
        letter_losses(first, [dataclasses.replace(examples[1], label=4.0)], candidates=4)


def test_the_model_letter_loss_is_its_next_token_distribution(examples: list[Any], lm: Any) -> None:
    short = sorted(examples, key=lambda e: len(e.messages[-1]["content"]))[:2]
    losses = letter_losses(examples, short, candidates=4, lm=lm)
    assert losses["model"] > 0
    # Renormalised over the four shown letters, the same log-probabilities can only lose less.
    assert 0 < losses["model_letters"] <= losses["model"]


@pytest.mark.slow  # one LoRA step on the packaged model
def test_a_tuned_letter_adapter_round_trips_with_its_card_and_reranks_in_the_pipeline(
    examples: list[Any], ml_sample: Dataset, tmp_path: Path, lm: Any
) -> None:
    require("peft")
    from llmrec.adapt.lora import LoraTuneConfig, tune_lora
    from llmrec.llm.local import LocalLM, LocalLMConfig
    from llmrec.pipeline import Pipeline, PipelineConfig

    config = LoraTuneConfig(max_steps=1, batch_size=1, r=2, eval_every=0, patience=None, threads=1, max_seconds=600)
    card = {"data": DATA.model_dump(), "seed": 3}
    short = min(examples[:8], key=lambda e: len(e.messages[-1]["content"]))
    result = tune_lora([short], name="letters-test", config=config, adapter_dir=tmp_path, extra_metadata={"card": card},
                       lm=LocalLMConfig(threads=1))  # fmt: skip
    path = resolve_adapter("letters-test", tmp_path)
    assert path == result.path
    meta = read_metadata(path)
    assert meta["card"] == card and meta["steps"] == 1 and meta["wall_s"] > 0
    tuned = LocalLM(LocalLMConfig(threads=1, adapter=str(path)))
    pipe = Pipeline(
        PipelineConfig(candidates=4, rerank=RerankConfig(method="letters", history=2, weight=1.0)), lm=tuned
    )
    pipe.fit(ml_sample)
    user = ml_sample.user_vocab.ids[0]
    batch = pipe.rerank_scores([user])
    assert batch.lm_scores is not None and np.all(np.isfinite(batch.lm_scores[0]))
    recs = pipe.recommend([user], k=4)
    assert set(recs.items[0]) == set(batch.retrieved.items[0])  # a permutation of the retrieved candidates


def test_more_candidates_than_letters_is_a_clear_error(examples: list[Any]) -> None:
    reranker = LMReranker(_LetterLM(), RerankConfig(method="letters"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at most 26"):
        reranker.score(["Heat"], [f"Film {i}" for i in range(27)])
    with pytest.raises(ConfigError, match="at most 26"):  # the same check guards the loss report
        letter_losses(examples, examples[:1], candidates=27, lm=_LetterLM())  # type: ignore[arg-type]
