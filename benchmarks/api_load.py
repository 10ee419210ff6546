"""Load on the HTTP API: locust (headless, as a library) against a real ``llmrec serve`` process on loopback.

Scenarios, each bounded in time and measured only after the server is warm (the default pipeline fitted at
start-up, the rerank pipeline and the language model loaded by warm-up requests that are not counted):

- ``recs``: ``GET /v1/users/{id}/recommendations`` without LM rerank, ``--users`` (50) concurrent users, each
  waiting ``--wait-min``..``--wait-max`` seconds (think time) between requests. Target: p95 <= 20 ms, 0 errors.
- ``capacity``: the same request with no think time: the requests/s the server sustains (latency here is
  queueing, not a target).
- ``rerank``: the same with ``rerank=true`` (the local language model reranks the retriever's candidates; seconds
  per request on a CPU, so ``--rerank-users`` (2) users).
- ``chat``: ``POST /v1/chat/sessions`` then turns ``POST /v1/chat/sessions/{id}/messages`` answered as
  server-sent events (``state``, one ``item`` per recommendation, ``done``); reported as time to the first
  ``item`` and to ``done``.

Users are real users of the served dataset (read from ``GET /v1/users``), drawn at random with a fixed seed. Every
request authenticates with the admin key. Latencies are the client's wall time per request (exact, from locust's
request events, not its rounded histogram), counted for requests started inside the measured window (after the
last user started) and finished before the users stop; requests/s = those requests / window length.

**The load generator shares the machine with the server**: on 2 cores, locust's CPU time is taken from the
server's, which inflates latency and lowers requests/s. The table shows both processes' CPU share per scenario.

The server runs one uvicorn worker by default, because that is what ``llmrec serve`` runs. One worker is GIL-bound
(it tops out near one core: ~92% CPU at capacity). ``--workers 2`` (``uvicorn --factory --workers 2`` on the same
app) measured on this 2-core machine, busy with other jobs: recs p95 123 vs 179 ms, capacity 110 vs 84 req/s, but
start-up 118 vs 31 s and every worker holds its own fitted pipelines (and its own language model for rerank). It is
not the default because the service is not multi-worker safe yet: ``POST /v1/admin/refit`` refits only the worker
that answers it. ``--url`` measures a server started elsewhere.

    python benchmarks/api_load.py --out out/api_load.json [--quick] [--users 50] [--duration 30]
        [--scenarios recs,capacity,rerank,chat] [--url http://127.0.0.1:8000 --admin-key KEY]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from llmrec.eval.latency import latency_metrics
from llmrec.eval.provenance import provenance
from llmrec.eval.results import EvalResults, ModelResult

SCENARIOS = ("recs", "capacity", "rerank", "chat")
TARGET_P95_MS = 20.0
TARGET_USERS = 50
CHAT_TEXTS = (
    "I'd like a funny movie for tonight, nothing scary.",
    "Something older, from the nineties maybe?",
)
CHAT_LABELS = {
    "POST /v1/chat/sessions": "new session",
    "POST /v1/chat/sessions/{id}/messages": "turn, headers",
    "chat turn: first item": "turn, 1st item",
    "chat turn: done": "turn, done",
}
console = Console(width=None if sys.stdout.isatty() else 150)


# ----------------------------------------------------------------------------------------------------------------
# Settings and results (pure: no locust, no server)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One bounded load run.

    Attributes:
        name: One of :data:`SCENARIOS`.
        users: Concurrent simulated users.
        duration_s: Length of the measured window (after the last user started).
        wait_s: Think time between one user's tasks, uniform in ``[low, high]`` seconds (``(0, 0)``: none).

    """

    name: str
    users: int
    duration_s: float
    wait_s: tuple[float, float]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--quick`` shortens every scenario to a few seconds and one LM user)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Results JSON to write.")
    parser.add_argument("--quick", action="store_true", help="Each scenario a few seconds (a smoke run).")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="Comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--users", type=int, default=TARGET_USERS, help="Users of recs and capacity.")
    parser.add_argument("--spawn-rate", type=float, default=25.0, help="Users started per second.")
    parser.add_argument("--duration", type=float, default=30.0, help="Measured seconds of recs and capacity.")
    parser.add_argument("--wait-min", type=float, default=0.5, help="Shortest think time of a recs user (s).")
    parser.add_argument("--wait-max", type=float, default=1.5, help="Longest think time of a recs user (s).")
    parser.add_argument("--rerank-users", type=int, default=2, help="Users of the rerank scenario.")
    parser.add_argument("--chat-users", type=int, default=2, help="Users of the chat scenario.")
    parser.add_argument("--lm-duration", type=float, default=45.0, help="Measured seconds of rerank and chat.")
    parser.add_argument("--k", type=int, default=10, help="List length asked for.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the user draws.")
    parser.add_argument("--dataset", default="movielens-small", help="Store dataset served.")
    parser.add_argument("--db", default=None, help="Store URL (default: a fresh SQLite file, ingested at start).")
    parser.add_argument("--retriever", default="ease", help="The server's default retriever.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (1: `llmrec serve` itself).")
    parser.add_argument("--url", default=None, help="Measure a running server instead of starting one.")
    parser.add_argument("--admin-key", default=None, help="Admin key of the --url server.")
    parser.add_argument("--start-timeout", type=float, default=900.0, help="Seconds to wait for the server.")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.url and not args.admin_key:
        parser.error("--url needs --admin-key")
    if not 0 <= args.wait_min <= args.wait_max:
        parser.error("need 0 <= --wait-min <= --wait-max")
    if min(args.users, args.rerank_users, args.chat_users, args.workers) < 1 or args.spawn_rate <= 0:
        parser.error("user counts must be >= 1 and --spawn-rate > 0")
    return args


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios to run, in the order of :data:`SCENARIOS`, with ``--quick`` applied."""
    short = 3.0 if args.quick else None
    think = (args.wait_min, args.wait_max)
    plan = {
        "recs": Scenario("recs", args.users, short or args.duration, think),
        "capacity": Scenario("capacity", args.users, short or args.duration / 2, (0.0, 0.0)),
        "rerank": Scenario("rerank", 1 if args.quick else args.rerank_users, short or args.lm_duration, think),
        "chat": Scenario("chat", 1 if args.quick else args.chat_users, short or args.lm_duration, think),
    }
    return [plan[name] for name in SCENARIOS if name in args.scenarios]


@dataclass
class Samples:
    """What one scenario's requests took, by request name, counting only requests started in the window.

    ``errors`` counts failed requests (HTTP errors, bad bodies, transport errors) and ``exceptions`` errors in the
    simulated users' own code; both count against a scenario.
    """

    window: tuple[float, float] | None = None
    ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_messages: dict[str, int] = field(default_factory=dict)
    exceptions: int = 0

    def add(self, name: str, started_at: float, ms: float, error: object | None) -> None:
        """Record one request that started at ``started_at`` (epoch seconds); ignored outside the window."""
        if self.window is None or not self.window[0] <= started_at <= self.window[1]:
            return
        self.ms.setdefault(name, [])
        self.errors.setdefault(name, 0)
        if error is None:
            self.ms[name].append(float(ms))
        else:
            self.errors[name] += 1
            message = f"{name}: {error}"[:300]
            self.error_messages[message] = self.error_messages.get(message, 0) + 1


def summarise(ms: Sequence[float], errors: int, seconds: float) -> dict[str, float]:
    """Latency percentiles (successful requests only), requests/s (all requests) and errors of one request name."""
    requests = len(ms) + errors
    return {
        **latency_metrics(ms, percentiles=(50, 95, 99), mean=True, digits=2),
        "throughput_per_s": round(requests / seconds, 2) if seconds > 0 else math.nan,
        "requests": float(requests),
        "errors": float(errors),
    }


def target_verdict(metrics: dict[str, float | None], users: int) -> tuple[bool, str]:
    """Whether scenario ``recs`` met the target (p95 <= 20 ms at 50 users, 0 errors), and a line saying so."""
    p95, errors = metrics.get("latency_p95_ms"), metrics.get("errors")
    met = p95 is not None and p95 <= TARGET_P95_MS and errors == 0 and users >= TARGET_USERS
    shown = "n/a" if p95 is None else f"{p95:.1f} ms"
    note = "" if users >= TARGET_USERS else f" (ran {users} users, the target is at {TARGET_USERS})"
    return met, (
        f"recommendations without LM: p95 <= {TARGET_P95_MS:.0f} ms at {TARGET_USERS} users, 0 errors? "
        f"{'met' if met else 'missed'}: p95 {shown}, {errors:.0f} errors{note}"
    )


def parse_sse(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``(event, data)`` pairs of a server-sent-event stream (``event`` defaults to ``message``)."""
    events: list[tuple[str, str]] = []
    name, data = "message", []
    for raw in [*lines, ""]:
        line = raw.rstrip("\r")
        if not line:
            if data or name != "message":
                events.append((name, "\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def _is_event(line: str, name: str) -> bool:
    field_name, _, value = line.partition(":")
    return field_name == "event" and value.strip() == name


# ----------------------------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(method: str, url: str, key: str | None, body: dict[str, Any] | None = None, timeout: float = 600) -> Any:
    """One JSON request (setup and warm-up only; the measured requests go through locust)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
        kind = response.headers.get("content-type", "")
    return json.loads(raw) if kind.startswith("application/json") else raw.decode()


@dataclass
class Server:
    """A ``llmrec serve`` subprocess on a free loopback port (or a server already running at ``url``)."""

    url: str
    admin_key: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    startup_s: float = 0.0
    command: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, args: argparse.Namespace, workdir: Path) -> Server:
        """Start the server on a fresh SQLite store (unless ``--db``) and wait until it answers.

        One worker is ``llmrec serve`` itself. Several workers need an import string, so they run
        ``uvicorn --factory --workers N`` on :func:`serve_app` (the same app ``llmrec serve`` builds), after the
        dataset is stored here once (workers ingesting at the same time would race).
        """
        port, key = _free_port(), secrets.token_urlsafe(24)
        db = args.db or f"sqlite:///{workdir / 'llmrec.db'}"
        src = str(Path(__file__).resolve().parents[1] / "src")
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        env = os.environ | {"LLMREC_ADMIN_KEY": key, "LLMREC_DB_URL": db, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
        if args.workers == 1:
            command = [sys.executable, "-m", "llmrec.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--dataset", args.dataset, "--retriever", args.retriever, "--db", db, "--log-level", "warning"]
        else:
            from llmrec.data.store import Store
            from llmrec.serve import RecommenderService, ServeConfig

            RecommenderService(Store(db), ServeConfig(dataset=args.dataset)).prepare()
            env |= {"LLMREC_BENCH_DATASET": args.dataset, "LLMREC_BENCH_RETRIEVER": args.retriever}
            command = [sys.executable, "-m", "uvicorn", "--factory", "api_load:serve_app", "--app-dir"]
            command += [str(Path(__file__).resolve().parent), "--host", "127.0.0.1", "--port", str(port)]
            # Each worker fits its pipelines at start-up, which holds up its answers to uvicorn's health check
            # (5 s by default; a worker that misses it is restarted, and would fit again, for ever).
            command += ["--workers", str(args.workers), "--timeout-worker-healthcheck", "900", "--log-level", "warning"]
        log = workdir / "serve.log"
        started = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        server = cls(f"http://127.0.0.1:{port}", key, process, log, command=command[1:])
        try:
            server._wait_until_up(args.start_timeout)
        except BaseException:
            server.stop()
            raise
        server.startup_s = time.perf_counter() - started
        return server

    def _wait_until_up(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                _http("GET", f"{self.url}/v1/health", None, timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server is not up in {timeout_s:.0f} s:\n{self.log_tail()}") from exc
                time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output."""
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.exists() else ""

    def _processes(self) -> list[Any]:
        import psutil

        if self.process is None:
            return []
        main = psutil.Process(self.process.pid)
        return [main, *main.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server and its workers so far; NaN for a server not started here."""
        if self.process is None:
            return math.nan
        total = 0.0
        for process in self._processes():
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def rss_mb(self) -> float:
        """Resident memory of the server and its workers now (MB); NaN for a server not started here."""
        if self.process is None:
            return math.nan
        return sum(p.memory_info().rss for p in self._processes()) / 2**20

    def stop(self) -> None:
        """Stop the server (SIGINT, as Ctrl-C would; it and its workers are killed if not gone in 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = self._processes()[1:]
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for worker in workers:
                if worker.is_running():
                    worker.kill()
            self.process.kill()
            self.process.wait()

    def user_ids(self) -> list[str]:
        """Every user of the served dataset, paging ``GET /v1/users``."""
        users: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = _http("GET", f"{self.url}/v1/users?limit=1000&offset={offset}", self.admin_key)
            users += [u["user_id"] for u in page["users"]]
            offset = page["next_offset"]
        return users


def serve_app() -> Any:
    """The app ``llmrec serve`` builds, for ``uvicorn --factory --workers N`` (settings from the environment)."""
    from llmrec.data.store import Store
    from llmrec.pipeline import PipelineConfig, RetrieverSpec
    from llmrec.serve import RecommenderService, ServeConfig, create_app

    retriever = RetrieverSpec(name=os.environ.get("LLMREC_BENCH_RETRIEVER", "ease"))
    pipeline = PipelineConfig(retriever=retriever, rerank=None, explain_with_lm=False)
    config = ServeConfig.from_settings(
        dataset=os.environ.get("LLMREC_BENCH_DATASET", "movielens-small"), pipeline=pipeline
    )
    return create_app(RecommenderService(Store(), config), warm=True)


# ----------------------------------------------------------------------------------------------------------------
# Simulated users (locust is imported only here: it monkey-patches the standard library with gevent)
# ----------------------------------------------------------------------------------------------------------------


def user_class(scenario: Scenario, server: Server, user_ids: Sequence[str], k: int, seed: int) -> type:
    """The locust user class of ``scenario`` (FastHttpUser: the cheapest client, as locust shares our CPUs)."""
    from locust import between, constant, task
    from locust.contrib.fasthttp import FastHttpUser

    rng = random.Random(seed)
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    low, high = scenario.wait_s
    wait = constant(0) if high == 0 else between(low, high)

    class ApiUser(FastHttpUser):
        host = server.url
        wait_time = wait
        network_timeout = 600.0
        connection_timeout = 60.0

        def recommendations(self, rerank: bool) -> None:
            user = rng.choice(user_ids)
            url = f"/v1/users/{user}/recommendations?k={k}&rerank={'true' if rerank else 'false'}"
            name = f"GET /v1/users/{{id}}/recommendations{'?rerank=true' if rerank else ''}"
            with self.client.get(url, headers=auth, name=name, catch_response=True) as response:
                body = response.content or b""
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}: {body[:200]!r}")
                elif b'"items":[{' not in body or (rerank and b'"reranked":true' not in body):
                    response.failure(f"unexpected body {body[:200]!r}")

        def chat_turn(self, session: str, text: str) -> None:
            """One message; time to the first ``item`` event and to ``done`` are reported as their own rows."""
            url = f"/v1/chat/sessions/{session}/messages"
            started_at, t0 = time.time(), time.perf_counter()
            first_item: float | None = None
            lines: list[str] = []
            error: str | None = None
            headers = auth | {"Accept": "text/event-stream"}
            response = self.client.post(
                url, json={"text": text}, headers=headers, stream=True, name="POST /v1/chat/sessions/{id}/messages"
            )
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {(response.content or b'')[:200]!r}"
            else:
                buffer = ""
                for chunk in response.iter_content(chunk_size=4096):
                    buffer += chunk if isinstance(chunk, str) else chunk.decode("utf-8", "replace")
                    *complete, buffer = buffer.split("\n")
                    lines += complete
                    if first_item is None and any(_is_event(line, "item") for line in complete):
                        first_item = time.perf_counter()
                lines.append(buffer)
            done = time.perf_counter()
            events = [name for name, _ in parse_sse(lines)] if error is None else []
            if error is None and ("done" not in events or "error" in events):
                error = f"no done event or an error event (last events: {events[-5:]})"
            if error is None and first_item is None:
                error = "no item event"
            fire = self.environment.events.request.fire
            common = {"request_type": "SSE", "context": {}, "response": None, "start_time": started_at}
            length = sum(len(line) for line in lines)
            first_ms = 1000 * ((first_item or done) - t0)
            fire(name="chat turn: first item", response_time=first_ms, response_length=0, exception=error, **common)
            fire(
                name="chat turn: done",
                response_time=1000 * (done - t0),
                response_length=length,
                exception=error,
                **common,
            )

        @task
        def work(self) -> None:
            if scenario.name in ("recs", "capacity"):
                self.recommendations(rerank=False)
            elif scenario.name == "rerank":
                self.recommendations(rerank=True)
            else:
                body = {"user_id": rng.choice(user_ids)}
                with self.client.post(
                    "/v1/chat/sessions", json=body, headers=auth, name="POST /v1/chat/sessions", catch_response=True
                ) as response:
                    if response.status_code != 201:
                        response.failure(f"HTTP {response.status_code}: {(response.content or b'')[:200]!r}")
                        return
                    session = response.json()["session_id"]
                for text in CHAT_TEXTS:
                    self.chat_turn(session, text)

    ApiUser.__name__ = f"{scenario.name.capitalize()}User"
    return ApiUser


def run_scenario(
    scenario: Scenario, cls: type, spawn_rate: float, on_window: Callable[[str], None] | None = None
) -> tuple[Samples, float, bool]:
    """Run ``scenario`` to the end of its window, let in-flight tasks finish, and return what was measured.

    Returns:
        The samples, the window length in seconds, and whether locust warned that its own CPU use was above 90%
        (then the client, not the server, limits the figures).

    """
    import gevent
    from locust.env import Environment

    lm = scenario.name in ("rerank", "chat")
    env = Environment(user_classes=[cls], stop_timeout=300.0 if lm else 30.0, catch_exceptions=True)
    samples = Samples()

    def on_request(name: str, response_time: float, exception: object | None = None, **kw: Any) -> None:
        samples.add(name, float(kw.get("start_time") or time.time()), response_time, exception)

    def close_window() -> None:
        assert samples.window is not None
        samples.window = (samples.window[0], time.time())
        if on_window:
            on_window("end")
        runner.quit()

    def on_spawned(**_: Any) -> None:
        samples.window = (time.time(), math.inf)
        if on_window:
            on_window("start")
        gevent.spawn_later(scenario.duration_s, close_window)

    env.events.request.add_listener(on_request)
    env.events.spawning_complete.add_listener(on_spawned)
    runner = env.create_local_runner()
    runner.start(scenario.users, spawn_rate=spawn_rate)
    runner.greenlet.join()
    samples.exceptions = sum(int(row["count"]) for row in runner.exceptions.values())
    for row in runner.exceptions.values():
        samples.error_messages[f"user code: {row['msg']}"[:300]] = int(row["count"])
    window = samples.window[1] - samples.window[0] if samples.window else 0.0
    return samples, window, bool(runner.cpu_warning_emitted)


# ----------------------------------------------------------------------------------------------------------------
# Warm-up, the run, the table
# ----------------------------------------------------------------------------------------------------------------


def warm_up(scenario: Scenario, server: Server, user_ids: Sequence[str], k: int, workers: int) -> float:
    """Unmeasured requests that make the server fit and load what ``scenario`` uses; returns their seconds.

    Requests go on until enough answer in a row without a first-use delay (each worker fits and loads its own
    pipelines, and which worker answers is up to the kernel), or for at most 15 minutes.
    """
    base, key = server.url, server.admin_key
    if scenario.name in ("recs", "capacity"):
        fast_s, in_a_row = 1.0, 20 * workers
    else:
        fast_s, in_a_row = 30.0, 1 + workers
    started, streak, i = time.perf_counter(), 0, 0
    while streak < in_a_row and time.perf_counter() - started < 900:
        user, i = user_ids[i % len(user_ids)], i + 1
        t0 = time.perf_counter()
        if scenario.name == "chat":
            session = _http("POST", f"{base}/v1/chat/sessions", key, {"user_id": user})["session_id"]
            _http("POST", f"{base}/v1/chat/sessions/{session}/messages", key, {"text": CHAT_TEXTS[0]})
        else:
            rerank = "true" if scenario.name == "rerank" else "false"
            _http("GET", f"{base}/v1/users/{user}/recommendations?k={k}&rerank={rerank}", key)
        streak = streak + 1 if time.perf_counter() - t0 < fast_s else 0
    return time.perf_counter() - started


def _cpu_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float]:
    """(server, load generator) CPU use over a window, in % of one core."""
    wall = after[0] - before[0]
    if wall <= 0:
        return math.nan, math.nan
    return 100 * (after[1] - before[1]) / wall, 100 * (after[2] - before[2]) / wall


RSS_EVERY_S = 2.0
"""How often the server's resident memory is sampled during a measured window."""


def rss_trend(samples: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Start, end and peak server RSS of a window, and its least-squares slope in MB per minute.

    A server whose memory is bounded shows a slope near zero once warm; a leak (a copy of a model per request, an
    unbounded cache) shows as a steady positive slope. NaN with fewer than three samples.
    """
    if len(samples) < 3:
        return {
            "rss_start_mb": math.nan,
            "rss_end_mb": math.nan,
            "peak_rss_mb": math.nan,
            "rss_slope_mb_per_min": math.nan,
        }
    import numpy as np

    t = np.array([s[0] for s in samples]) / 60.0
    mb = np.array([s[1] for s in samples])
    slope = float(np.polyfit(t, mb, 1)[0]) if np.ptp(t) > 0 else math.nan
    return {
        "rss_start_mb": round(float(mb[0]), 1),
        "rss_end_mb": round(float(mb[-1]), 1),
        "peak_rss_mb": round(float(mb.max()), 1),
        "rss_slope_mb_per_min": round(slope, 2),
    }


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def measure(scenario: Scenario, server: Server, user_ids: Sequence[str], args: argparse.Namespace) -> list[ModelResult]:
    """Warm up, run one scenario, and turn its samples into one result per request name."""
    console.print(f"[dim]{scenario.name}: warming up...[/]")
    try:
        warm_s = warm_up(scenario, server, user_ids, args.k, args.workers)
    except urllib.error.HTTPError as exc:  # e.g. a server without the chat routes: say so, run the rest
        reason = f"warm-up failed, not measured: HTTP {exc.code} on {exc.url}"
        console.print(f"[red]{scenario.name}: {reason}[/]")
        config = {"scenario": scenario.name, "users": scenario.users, "error_examples": {reason: 1}}
        metrics = summarise([], 1, 0.0)
        return [ModelResult(model=f"{scenario.name} (not run)", metrics=metrics, fit_s=0.0, config=config)]
    console.print(
        f"[dim]{scenario.name}: {scenario.users} users, {scenario.duration_s:.0f} s measured "
        f"(warm-up {warm_s:.1f} s)[/]"
    )
    marks: dict[str, tuple[float, float, float]] = {}
    rss: list[tuple[float, float]] = []  # (seconds into the window, server RSS in MB)

    def sample_rss() -> None:
        import gevent

        while "end" not in marks:
            rss.append((time.perf_counter() - marks["start"][0], server.rss_mb()))
            gevent.sleep(RSS_EVERY_S)

    def on_window(edge: str) -> None:
        marks[edge] = (time.perf_counter(), server.cpu_seconds(), _own_cpu())
        if edge == "start":
            import gevent

            gevent.spawn(sample_rss)

    cls = user_class(scenario, server, user_ids, args.k, args.seed)
    samples, window_s, client_cpu_warning = run_scenario(scenario, cls, args.spawn_rate, on_window)
    server_cpu, client_cpu = _cpu_share(marks["start"], marks["end"]) if len(marks) == 2 else (math.nan, math.nan)
    memory = rss_trend(rss)
    results = []
    for name in samples.ms:
        metrics = summarise(samples.ms[name], samples.errors[name], window_s)
        metrics["errors"] += samples.exceptions
        metrics |= {"server_cpu_pct": round(server_cpu, 1), "client_cpu_pct": round(client_cpu, 1)} | memory
        config = {
            "scenario": scenario.name,
            "request": name,
            "users": scenario.users,
            "wait_s": list(scenario.wait_s),
            "window_s": round(window_s, 2),
            "warmup_s": round(warm_s, 2),
            "client_cpu_over_90pct": client_cpu_warning,
            "error_examples": dict(list(samples.error_messages.items())[:5]),
            # The curve behind the slope, every 30 s: a leak climbs steadily, allocator warm-up flattens out.
            "rss_mb_every_30s": list({int(t // 30): round(mb, 1) for t, mb in reversed(rss)}.values())[::-1],
        }
        label = scenario.name if scenario.name != "chat" else f"chat: {CHAT_LABELS.get(name, name)}"
        results.append(ModelResult(model=label, metrics=metrics, fit_s=0.0, config=config))
    if not results:  # nothing finished inside the window: say so instead of dropping the scenario
        metrics = summarise([], samples.exceptions, window_s)
        config = {"scenario": scenario.name, "users": scenario.users, "error_examples": samples.error_messages}
        results.append(ModelResult(model=f"{scenario.name}: (no requests)", metrics=metrics, fit_s=0.0, config=config))
    return results


def _table(results: Sequence[ModelResult], title: str) -> Table:
    table = Table(title=title)
    table.add_column("scenario / request")
    for col in (
        "users",
        "think s",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "server CPU",
        "locust CPU",
    ):
        table.add_column(col, justify="right")

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in results:
        m, wait = r.metrics, r.config.get("wait_s", [0, 0])
        table.add_row(
            r.model,
            str(r.config["users"]),
            "0" if not wait[1] else f"{wait[0]:g}-{wait[1]:g}",
            num(m["requests"], ".0f"),
            num(m["throughput_per_s"], ".1f"),
            num(m["latency_p50_ms"], ".1f"),
            num(m["latency_p95_ms"], ".1f"),
            num(m["latency_p99_ms"], ".1f"),
            num(m["errors"], ".0f"),
            num(m.get("server_cpu_pct"), ".0f") + "%",
            num(m.get("client_cpu_pct"), ".0f") + "%",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import locust  # noqa: F401  (first, before any HTTP: it monkey-patches sockets and ssl with gevent)

    plan = scenarios_from(args)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmrec-load-") as tmp:
        if args.url:
            server = Server(args.url.rstrip("/"), args.admin_key)
        else:
            console.print(f"[dim]starting llmrec serve ({args.dataset}, {args.retriever}); first start ingests...[/]")
            server = Server.start(args, Path(tmp))
        try:
            health = _http("GET", f"{server.url}/v1/health", None)
            user_ids = server.user_ids()
            random.Random(args.seed).shuffle(user_ids)
            console.print(f"[dim]server up in {server.startup_s:.1f} s: {len(user_ids)} users[/]")
            results: list[ModelResult] = []
            for scenario in plan:
                results += measure(scenario, server, user_ids, args)
            rss_mb = server.rss_mb()
        except BaseException:
            if server.log:
                console.print(f"[red]server log:[/]\n{server.log_tail()}")
            raise
        finally:
            server.stop()

    cores = os.cpu_count()
    title = f"llmrec serve under locust, {health['dataset']} ({args.retriever}), loopback, {cores} CPUs"
    console.print(_table(results, title))
    console.print(
        f"[yellow]locust runs on the same {cores} CPUs as the server: its CPU time is taken from the server's, "
        "which inflates latency and lowers req/s.[/]"
    )
    if any(r.config.get("client_cpu_over_90pct") for r in results):
        console.print("[yellow]locust warned that its CPU use passed 90%: the client limited those figures.[/]")
    verdict = None
    recs = [r for r in results if r.config.get("scenario") == "recs"]
    if recs:
        met, line = target_verdict(recs[0].metrics, recs[0].config["users"])
        verdict = {"target": f"p95 <= {TARGET_P95_MS:g} ms at {TARGET_USERS} users, 0 errors", "met": met}
        console.print(line)
    out = EvalResults(
        dataset=health["dataset"],
        protocol="http load (locust, loopback)",
        k=args.k,
        results=results,
        provenance=provenance(None if argv is None else ["api_load.py", *argv]),
    )
    payload = out.model_dump(mode="json") | {
        "target": verdict,
        "settings": {
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick,
            "scenarios": [s.__dict__ for s in plan],
            "spawn_rate": args.spawn_rate,
            "retriever": args.retriever,
            "server": "external: " + server.url if args.url else " ".join(server.command),
            "uvicorn_workers": None if args.url else args.workers,
            "server_startup_s": round(server.startup_s, 2),
            "server_rss_mb_at_end": None if math.isnan(rss_mb) else round(rss_mb, 1),
            "cpus": cores,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "shared_cpus": "locust and the server share the machine's CPUs: latency is inflated",
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
