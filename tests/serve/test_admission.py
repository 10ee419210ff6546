"""Admission control: a bounded number of requests at work, a bounded wait for a slot, a deadline per answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from llmrec.serve.admission import Admission

DONE = threading.Event()


def _slow(request: Request) -> JSONResponse:  # a sync route: runs in a thread, as the API's blocking routes do
    time.sleep(float(request.query_params.get("s", "0.6")))
    DONE.set()
    return JSONResponse({"ok": True})


def _stream(request: Request) -> StreamingResponse:
    def pieces() -> Iterator[str]:
        for i in range(3):
            time.sleep(0.2)
            yield f"{i}\n"

    return StreamingResponse(pieces(), media_type="text/plain")


def _app(**bounds: float) -> Admission:
    routes = [Route("/v1/slow", _slow), Route("/v1/stream", _stream), Route("/v1/health", _slow)]
    return Admission(Starlette(routes=routes), **bounds)  # type: ignore[arg-type]


def _client(app: Admission) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


@pytest.mark.anyio
async def test_no_free_slot_in_time_is_a_503_with_retry_after_and_health_still_answers() -> None:
    app = _app(max_inflight=1, queue_timeout_s=0.2, request_timeout_s=30)
    async with _client(app) as client:
        first = asyncio.ensure_future(client.get("/v1/slow"))
        await asyncio.sleep(0.1)
        refused = await client.get("/v1/slow")
        health = await client.get("/v1/health", params={"s": "0"})
        assert (await first).status_code == 200
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "overloaded"
    assert health.status_code == 200  # exempt: a health check answers under overload


@pytest.mark.anyio
async def test_a_late_answer_is_a_504_and_the_abandoned_work_keeps_its_slot() -> None:
    DONE.clear()
    app = _app(max_inflight=1, queue_timeout_s=0.1, request_timeout_s=0.2)
    async with _client(app) as client:
        late = await client.get("/v1/slow", params={"s": "0.8"})
        assert late.status_code == 504 and late.json()["error"]["type"] == "timeout"
        assert app.inflight == 1 and not DONE.is_set()  # the thread still works, and still counts
        busy = await client.get("/v1/slow", params={"s": "0"})
        assert busy.status_code == 503
        for _ in range(50):
            if app.inflight == 0:
                break
            await asyncio.sleep(0.05)
        assert DONE.is_set() and app.inflight == 0
        assert (await client.get("/v1/slow", params={"s": "0"})).status_code == 200


@pytest.mark.anyio
async def test_a_started_stream_is_never_cut() -> None:
    app = _app(max_inflight=2, queue_timeout_s=1, request_timeout_s=0.3)
    async with _client(app) as client:
        answer = await client.get("/v1/stream")
    assert answer.status_code == 200 and answer.text == "0\n1\n2\n"
