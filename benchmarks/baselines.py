"""Classical baselines on MovieLens latest-small: the numbers every LLM method is compared against.

Per-user leave-last-out, full ranking, hyperparameters tuned on validation. Each model runs in a fresh
process so its peak memory is its own. Prints a table and writes the results JSON (DESIGN.md shape).

    python benchmarks/baselines.py --out out/baselines.json [--models popular,ease] [--no-tune]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console

from llmrec.cli import metrics_table
from llmrec.data.registry import load_named
from llmrec.eval.results import EvalResults, ModelResult
from llmrec.eval.runner import evaluate_models
from llmrec.models.base import TrainOptions

MODELS = "popular,itemknn,ease,als,bpr"


def _one(dataset: str, model: str, k: int, protocol: str, tune: bool, seed: int) -> dict:
    """Evaluate one model in this (fresh) process; return its results and the process's peak RSS."""
    data = load_named(dataset)
    results = evaluate_models(data, [model], k=k, protocol=protocol, tune=tune, options=TrainOptions(seed=seed))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    out = results.model_dump()
    out["results"][0]["peak_rss_mb"] = round(peak_mb, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--dataset", default="movielens-small")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--protocol", default="leave-last-out")
    parser.add_argument("--no-tune", action="store_true", help="use default hyperparameters")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    console = Console()
    merged: EvalResults | None = None
    started = time.perf_counter()
    ctx = mp.get_context("spawn")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        console.print(f"[dim]{model}...[/]")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            out = pool.submit(_one, args.dataset, model, args.k, args.protocol, not args.no_tune, args.seed).result()
        part = EvalResults.model_validate(out)
        if merged is None:
            merged = part
        else:
            merged.results.append(ModelResult.model_validate(part.results[0].model_dump()))
    assert merged is not None, "no models given"
    merged.write_json(args.out)
    table = metrics_table(merged, [f"ndcg@{args.k}", f"recall@{args.k}", f"hr@{args.k}", f"coverage@{args.k}"])
    console.print(table)
    console.print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
