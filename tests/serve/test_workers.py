"""Two real `llmrec serve` processes on one store and one artifact folder: one refit reaches both.

Each server is its own process on its own loopback port (as two nodes would be), sharing a SQLite file and an
artifact folder. The test stops exactly the processes it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store

ADMIN_KEY = "workers-admin-key-123456"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextmanager
def _server(tmp_path: Path, name: str, args: list[str]) -> Iterator[tuple[str, Path]]:
    """``llmrec serve ARGS`` on a free loopback port (uvicorn picks it: port 0) until it answers health."""
    env = os.environ | {"LLMREC_ADMIN_KEY": ADMIN_KEY, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmrec.cli", "serve", *args], env=env, stdout=out, stderr=out)
    try:
        yield _wait_until_up(proc, log), log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_until_up(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        for line in log.read_text(errors="replace").splitlines():
            if "Uvicorn running on http://" in line:  # the log scrubber writes the address as [IP]
                base = "http://127.0.0.1:" + line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1]
                try:
                    httpx.get(f"{base}/v1/health", timeout=2)
                    return base
                except httpx.TransportError:
                    break
        time.sleep(0.2)
    raise AssertionError(f"the server did not start within 60 s:\n{log.read_text()}")


def _recs(base: str, user: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/users/{user}/recommendations", params={"k": 5}, headers=HEADERS, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_one_refit_reaches_both_llmrec_serve_workers(tmp_path: Path, ml_sample: Dataset) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    Store(db).ingest(ml_sample, name="sample")
    args = ["--dataset", "sample", "--db", db, "--retriever", "popular", "--artifacts", str(tmp_path / "models")]
    args += ["--port", "0", "--no-warm", "--log-level", "info"]
    with ExitStack() as stack:
        (a, _), (b, b_log) = (stack.enter_context(_server(tmp_path, n, args)) for n in ("a", "b"))
        user, other = (str(u) for u in ml_sample.user_vocab.ids[:2])

        # First requests at once: one worker fits and publishes version 1, the other waits for it and loads it.
        with ThreadPoolExecutor(2) as pool:
            first_a, first_b = pool.map(lambda base: _recs(base, user), (a, b))
        assert first_a["model_version"] == first_b["model_version"] == 1
        assert first_a["items"] == first_b["items"]

        # Interactions stored through b make an item that is not on the list the most popular one...
        item = str(ml_sample.item_vocab.ids[-1])
        assert item not in [i["item_id"] for i in first_b["items"]]
        rows = [{"user_id": f"fan-{i}", "item_id": item, "timestamp": 1, "value": 5} for i in range(200)]
        stored = httpx.post(f"{b}/v1/interactions", json={"interactions": rows}, headers=HEADERS, timeout=30)
        assert stored.status_code == 200, stored.text

        # ...once one refit, on a, has published version 2 and b has switched to it.
        refit = httpx.post(f"{a}/v1/admin/refit", headers=HEADERS, timeout=120)
        assert refit.status_code == 200, refit.text
        assert refit.json()["version"] == 2
        deadline = time.monotonic() + 20
        while httpx.get(f"{b}/v1/health", timeout=5).json()["model_version"] != 2:
            assert time.monotonic() < deadline, b_log.read_text()
            time.sleep(0.2)
        after_a, after_b = _recs(a, user), _recs(b, user)
        assert after_a["model_version"] == after_b["model_version"] == 2
        assert after_b["items"][0]["item_id"] == item
        assert after_b["items"] == after_a["items"]
        assert "switched sample to model version 2" in b_log.read_text()  # loaded, not refitted

        # A user deleted through a is unknown to b at once (its model still holds them until the next refit).
        assert _recs(b, other)["known_user"]
        deleted = httpx.delete(f"{a}/v1/users/{other}", headers=HEADERS, timeout=30)
        assert deleted.status_code == 200, deleted.text
        gone = httpx.get(f"{b}/v1/users/{other}/recommendations", headers=HEADERS, timeout=30)
        assert gone.status_code == 404, gone.text


@pytest.mark.slow  # ~30 s on 2 cores: uvicorn starts each worker as a fresh interpreter
def test_llmrec_serve_workers_2_serve_one_version_after_a_refit(tmp_path: Path, ml_sample: Dataset) -> None:
    """``--workers 2`` (uvicorn's workers, built from the environment): every answer after a refit is version 2."""
    db = f"sqlite:///{tmp_path / 'pool.db'}"
    Store(db).ingest(ml_sample, name="sample")
    args = ["--dataset", "sample", "--db", db, "--retriever", "popular", "--workers", "2", "--port", "0"]
    with _server(tmp_path, "pool", [*args, "--no-warm"]) as (base, log):
        user = str(ml_sample.user_vocab.ids[0])
        assert {_recs(base, user)["model_version"] for _ in range(4)} == {1}
        assert (tmp_path / "pool-models").is_dir()  # the default artifact folder, beside the SQLite file
        assert httpx.post(f"{base}/v1/admin/refit", headers=HEADERS, timeout=120).json()["version"] == 2
        time.sleep(1.2)  # past the poll interval: the next request of each worker notices version 2
        for _ in range(6):
            httpx.get(f"{base}/v1/health", timeout=5)
        deadline = time.monotonic() + 20
        while {_recs(base, user)["model_version"] for _ in range(6)} != {2}:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert log.read_text().count("Started server process") == 2
