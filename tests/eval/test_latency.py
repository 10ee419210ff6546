import math

import numpy as np
import pytest

from llmrec.eval.latency import latency_metrics


def test_keys_and_values_match_numpy_percentiles() -> None:
    ms = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    out = latency_metrics(ms, percentiles=(50, 95, 99.9), mean=True)
    assert list(out) == ["latency_p50_ms", "latency_p95_ms", "latency_p99.9_ms", "latency_mean_ms"]
    assert out["latency_p50_ms"] == pytest.approx(np.percentile(ms, 50))
    assert out["latency_p95_ms"] == pytest.approx(np.percentile(ms, 95))
    assert out["latency_mean_ms"] == pytest.approx(np.mean(ms))


def test_prefix_rounding_and_array_input() -> None:
    out = latency_metrics(np.array([[1.23456, 2.34567]]), percentiles=(50,), prefix="cpu", digits=2)
    assert out == {"cpu_p50_ms": 1.79}


def test_no_calls_gives_nan_not_zero() -> None:
    out = latency_metrics([], mean=True)
    assert set(out) == {"latency_p50_ms", "latency_p95_ms", "latency_mean_ms"}
    assert all(math.isnan(v) for v in out.values())
