"""The PII scrubber's measured recall: the committed results JSON is what benchmarks/pii.py writes now."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_module import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "pii-scrubber.json"


def _benchmark() -> object:
    return load_benchmark("pii", "pii_benchmark")


def test_committed_recall_matches_a_fresh_run(tmp_path: Path) -> None:
    out = tmp_path / "pii.json"
    assert _benchmark().main(["--out", str(out)]) == 0  # type: ignore[attr-defined]
    fresh, committed = json.loads(out.read_text()), json.loads(RESULTS.read_text())
    # Regenerate with: python benchmarks/pii.py --out results/pii-scrubber.json
    assert {k: v for k, v in fresh.items() if k != "provenance"} == {
        k: v for k, v in committed.items() if k != "provenance"
    }
    assert committed["provenance"]["command"].endswith("--out results/pii-scrubber.json")
    metrics = fresh["results"][0]["metrics"]
    assert metrics["recall_untargeted"] < metrics["recall_targeted"] <= 1  # names etc. are the scrubber's gap
    assert fresh["results"][0]["per_kind"]["person_name"]["n"] >= 10  # the known gap is measured, not assumed


def test_every_labelled_value_is_located_in_its_text() -> None:
    records = _benchmark().load(ROOT / "benchmarks" / "data" / "pii_labelled.jsonl")  # type: ignore[attr-defined]
    assert sum(len(r["pii"]) for r in records) >= 60 and any(not r["pii"] for r in records)
    for record in records:
        for entity in record["pii"]:
            start, end = entity["span"]
            assert record["text"][start:end] == entity["value"]
