"""benchmarks/api_load.py: its pure parts, and a --quick run against a real `llmrec serve` on a small store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_module import load_benchmark
from llmrec.data.dataset import Dataset
from llmrec.data.store import Store

ROOT = Path(__file__).parents[2]


api_load = load_benchmark("api_load", "api_load")


def test_importing_the_benchmark_does_not_import_locust() -> None:
    # locust monkey-patches the standard library with gevent at import: only main() may import it.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('api_load', {str(ROOT / 'benchmarks' / 'api_load.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['api_load'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print('gevent' in sys.modules, 'locust' in sys.modules)"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_quick_shortens_every_scenario_and_keeps_50_recs_users() -> None:
    args = api_load.parse_args(["--out", "x.json", "--quick", "--scenarios", "chat,recs"])
    plan = api_load.scenarios_from(args)
    assert [s.name for s in plan] == ["recs", "chat"]  # always in the documented order
    assert all(s.duration_s <= 5 for s in plan)
    assert plan[0].users == 50 and plan[1].users == 1


def test_defaults_and_capacity_has_no_think_time() -> None:
    plan = {s.name: s for s in api_load.scenarios_from(api_load.parse_args(["--out", "x.json"]))}
    assert set(plan) == set(api_load.SCENARIOS)
    assert plan["recs"].users == 50 and plan["recs"].wait_s == (0.5, 1.5)
    assert plan["capacity"].wait_s == (0.0, 0.0)
    assert plan["rerank"].users == 2 and plan["chat"].users == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--scenarios", "recs,nope"],
        ["--url", "http://127.0.0.1:1"],
        ["--wait-min", "2", "--wait-max", "1"],
        ["--users", "0"],
        ["--workers", "0"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        api_load.parse_args(["--out", "x.json", *argv])


def test_samples_count_only_requests_started_in_the_window() -> None:
    samples = api_load.Samples()
    samples.add("GET /a", 5.0, 1.0, None)  # before the window opened: warm-up, ignored
    samples.window = (10.0, 20.0)
    samples.add("GET /a", 9.9, 1.0, None)
    samples.add("GET /a", 10.0, 2.0, None)
    samples.add("GET /a", 19.0, 4.0, None)
    samples.add("GET /a", 15.0, 100.0, "HTTP 500")
    samples.add("GET /a", 20.5, 3.0, None)
    assert samples.ms == {"GET /a": [2.0, 4.0]}
    assert samples.errors == {"GET /a": 1}
    assert samples.error_messages == {"GET /a: HTTP 500": 1}


def test_summarise_latency_of_successes_rate_of_all() -> None:
    out = api_load.summarise([10.0, 20.0, 30.0], errors=1, seconds=2.0)
    assert out["latency_p50_ms"] == 20.0 and out["latency_mean_ms"] == 20.0
    assert out["throughput_per_s"] == 2.0 and out["requests"] == 4 and out["errors"] == 1
    assert math.isnan(api_load.summarise([], errors=0, seconds=1.0)["latency_p95_ms"])


def test_target_verdict() -> None:
    assert api_load.target_verdict({"latency_p95_ms": 19.0, "errors": 0.0}, 50)[0]
    assert not api_load.target_verdict({"latency_p95_ms": 21.0, "errors": 0.0}, 50)[0]
    assert not api_load.target_verdict({"latency_p95_ms": 5.0, "errors": 1.0}, 50)[0]
    met, line = api_load.target_verdict({"latency_p95_ms": 5.0, "errors": 0.0}, 10)
    assert not met and "target is at 50" in line
    assert not api_load.target_verdict({"latency_p95_ms": None, "errors": 0.0}, 50)[0]


def test_parse_sse() -> None:
    lines = [": keep-alive", "event: state", 'data: {"a": 1}', "", "event: item", "data: x", "data: y", "", "data: z"]
    assert api_load.parse_sse(lines) == [("state", '{"a": 1}'), ("item", "x\ny"), ("message", "z")]


@pytest.mark.slow  # a locust run against a served model
def test_quick_run_against_llmrec_serve(tmp_path: Path, ml_sample: Dataset) -> None:
    # locust comes with the test extra; never import it here: its gevent monkey-patching deadlocks a process
    # that already runs torch threads (the whole suite hung here after tests/adapt).
    db = f"sqlite:///{tmp_path / 'load.db'}"
    Store(db).ingest(ml_sample, name="sample")
    out = tmp_path / "load.json"
    argv = ["--out", str(out), "--quick", "--scenarios", "recs,capacity", "--db", db, "--dataset", "sample"]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "api_load.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    by_scenario = {r["config"]["scenario"]: r for r in result["results"]}
    assert set(by_scenario) == {"recs", "capacity"}
    for r in by_scenario.values():
        m = r["metrics"]
        assert m["requests"] > 0
        for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_per_s"):
            assert m[key] is not None and math.isfinite(m[key]) and m[key] > 0, (key, m)
    assert by_scenario["recs"]["metrics"]["errors"] == 0, by_scenario["recs"]["config"]["error_examples"]
    assert result["target"]["met"] in (True, False)
    assert result["settings"]["uvicorn_workers"] == 1 and "llmrec.cli serve" in result["settings"]["server"]
