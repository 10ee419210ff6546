"""`llmrec serve` in a subprocess on a free loopback port: health, a recommendations call, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store

ADMIN_KEY = "cli-admin-key-123456"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_llmrec_serve_answers_health_and_recommendations(tmp_path: Path, ml_sample: Dataset) -> None:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(db).ingest(ml_sample, name="sample")
    port = _free_port()
    env = os.environ | {"LLMREC_ADMIN_KEY": ADMIN_KEY, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    args = ["serve", "--port", str(port), "--dataset", "sample", "--db", db, "--retriever", "popular"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmrec.cli", *args], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                health = httpx.get(f"{base}/v1/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert health.status_code == 200
        assert health.json()["dataset"] == "sample" and health.json()["pipelines"] == ["popular"]  # warmed up
        user = str(ml_sample.user_vocab.ids[0])
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        recs = httpx.get(f"{base}/v1/users/{user}/recommendations", params={"k": 5}, headers=headers, timeout=30)
        assert recs.status_code == 200, recs.text
        items = recs.json()["items"]
        assert len(items) == 5 and all(i["item_id"] in ml_sample.item_vocab for i in items)
        assert httpx.get(f"{base}/v1/users/{user}/recommendations", timeout=30).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "Shutting down" in log.read_text() or "Finished server process" in log.read_text()
