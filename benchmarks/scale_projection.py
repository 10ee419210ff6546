"""A projection, not a measurement: the scale benchmark's jobs at 1e9 interactions on a cluster.

Reads a ``benchmarks/scale.py`` results file and extrapolates each measured job from its largest measured size
with its fitted scaling exponent, floored at 1 (``t(1e9) = t(n_max) * (1e9 / n_max) ** max(exponent, 1)``): every
job reads every interaction at least once, and an exponent below 1 fitted at small sizes is a fixed cost not yet
amortised (the ALS fit's 0.23 at 2e4-2e5 events would project a 1e9-event fit at under a minute). Then divides
the jobs that partition (ingest by file part, batch recommend by users) over ``nodes`` machines like the ones
measured, assuming perfect partitioning; model fits (ALS, ItemKNN) run on one machine and are not divided.
Memory is not projected (EASE and ItemKNN are bounded by the catalogue, not by interactions). Every row says
"projection" and names the measurement it rests on; the README shows it as such.

    python benchmarks/scale_projection.py --from results/scale-quick.json --out results/scale-projection.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmrec.eval.provenance import provenance

TARGET_EVENTS = 1e9
PARTITIONED = {"ingest", "recommend_als_top10"}


def project(result: dict[str, Any], nodes: list[int]) -> list[dict[str, Any]]:
    """One row per measured step with an exponent: seconds at 1e9 events on each number of nodes."""
    out = []
    for step, exponent in result.get("exponents", {}).items():
        rows = [r for r in result.get("rows", []) if r.get("step") == step and r.get("interactions")]
        if exponent is None or not rows:
            continue
        largest = max(rows, key=lambda r: r["interactions"])
        n, seconds = float(largest["interactions"]), float(largest["seconds"])
        used = max(float(exponent), 1.0)
        single = seconds * (TARGET_EVENTS / n) ** used
        row: dict[str, Any] = {
            "step": step,
            "kind": "projection",
            "from_interactions": int(n),
            "from_seconds": seconds,
            "exponent": float(exponent),
            "exponent_used": used,
            "partitioned": step in PARTITIONED,
            "hours_1_node": round(single / 3600, 2),
        }
        for k in nodes:
            row[f"hours_{k}_nodes"] = round(single / (k if step in PARTITIONED else 1) / 3600, 2)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=Path("results/scale-quick.json"))
    parser.add_argument("--out", type=Path, required=True, help="Projection JSON to write.")
    parser.add_argument("--quick", action="store_true", help="Accepted for symmetry: the projection is instant.")
    parser.add_argument("--nodes", default="10,100", help="Cluster sizes to project to (comma-separated).")
    args = parser.parse_args(argv)
    result = json.loads(args.source.read_text(encoding="utf-8"))
    nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    rows = project(result, nodes)
    out = {
        "benchmark": "scale projection",
        "kind": "projection, not a measurement",
        "target_interactions": TARGET_EVENTS,
        "source": str(args.source),
        "source_quick": result.get("quick"),
        "nodes": nodes,
        "method": "t(1e9) = t(n_max) * (1e9 / n_max) ** max(exponent, 1); partitioned jobs over nodes, fits not",
        "rows": rows,
        "source_provenance": result.get("provenance"),
        "provenance": provenance(["benchmarks/scale_projection.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
