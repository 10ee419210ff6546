"""Two services on one store and one artifact folder (as two workers): one refit, published once, reaches both.

In one process for speed; ``test_workers.py`` does the same with two real ``llmrec serve`` processes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from api_support import serve_config

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.errors import UnknownIdError
from llmrec.serve import RecommenderService
from llmrec.serve.results import RecommendationOptions


@pytest.fixture
def pair(store_url: str, ml_sample: Dataset, tmp_path: Path) -> Iterator[tuple[RecommenderService, ...]]:
    """Two services of one fresh dataset, each with its own Store object (as separate processes have)."""
    name = f"workers-{uuid.uuid4().hex[:10]}"
    setup = Store(store_url)
    setup.ingest(ml_sample, name=name)
    stores = [Store(store_url), Store(store_url)]
    config = serve_config(name, artifacts=str(tmp_path / "artifacts"), version_poll_s=0.0, keep_versions=2)
    yield tuple(RecommenderService(s, config) for s in stores)
    setup.delete_dataset(name)
    for store in (setup, *stores):
        store.close()


def _items(service: RecommenderService, user: str) -> list[str]:
    return [it.item_id for it in service.recommend(user, RecommendationOptions(k=5)).items]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_one_refit_reaches_the_other_worker_by_loading(pair: tuple[RecommenderService, ...]) -> None:
    a, b = pair
    a.pipeline()  # the first worker fits and publishes version 1
    assert a.status().model_version == 1
    assert b.snapshot().version == 1 and b.snapshot().saved  # the second one loaded it: nothing fitted
    users = [str(u) for u in a.data.user_vocab.ids[:3]]
    assert all(_items(a, u) == _items(b, u) for u in users)

    # A rarely seen item becomes the most popular once refitted (others' interactions: not "recent" to users[0]).
    item = str(a.data.item_vocab.ids[-1])
    fans = [f"fan-{i}" for i in range(200)]
    a.ingest_interactions(pd.DataFrame({"user_id": fans, "item_id": item, "timestamp": 1, "value": 5.0}))
    before = _items(b, users[0])
    assert item not in before

    report = a.refit()
    assert report.version == 2
    assert b.status().model_version == 1  # not yet: b switches in the background...
    deadline = time.monotonic() + 10
    while b.status().model_version != 2:  # ...after it noticed (every request checks; here poll interval 0)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = _items(b, users[0])
    assert after[0] == item and after == _items(a, users[0])
    assert b.snapshot().saved  # loaded, not refitted


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_concurrent_refits_publish_one_version_each_and_prune(
    pair: tuple[RecommenderService, ...], tmp_path: Path
) -> None:
    a, b = pair
    a.pipeline()
    b.pipeline()
    errors: list[BaseException] = []

    def refit(service: RecommenderService) -> None:
        try:
            service.refit()
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=refit, args=(s,)) for s in (a, b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert a.sync() == b.sync() == 4
    versions = a.store.model_versions(a.dataset)
    assert [v.version for v in versions] == [4, 3]  # keep_versions=2: 1 and 2 pruned, rows and folders
    folders = sorted(p.name for p in next((tmp_path / "artifacts").iterdir()).iterdir())
    assert folders == ["v000003", "v000004"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_user_deleted_through_one_worker_is_unknown_to_the_other_at_once(
    pair: tuple[RecommenderService, ...],
) -> None:
    a, b = pair
    a.pipeline()
    user = str(b.data.user_vocab.ids[0])
    assert b.recommend(user).known_user
    a.forget_user(user, actor="admin")
    assert not b.user_exists(user)
    with pytest.raises(UnknownIdError):
        b.recommend(user)
    with pytest.raises(UnknownIdError):
        b.explain(user, [str(b.data.item_vocab.ids[0])])
    # The next refit prunes every older version, which still holds the deleted user's data.
    b.refit()
    assert [v.version for v in a.store.model_versions(a.dataset)] == [2]


def test_an_audit_mark_counts_deletions_committed_out_of_id_order_as_later() -> None:
    from llmrec.data.store import AuditMark

    mark = AuditMark(10, (8,))  # id 8 was handed out but not committed when the data was read
    assert mark.covers(9) and mark.covers(7)
    assert not mark.covers(8) and not mark.covers(11)
    assert mark.low == 7
