from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from llmrec.data.dataset import Dataset
from llmrec.encode.encoder import TextEncoder, TextEncoderConfig
from llmrec.encode.finetune import METADATA_FILE, FinetuneConfig, build_pairs, finetune_encoder
from llmrec.errors import ConfigError
from llmrec.models.base import TrainOptions
from llmrec.text.build import item_texts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SOURCES = ["sequential", "co-interaction"]


def _liked_sets(data: Dataset, min_value: float | None) -> list[set[int]]:
    keep = np.ones(len(data), dtype=bool) if min_value is None else data.values >= min_value
    sets: list[set[int]] = [set() for _ in range(data.n_users)]
    for u, i in zip(data.user_idx[keep].tolist(), data.item_idx[keep].tolist(), strict=True):
        sets[u].add(i)
    return sets


@pytest.mark.parametrize("source", SOURCES)
def test_every_pair_is_backed_by_a_user_of_the_given_data(ml_sample: Dataset, source: str) -> None:
    config = FinetuneConfig(source=source, max_pairs=5000, max_per_item=50, min_support=1)
    pairs = build_pairs(ml_sample, config)
    assert len(pairs) > 500
    liked = _liked_sets(ml_sample, config.min_value)
    for a, b in pairs[:: max(1, len(pairs) // 300)]:
        assert any(a in items and b in items for items in liked), (a, b)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("source", SOURCES)
def test_removed_interactions_never_reach_a_pair(ml_sample: Dataset, source: str) -> None:
    config = FinetuneConfig(source=source, max_pairs=20_000, max_per_item=1000, min_value=None, min_support=1)
    # Hold out every interaction of 15 fairly popular items, and the last 5 events of every user.
    popular = np.argsort(-ml_sample.item_popularity, kind="stable")[20:35]
    from_end = pd.Series(np.arange(len(ml_sample))).groupby(ml_sample.user_idx).cumcount(ascending=False)
    removed = np.isin(ml_sample.item_idx, popular) | (from_end.to_numpy() < 5)
    kept = ml_sample.subset(~removed)

    everything = {frozenset(p) for p in build_pairs(ml_sample, config)}
    pairs = build_pairs(kept, config)
    assert any(set(p) & set(popular.tolist()) for p in everything)  # the held-out items do pair in full data
    assert not any(set(p) & set(popular.tolist()) for p in pairs)
    # A pair that only the removed events back (an item's held-out last events) must not appear either.
    liked = _liked_sets(kept, None)
    for a, b in pairs:
        assert any(a in items and b in items for items in liked)


def test_sequential_pairs_stay_within_the_window() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u"] * 6 + ["v"] * 3,
            "item_id": ["a", "b", "c", "d", "e", "f", "f", "a", "a"],
            "timestamp": [1, 2, 3, 4, 5, 6, 1, 2, 3],
            "value": [5.0] * 9,
        }
    )
    data = Dataset(frame, name="tiny")
    idx = {item: int(data.item_vocab.index(np.array([item]))[0]) for item in "abcdef"}
    pairs = build_pairs(data, FinetuneConfig(source="sequential", window=2, max_per_item=100, min_support=1))
    named = {frozenset(k for k, v in idx.items() if v in p) for p in pairs}
    assert frozenset("ab") in named and frozenset("ac") in named
    assert frozenset("ad") not in named  # three steps apart for u
    assert frozenset("af") in named  # v: f then a (twice: one pair, no self pair)
    assert all(a != b for a, b in pairs)
    assert len(named) == len(pairs)  # deduplicated, orientation included


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("source", SOURCES)
def test_pairs_are_distinct_capped_and_seeded(ml_sample: Dataset, source: str) -> None:
    config = FinetuneConfig(source=source, max_pairs=400, max_per_item=5, min_support=1, seed=1)
    pairs = build_pairs(ml_sample, config)
    assert len(pairs) == 400
    assert all(a != b for a, b in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    counts = Counter(i for p in pairs for i in p)
    assert max(counts.values()) <= 5
    assert build_pairs(ml_sample, config) == pairs
    assert build_pairs(ml_sample, config.model_copy(update={"seed": 2})) != pairs


def test_cap_and_cosine_weighting_keep_blockbusters_from_dominating(ml_sample: Dataset) -> None:
    top50 = set(np.argsort(-ml_sample.item_popularity, kind="stable")[:50].tolist())

    def share(**fields: object) -> float:
        pairs = build_pairs(ml_sample, FinetuneConfig(source="sequential", min_support=1, max_pairs=1000, **fields))
        return sum(a in top50 or b in top50 for a, b in pairs) / len(pairs)

    assert share(weighting="cosine", max_per_item=4) < 0.15 < 0.2 < share(weighting="support", max_per_item=10_000)
    assert share(weighting="support", max_per_item=4) < share(weighting="support", max_per_item=10_000)


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        FinetuneConfig(sorce="sequential")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        FinetuneConfig(source="random")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FinetuneConfig().batch_size = 8  # type: ignore[misc]


def test_too_few_pairs_is_a_config_error(ml_sample: Dataset, tmp_path: Path) -> None:
    one_user = ml_sample.subset(ml_sample.user_idx == ml_sample.user_idx[0])
    with pytest.raises(ConfigError, match="pair"):
        finetune_encoder(one_user, None, FinetuneConfig(), tmp_path / "m")


def test_refuses_to_write_into_an_unrelated_folder(ml_sample: Dataset, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty"):
        finetune_encoder(ml_sample, None, FinetuneConfig(max_pairs=4), tmp_path)


# -- one real (tiny) fine-tuning run, shared by the checks below ---------------------------------------------
TINY = FinetuneConfig(max_pairs=64, batch_size=16, epochs=1, lr=5e-5, warmup_ratio=0.0, train_layers=3)


@pytest.fixture(scope="module")
def tuned(ml_sample: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[TextEncoderConfig, Path]:
    out = tmp_path_factory.mktemp("finetune") / "model"
    base = TextEncoderConfig(max_seq_length=64)
    config = finetune_encoder(ml_sample, base, TINY, out, TrainOptions(seed=7, threads=1))
    return config, out


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_writes_a_loadable_sentence_transformers_folder(tuned: tuple[TextEncoderConfig, Path]) -> None:
    config, out = tuned
    assert config.model_path == str(out)
    assert config.max_seq_length == 64  # the base settings carry over
    assert (out / "modules.json").is_file()
    assert any(out.rglob("*.safetensors"))
    assert not any(out.rglob("checkpoint-*"))
    assert not any(out.rglob("*.bin"))


def test_frozen_layers_keep_their_weights(tuned: tuple[TextEncoderConfig, Path]) -> None:
    from safetensors.torch import load_file

    from llmrec.encode.encoder import default_model_path

    _, out = tuned
    before = load_file(str(default_model_path() / "model.safetensors"))
    after = load_file(str(next(out.rglob("model.safetensors"))))
    assert set(after) <= set(before) and len(after) >= len(before) - 1  # position_ids is a buffer, not saved
    for name, tensor in after.items():
        frozen = name.startswith("embeddings.") or any(f"encoder.layer.{n}." in name for n in range(3))
        if frozen:
            assert (tensor == before[name]).all(), name
    assert any(not (t == before[n]).all() for n, t in after.items() if "encoder.layer.5." in n)


def test_metadata_records_base_config_and_data(ml_sample: Dataset, tuned: tuple[TextEncoderConfig, Path]) -> None:
    _, out = tuned
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["base_model"] == "all-MiniLM-L6-v2"
    assert meta["dataset"] == "movielens-sample"
    assert meta["n_interactions"] == len(ml_sample)
    assert meta["config"]["seed"] == 7  # the run's seed (TrainOptions), recorded
    assert FinetuneConfig.model_validate(meta["config"]) == TINY.model_copy(update={"seed": 7})
    assert meta["n_pairs"] == len(build_pairs(ml_sample, TINY.model_copy(update={"seed": 7}))) == 64
    assert meta["steps"] >= 4


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_fine_tuned_embeddings_differ_and_pull_pairs_together(
    ml_sample: Dataset, tuned: tuple[TextEncoderConfig, Path]
) -> None:
    config, _ = tuned
    pairs = np.array(build_pairs(ml_sample, TINY.model_copy(update={"seed": 7})))
    texts = item_texts(ml_sample)
    items = np.unique(pairs)
    position = {int(item): n for n, item in enumerate(items)}
    subset = [texts[i] for i in items]
    before = TextEncoder(TextEncoderConfig(max_seq_length=64)).encode(subset)
    after = TextEncoder(config).encode(subset)
    assert after.shape == before.shape
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-4)
    a = np.array([position[int(i)] for i in pairs[:, 0]])
    b = np.array([position[int(i)] for i in pairs[:, 1]])
    cos_before = float(np.mean(np.sum(before[a] * before[b], axis=1)))
    cos_after = float(np.mean(np.sum(after[a] * after[b], axis=1)))
    assert cos_after > cos_before + 0.01
