"""``generative.py --refresh FILE --tiger-from RUN``: a changed tiger updates a written results JSON without the LM.

Read against the committed results: swapping in the run the file was built from changes nothing but the recorded
source; a run with other tiger numbers changes tiger's row, its comparison and its target verdict; a run of
another split is refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType

import pytest

from benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
GENERATIVE = ROOT / "results" / "generative.json"
TIGER_RUN = ROOT / "results" / "genret-trained.json"


@pytest.fixture(scope="module")
def generative() -> ModuleType:
    return load_benchmark("generative", "bench_generative_refresh")


def _refresh(generative: ModuleType, tmp_path: Path, run: Path) -> dict:
    out = tmp_path / "generative.json"
    out.write_text(GENERATIVE.read_text(encoding="utf-8"), encoding="utf-8")
    assert generative.main(["--refresh", str(out), "--tiger-from", str(run)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_the_same_run_changes_nothing_but_the_source(generative: ModuleType, tmp_path: Path) -> None:
    before = json.loads(GENERATIVE.read_text(encoding="utf-8"))
    after = _refresh(generative, tmp_path, TIGER_RUN)
    assert after["settings"].pop("tiger_from") == str(TIGER_RUN)
    before["settings"].pop("tiger_from", None)
    assert after == before


def test_another_tiger_run_replaces_the_row_comparison_and_verdict(generative: ModuleType, tmp_path: Path) -> None:
    run = json.loads(TIGER_RUN.read_text(encoding="utf-8"))
    better = copy.deepcopy(run)
    tiger = next(r for r in better["results"] if r["model"] == "tiger")
    tiger["metrics"]["ndcg@10"] = 0.06
    for c in better["comparisons"]:
        if c["a"] == "tiger" and c["metric"] == "ndcg@10":
            c["diff"], c["ci95"] = 0.012, [0.001, 0.023]
    path = tmp_path / "better.json"
    path.write_text(json.dumps(better), encoding="utf-8")
    after = _refresh(generative, tmp_path, path)
    rows = [r for r in after["results"] if r["model"] == "tiger"]
    assert len(rows) == 1 and rows[0]["metrics"]["ndcg@10"] == 0.06
    verdict = next(t for t in after["targets"] if "tiger" in t["target"])
    assert verdict["met"] and verdict["value"].startswith("+0.0120")
    assert len(after["comparisons"]) == len(json.loads(GENERATIVE.read_text(encoding="utf-8"))["comparisons"])


def test_a_run_of_another_split_is_refused(generative: ModuleType, tmp_path: Path) -> None:
    run = json.loads(TIGER_RUN.read_text(encoding="utf-8"))
    run["split"]["test_users"] = 1
    path = tmp_path / "other.json"
    path.write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(SystemExit, match="another split"):
        _refresh(generative, tmp_path, path)


def test_out_is_required_without_refresh(generative: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        generative.main(["--quick"])
    assert "--out is required" in capsys.readouterr().err
