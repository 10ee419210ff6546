"""Smoke test of the baselines benchmark in --quick mode: intervals, seeds and comparisons end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.eval.results import EvalResults

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_baselines_write_intervals_seeds_and_comparisons(tmp_path: Path) -> None:
    out = tmp_path / "baselines.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "baselines.py"), "--quick", "--out", str(out)],
        check=True,
        timeout=600,
    )
    results = EvalResults.read_json(out)
    assert [r.model for r in results.results] == ["popular", "ease", "als"]
    assert all("ndcg@10" in r.ci95 for r in results.results)
    assert results.result("als").seeds == [42, 43] and results.result("ease").seeds == [42]
    assert results.reference in {"ease", "als"} and results.comparisons
    assert "baselines.py --quick" in results.provenance["command"]
