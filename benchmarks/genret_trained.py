"""Trained generative retrieval (``tiger``) against SASRec on MovieLens latest-small, leave-last-out.

Issue 19 item 1's target: NDCG@10 at least SASRec's (3-seed means, paired 95% interval over every test user),
training under 20 minutes on 2 cores. The same per-user leave-last-out split as ``benchmarks/baselines.py``;
SASRec is reused from a baselines run of that protocol (``--from-baselines``, its default settings and seeds) or
fitted here. Prints the metrics, the paired comparison and the training seconds per seed; writes one JSON in the
shared results shape plus a ``tiger`` section (settings, fit seconds per seed, the target verdict).

    python benchmarks/genret_trained.py --out results/genret-trained.json
    python benchmarks/genret_trained.py --quick --out out/genret-trained-quick.json   # one seed, few epochs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from llmrec.cli import comparisons_table, metrics_table
from llmrec.data.dataset import Dataset
from llmrec.data.movielens import load_movielens
from llmrec.eval.compare import compare_results
from llmrec.eval.provenance import provenance
from llmrec.eval.results import EvalResults
from llmrec.eval.runner import evaluate_models
from llmrec.models.base import TrainOptions
from llmrec.progress import ProgressCallback

BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines-leave-last-out.json"
TIGER: dict[str, Any] = {}  # TigerConfig's defaults
QUICK: dict[str, Any] = {"max_epochs": 2, "patience": 1}


def tiger_vs_sasrec(
    data: Dataset,
    config: dict[str, Any],
    *,
    k: int,
    options: TrainOptions,
    seeds: int,
    baselines: Path | None,
    quick: bool,
    on_progress: ProgressCallback,
) -> EvalResults:
    """``tiger`` (``config``, ``seeds`` seeds) and SASRec on every leave-last-out test user, compared paired.

    SASRec is reused from ``baselines`` when that run holds it (same split, its own seeds; never in a quick run),
    otherwise fitted here. ``benchmarks/generative.py`` runs this same step.
    """
    results = evaluate_models(
        data, [("tiger", config, "tiger")], k=k, tune=False, options=options, seeds=seeds, on_progress=on_progress
    )
    reused = EvalResults.read_json(baselines) if baselines is not None and baselines.is_file() and not quick else None
    sasrec = [r for r in reused.results if r.model == "sasrec"] if reused is not None else []
    if not sasrec:
        sasrec = evaluate_models(
            data,
            [("sasrec", {"max_epochs": 2} if quick else {}, "sasrec")],
            k=k,
            tune=False,
            options=options,
            seeds=seeds,
            on_progress=on_progress,
        ).results
    return compare_results(results.model_copy(update={"results": sasrec + results.results}), "sasrec")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="one seed, two epochs: a smoke run")
    parser.add_argument(
        "--from-baselines",
        type=Path,
        default=BASELINES if BASELINES.is_file() else None,
        help="reuse SASRec from this baselines run (default: results/baselines-leave-last-out.json when present)",
    )
    parser.add_argument("--config", type=json.loads, default=None, help="tiger config fields as JSON")
    args = parser.parse_args(argv)

    console = Console()

    def log(done: int, total: int | None, message: str) -> None:
        """The evaluation's on_progress: print what it does next."""
        console.print(f"[dim]{message}[/]")

    seeds = args.seeds or (1 if args.quick else 3)
    config = {**(QUICK if args.quick else TIGER), **(args.config or {})}
    results = tiger_vs_sasrec(
        load_movielens(),
        config,
        k=args.k,
        options=TrainOptions(seed=args.seed),
        seeds=seeds,
        baselines=args.from_baselines,
        quick=args.quick,
        on_progress=log,
    )
    key = f"ndcg@{args.k}"
    console.print(metrics_table(results, [key, f"hr@{args.k}", f"mrr@{args.k}", f"coverage@{args.k}"]))
    console.print(comparisons_table(results))
    tiger, sasrec_result = results.result("tiger"), results.result("sasrec")
    row = next(c for c in results.comparisons if c.a == "tiger" and c.metric == key)
    fit_s = tiger.fit_s  # the runner reports the mean over seeds
    met_accuracy = tiger.metrics[key] >= sasrec_result.metrics[key]
    verdict = {
        "ndcg_tiger": tiger.metrics[key],
        "ndcg_sasrec": sasrec_result.metrics[key],
        "paired_diff": row.diff,
        "paired_ci95": row.ci95,
        "fit_s_per_seed": round(fit_s, 1),
        "ndcg_at_least_sasrec": met_accuracy,
        "fit_under_20_min": fit_s < 1200,
    }
    console.print(f"tiger vs sasrec: {verdict}")
    results.provenance = provenance()
    out = results.model_dump()
    out["tiger"] = {"config": config, "seeds": seeds, "quick": args.quick, "target": verdict}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
