"""Concurrency, on SQLite and PostgreSQL: parallel chat turns, deletes during turns, first requests after start,
sessions of two datasets in one store, and other routes answering while a slow request runs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from api_support import ADMIN, Api, serve_config, tiny_dataset
from fastapi.testclient import TestClient

from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app

THREADS = 8


@pytest.fixture
def make_tiny(store_url: str) -> Iterator[Callable[..., Api]]:
    """APIs over fresh copies of the tiny dataset (deleted afterwards: the PostgreSQL database is shared)."""
    names: list[str] = []
    store = Store(store_url)

    def make(name: str | None = None, **overrides: object) -> Api:
        names.append(name or f"tiny-{uuid.uuid4().hex[:12]}")
        data = tiny_dataset(names[-1])
        store.ingest(data, name=names[-1])
        service = RecommenderService(store, serve_config(names[-1], **overrides))
        return Api(TestClient(create_app(service), raise_server_exceptions=False), service, data)

    yield make
    for name in names:
        store.delete_dataset(name)
    store.close()


def _parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once (a barrier releases them together); their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_concurrent_first_chat_requests_build_the_chat_once(
    make_tiny: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_tiny()
    builds: list[str] = []
    fits: list[int] = []
    build_chat = api.service._build_chat
    from llmrec.models.content import Content

    fit = Content.fit

    def counted_build(snap: Any) -> Any:
        builds.append(threading.current_thread().name)
        time.sleep(0.3)  # a wide window: without the lock, every waiting request would build its own
        return build_chat(snap)

    def counted_fit(self: Content, *args: Any, **kwargs: Any) -> Content:
        fits.append(1)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(api.service, "_build_chat", counted_build)
    monkeypatch.setattr(Content, "fit", counted_fit)
    answers = _parallel([lambda: api.client.post("/v1/chat/sessions", json={}, headers=ADMIN)] * THREADS)
    assert [a.status_code for a in answers] == [201] * THREADS, [a.text for a in answers]
    assert len(builds) == 1 and len(fits) == 1, (builds, fits)
    # A refit makes a new snapshot: the next chat request builds once more, and only once.
    assert api.client.post("/v1/admin/refit", headers=ADMIN).status_code == 200
    _parallel([lambda: api.client.post("/v1/chat/sessions", json={}, headers=ADMIN)] * THREADS)
    assert len(builds) == 2 and len(fits) == 2, (builds, fits)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_other_routes_answer_while_a_slow_request_runs(
    make_tiny: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_tiny()
    api.service.pipeline()  # the list routes are ready; only the chat is not
    build_chat = api.service._build_chat
    started = threading.Event()

    def slow_build(snap: Any) -> Any:
        started.set()
        time.sleep(3.0)
        return build_chat(snap)

    monkeypatch.setattr(api.service, "_build_chat", slow_build)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(api.client.post, "/v1/chat/sessions", json={}, headers=ADMIN)
        assert started.wait(10)
        times = []
        for path in ("/v1/items", "/v1/users/1/recommendations", "/v1/users/1", "/v1/health"):
            begun = time.perf_counter()
            response = api.client.get(path, headers=ADMIN)
            times.append(time.perf_counter() - begun)
            assert response.status_code == 200, response.text
        assert not slow.done()  # the slow request was still running while the others answered
        assert slow.result().status_code == 201
    assert max(times) < 1.0, times


def test_parallel_turns_on_one_session_keep_every_turn(make_tiny: Callable[..., Api]) -> None:
    api = make_tiny(chat_text_search=False)
    key = api.user_key("1")
    sid = api.client.post("/v1/chat/sessions", json={}, headers=key).json()["session_id"]
    url = f"/v1/chat/sessions/{sid}/reply"
    texts = [f"something from the {1900 + 10 * i}s" for i in range(THREADS)]
    answers = _parallel([lambda t=t: api.client.post(url, json={"text": t}, headers=key) for t in texts])
    assert [a.status_code for a in answers] == [200] * THREADS, [a.text for a in answers]
    turns = api.client.get(f"/v1/chat/sessions/{sid}", headers=key).json()["turns"]
    assert len(turns) == 2 * THREADS
    assert sorted(t["text"] for t in turns if t["role"] == "user") == sorted(texts)
    assert [t["role"] for t in turns] == ["user", "assistant"] * THREADS  # each answer right after its question


def test_a_session_deleted_during_turns_stays_deleted(make_tiny: Callable[..., Api]) -> None:
    api = make_tiny(chat_text_search=False)
    for _trial in range(3):
        sid = api.client.post("/v1/chat/sessions", json={"user_id": "2"}, headers=ADMIN).json()["session_id"]
        url = f"/v1/chat/sessions/{sid}"
        calls: list[Callable[[], Any]] = [
            lambda url=url: api.client.post(f"{url}/reply", json={"text": "a drama please"}, headers=ADMIN)
        ] * 4
        calls.insert(2, lambda url=url: api.client.delete(url, headers=ADMIN))
        answers = _parallel(calls)
        assert answers[2].status_code == 200, answers[2].text
        assert {a.status_code for a in answers} <= {200, 404}, [a.text for a in answers]
        assert api.client.get(url, headers=ADMIN).status_code == 404
        assert api.client.post(f"{url}/reply", json={"text": "hi"}, headers=ADMIN).status_code == 404


def test_sessions_belong_to_their_dataset(make_tiny: Callable[..., Api]) -> None:
    first, second = make_tiny(), make_tiny()
    theirs = second.client.post("/v1/chat/sessions", json={"user_id": "1"}, headers=ADMIN).json()["session_id"]
    assert second.client.get(f"/v1/chat/sessions/{theirs}", headers=second.user_key("1")).status_code == 200
    # User "1" of the first dataset is another person: the session id alone must not open it.
    mine = first.user_key("1")
    for method, path, body in (
        ("GET", "", None),
        ("POST", "/reply", {"text": "hello"}),
        ("DELETE", "", None),
    ):
        response = first.client.request(method, f"/v1/chat/sessions/{theirs}{path}", json=body, headers=mine)
        assert response.status_code == 404, (method, path, response.text)
    assert first.client.get(f"/v1/chat/sessions/{theirs}", headers=ADMIN).status_code == 404
    assert len(second.client.get(f"/v1/chat/sessions/{theirs}", headers=ADMIN).json()["turns"]) == 0


def test_parallel_key_creation_and_writes(make_tiny: Callable[..., Api]) -> None:
    api = make_tiny()
    keys = _parallel(
        [lambda u=u: api.client.post("/v1/keys", json={"user_id": str(u)}, headers=ADMIN) for u in range(1, 6)] * 2
    )
    assert [k.status_code for k in keys] == [201] * 10, [k.text for k in keys]
    assert len({k.json()["key_id"] for k in keys}) == 10
    rows = [{"user_id": "1", "item_id": "3", "timestamp": 10_000 + i, "event": "view"} for i in range(THREADS)]
    answers = _parallel(
        [lambda r=r: api.client.post("/v1/interactions", json={"interactions": [r]}, headers=ADMIN) for r in rows]
    )
    assert [a.status_code for a in answers] == [200] * THREADS, [a.text for a in answers]
    stored = api.client.get("/v1/users/1/interactions", headers=ADMIN).json()["interactions"]
    assert sum(1 for r in stored if r["event"] == "view") == THREADS
