"""`llmrec serve` in a subprocess on a free loopback port: health, a recommendations call, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store

ADMIN_KEY = "cli-admin-key-123456"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(tmp_path: Path, args: list[str]) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """``llmrec serve ARGS`` on a free loopback port until it answers health; yields (base URL, log, process)."""
    port = _free_port()
    env = os.environ | {"LLMREC_ADMIN_KEY": ADMIN_KEY, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmrec.cli", "serve", "--port", str(port), *args], env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{base}/v1/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield base, log, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises SIGTERM once stopped
    assert "Shutting down" in log.read_text() or "Finished server process" in log.read_text()


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_llmrec_serve_answers_health_and_recommendations(tmp_path: Path, ml_sample: Dataset) -> None:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(db).ingest(ml_sample, name="sample")
    with _serving(tmp_path, ["--dataset", "sample", "--db", db, "--retriever", "popular"]) as (base, _, _proc):
        health = httpx.get(f"{base}/v1/health", timeout=2)
        assert health.status_code == 200
        assert health.json()["dataset"] == "sample" and health.json()["pipelines"] == ["popular"]  # warmed up
        user = str(ml_sample.user_vocab.ids[0])
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        recs = httpx.get(f"{base}/v1/users/{user}/recommendations", params={"k": 5}, headers=headers, timeout=30)
        assert recs.status_code == 200, recs.text
        items = recs.json()["items"]
        assert len(items) == 5 and all(i["item_id"] in ml_sample.item_vocab for i in items)
        assert httpx.get(f"{base}/v1/users/{user}/recommendations", timeout=30).status_code == 401


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_llmrec_serve_starts_from_a_trained_model(tmp_path: Path, ml_sample: Dataset) -> None:
    from typer.testing import CliRunner

    from llmrec.cli import app

    db = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(db).ingest(ml_sample, name="sample")
    model = tmp_path / "model"
    trained = CliRunner().invoke(app, ["train", "--dataset", "sample", "--db", db, "--retriever", "itemknn",
                                       "--out", str(model)])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    with _serving(tmp_path, ["--model", str(model), "--db", db]) as (base, log, _proc):
        health = httpx.get(f"{base}/v1/health", timeout=2).json()
        assert health["dataset"] == "sample" and health["pipelines"] == ["itemknn"]
        assert f"loaded model from {model}" in log.read_text() and "no refit" in log.read_text()
        user = str(ml_sample.user_vocab.ids[0])
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        recs = httpx.get(f"{base}/v1/users/{user}/recommendations", params={"k": 5}, headers=headers, timeout=30)
        assert recs.status_code == 200, recs.text
        assert recs.json()["retriever"] == "itemknn" and len(recs.json()["items"]) == 5


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_llmrec_serve_stops_within_10_s_while_a_slow_request_runs(tmp_path: Path, ml_sample: Dataset) -> None:
    import threading

    db = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(db).ingest(ml_sample, name="sample")
    args = ["--dataset", "sample", "--db", db, "--retriever", "popular", "--no-warm"]
    with _serving(tmp_path, args) as (base, log, proc):
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        answers: list[object] = []

        def slow() -> None:  # the first chat request embeds the catalogue (3,068 texts): many seconds of work
            try:
                answers.append(httpx.post(f"{base}/v1/chat/sessions", json={}, headers=headers, timeout=120))
            except httpx.HTTPError as exc:
                answers.append(exc)

        thread = threading.Thread(target=slow, daemon=True)
        thread.start()
        time.sleep(2.0)
        assert not answers, answers  # still running when the stop comes
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - stopped
        assert took < 10, (took, log.read_text()[-3000:])
