from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from llmrec.cli import app
from llmrec.data.store import Store
from llmrec.data.synth import SynthConfig, synthesize, write_synth
from llmrec.errors import ConfigError


def test_same_seed_same_frames_and_another_seed_differs() -> None:
    a = synthesize(users=200, items=300, interactions=5000, seed=3)
    b = synthesize(users=200, items=300, interactions=5000, seed=3)
    c = synthesize(users=200, items=300, interactions=5000, seed=4)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert not a.interactions["item_id"].equals(c.interactions["item_id"])


def test_shapes_counts_and_every_user_active() -> None:
    config = SynthConfig(users=500, items=1000, interactions=20_000, seed=1, days=30)
    data = synthesize(config)
    inter = data.interactions
    # Repeats of an item at the same second collapse into one event (the store's key); they are rare.
    assert 19_900 <= len(inter) <= 20_000
    assert inter["user_id"].nunique() == 500
    assert len(data.items) == 1000 and data.items["title"].is_unique
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "value", "event"]
    assert inter["timestamp"].is_monotonic_increasing
    assert inter["timestamp"].min() >= config.end - 30 * 86_400 and inter["timestamp"].max() <= config.end
    assert not inter.duplicated(["user_id", "item_id", "timestamp"]).any()
    dataset = data.to_dataset()
    assert (dataset.n_users, dataset.n_items) == (500, 1000)


def test_popularity_is_a_power_law() -> None:
    data = synthesize(users=2000, items=5000, interactions=200_000, seed=0, topic_focus=0.0)
    counts = np.sort(data.interactions["item_id"].value_counts().to_numpy())[::-1]
    top = counts[: len(counts) // 100].sum() / counts.sum()
    assert top > 0.25  # the top 1% of items take a quarter of the events (uniform would be ~1%)
    ranks = np.arange(1, 201)
    slope = np.polyfit(np.log(ranks), np.log(counts[:200]), 1)[0]
    assert -1.3 < slope < -0.7  # Zipf exponent 1 on the head
    flat = synthesize(users=2000, items=5000, interactions=200_000, seed=0, popularity_exponent=0.0, topic_focus=0.0)
    flat_counts = flat.interactions["item_id"].value_counts().to_numpy()
    assert flat_counts.max() < 5 * flat_counts.mean()


def test_sessions_keep_to_a_topic_and_texts_name_it() -> None:
    data = synthesize(users=300, items=2000, interactions=30_000, seed=2, topic_focus=1.0, session_length=10)
    topic = data.items.set_index("item_id")["topic"]
    inter = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    same_user = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
    gap = np.diff(inter["timestamp"].to_numpy())
    within = same_user & (gap < 600)  # consecutive events of one user minutes apart: mostly one session
    topics = topic.loc[inter["item_id"]].to_numpy()
    agree = (topics[1:] == topics[:-1])[within].mean()
    assert agree > 0.8  # 20 topics: 5% by chance
    first = data.items.iloc[0]
    assert str(first["title"]) and "A story of" in str(first["text"])
    same_topic = data.items[data.items["topic"] == first["topic"]]["text"].str.split(",").str[0]
    assert same_topic.nunique() == 1  # items of a topic share its words


def test_invalid_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="topics"):
        synthesize(users=10, items=5, interactions=100, topics=20)
    with pytest.raises(ConfigError, match="either"):
        synthesize(SynthConfig(), users=3)


def test_written_files_ingest_as_they_are(tmp_path: Path) -> None:
    paths = write_synth(SynthConfig(users=50, items=80, interactions=600, seed=5), tmp_path / "out")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.ingest_files("synth", paths["interactions"], items_path=paths["items"], users_path=paths["users"])
    loaded = store.load("synth")
    data = synthesize(users=50, items=80, interactions=600, seed=5)
    assert len(loaded) == len(data.interactions) and loaded.n_items == 80
    assert sorted(loaded.items["title"]) == sorted(data.items["title"])


def test_cli_writes_parquet(tmp_path: Path) -> None:
    out = tmp_path / "p"
    args = [
        "synth",
        "--users",
        "40",
        "--items",
        "60",
        "--interactions",
        "500",
        "--out",
        str(out),
        "--format",
        "parquet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out / "interactions.parquet")
    assert len(frame) > 490 and (out / "synth.json").is_file()
    bad = CliRunner().invoke(app, ["synth", "--out", str(out), "--format", "xml"])
    assert bad.exit_code == 2 and "csv or parquet" in bad.output
