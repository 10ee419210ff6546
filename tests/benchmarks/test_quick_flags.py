"""Every benchmark offers ``--quick`` (issue 16, item 7: a smoke run under five minutes on 2 cores).

Each script's ``--help`` is read in this process (``main(["--help"])`` exits after printing it), so the check
costs the imports only, not a run. The runs themselves are smoke-tested where cheap (``test_baselines_quick``,
``test_api_load``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_the_benchmark_list_is_not_empty() -> None:
    assert {p.stem for p in BENCHMARKS} >= {"baselines", "encoder_speed", "lm_latency", "encoder_finetune", "redial"}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_every_benchmark_has_quick_and_out(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load_benchmark(path)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--quick" in text, f"{path.name} has no --quick"
    assert "--out" in text, f"{path.name} writes no results file"
