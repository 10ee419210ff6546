"""What the PII scrubber misses: recall per kind of personal data on a small labelled set, and its false positives.

Question answered: of the personal data people type into profiles and chat messages, how much does
:func:`llmrec.text.pii.scrub` remove? The labelled set (``benchmarks/data/pii_labelled.jsonl``, written by hand for
this benchmark) holds short texts, each with the personal data in it marked by kind: the kinds the scrubber targets
(e-mail, phone, card, IBAN, IP, street address with a number, postcode, national id) and kinds it does not (person
names, street addresses without a number, dates of birth), plus texts with none (movie talk full of numbers) for
false positives.

An entity is *caught* when the scrubber's matches cover every one of its characters, *partial* when they cover
some, *missed* otherwise. Recall is caught / labelled, per kind and overall, with a 95% Wilson interval
(``scipy.stats.binomtest``); a *false positive* is a match that overlaps no labelled entity.

    python benchmarks/pii.py --out results/pii-scrubber.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from scipy.stats import binomtest

from llmrec.eval.provenance import provenance
from llmrec.text.pii import detect_pii

DATA = Path(__file__).resolve().parent / "data" / "pii_labelled.jsonl"
# Kinds the scrubber is built to find; the others measure known gaps.
TARGETED = ("email", "phone", "card", "iban", "ip", "street_address", "postcode", "national_id")


def load(path: Path) -> list[dict[str, Any]]:
    """The labelled texts, each entity located in its text (the first occurrence of its value)."""
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        for entity in record["pii"]:
            start = record["text"].find(entity["value"])
            if start < 0:
                raise SystemExit(f"{path}:{line_no}: {entity['value']!r} is not in its text")
            entity["span"] = (start, start + len(entity["value"]))
        records.append(record)
    return records


def _interval(caught: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    ci = binomtest(caught, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def measure(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Caught / partial / missed per kind, false positives, and the entities not caught."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "caught": 0, "partial": 0, "missed": 0})
    not_caught: list[dict[str, Any]] = []
    false_positives: list[dict[str, Any]] = []
    for record in records:
        text = record["text"]
        matches = detect_pii(text)
        covered = [False] * len(text)
        for m in matches:
            for i in range(m.start, m.end):
                covered[i] = True
        for entity in record["pii"]:
            start, end = entity["span"]
            share = sum(covered[start:end]) / (end - start)
            outcome = "caught" if share == 1 else "partial" if share > 0 else "missed"
            counts[entity["kind"]]["n"] += 1
            counts[entity["kind"]][outcome] += 1
            if outcome != "caught":
                found = [text[m.start : m.end] for m in matches if m.start < end and start < m.end]
                entry = {"kind": entity["kind"], "value": entity["value"], "outcome": outcome, "found": found}
                not_caught.append(entry)
        for m in matches:
            if not any(m.start < e and s < m.end for s, e in (ent["span"] for ent in record["pii"])):
                false_positives.append({"text": text, "match": text[m.start : m.end], "as": m.kind.value})
    per_kind = {}
    for kind in sorted(counts, key=lambda k: (k not in TARGETED, k)):
        c = counts[kind]
        per_kind[kind] = {**c, "recall": round(c["caught"] / c["n"], 4), "ci95": _interval(c["caught"], c["n"])}
    return {"per_kind": per_kind, "not_caught": not_caught, "false_positives": false_positives}


def summary(measured: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The results JSON (DESIGN.md shape: one ``results`` row, metrics with ``ci95``)."""
    per_kind = measured["per_kind"]

    def pooled(kinds: list[str]) -> tuple[int, int, int]:
        return (
            sum(per_kind[k]["caught"] for k in kinds),
            sum(per_kind[k]["partial"] for k in kinds),
            sum(per_kind[k]["n"] for k in kinds),
        )

    groups = {
        "all": list(per_kind),
        "targeted": [k for k in per_kind if k in TARGETED],
        "untargeted": [k for k in per_kind if k not in TARGETED],
    }
    metrics: dict[str, float | int] = {}
    ci95: dict[str, list[float] | None] = {}
    for name, kinds in groups.items():
        caught, partial, n = pooled(kinds)
        key = "recall" if name == "all" else f"recall_{name}"
        metrics[key] = round(caught / n, 4)
        ci95[key] = _interval(caught, n)
        metrics[f"partial_rate_{name}" if name != "all" else "partial_rate"] = round(partial / n, 4)
    for kind, row in per_kind.items():
        metrics[f"recall_{kind}"] = row["recall"]
        ci95[f"recall_{kind}"] = row["ci95"]
    negatives = [r for r in records if not r["pii"]]
    flagged = {fp["text"] for fp in measured["false_positives"]}
    metrics["false_positive_matches"] = len(measured["false_positives"])
    metrics["negative_texts_flagged"] = sum(r["text"] in flagged for r in negatives)
    n_entities = sum(len(r["pii"]) for r in records)
    return {
        "dataset": f"pii-labelled ({DATA.name}: {len(records)} texts, {n_entities} entities, {len(negatives)} "
        "texts without personal data)",
        "protocol": "span coverage: an entity is caught when the scrubber's matches cover all its characters",
        "k": None,
        "results": [
            {
                "model": "scrub",
                "metrics": metrics,
                "ci95": ci95,
                "per_kind": per_kind,
                "not_caught": measured["not_caught"],
                "false_positives": measured["false_positives"],
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled texts (JSON lines)")
    args = parser.parse_args(argv)
    records = load(args.data)
    result = summary(measure(records), records)
    result["provenance"] = provenance(None if argv is None else ["benchmarks/pii.py", *argv])
    table = Table(title="PII scrubber recall on the labelled set (caught = fully covered)")
    for column in ("kind", "targeted", "n", "caught", "partial", "missed", "recall", "95% CI"):
        table.add_column(column)
    for kind, row in result["results"][0]["per_kind"].items():
        ci = row["ci95"]
        table.add_row(
            kind,
            "yes" if kind in TARGETED else "no",
            *(str(row[c]) for c in ("n", "caught", "partial", "missed")),
            f"{row['recall']:.2f}",
            f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "",
        )
    console = Console()
    console.print(table)
    metrics = result["results"][0]["metrics"]
    console.print(
        f"recall {metrics['recall']:.3f} (targeted kinds {metrics['recall_targeted']:.3f}, others "
        f"{metrics['recall_untargeted']:.3f}); false-positive matches: {metrics['false_positive_matches']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
