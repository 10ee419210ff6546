"""The baselines on MovieLens latest-small: the numbers every LLM method is compared against.

Full ranking, hyperparameters tuned on validation (the sequential models keep their defaults unless
``--tune-sequential``: their grid costs four more transformer fits each), every stochastic model fitted with
``--seeds`` seeds (3 by default; metrics are seed means with their sd), a 95% bootstrap interval over users for
every metric and a
paired comparison of every model against the best classical baseline (or ``--compare-to``). Each model runs in
a fresh process so its peak memory is its own; ``--models`` runs a subset, and the files of several runs merge
with ``llmrec compare a.json b.json --out all.json`` (comparisons recomputed). Protocols: ``leave-last-out``
(per user) and ``timeline`` (one global cut, every later event a query; many more targets).

    python benchmarks/baselines.py --out results/baselines.json [--protocol timeline] [--models popular,ease]
    python benchmarks/baselines.py --quick --out out/baselines-quick.json   # < 5 minutes, for the smoke test
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

from llmrec.cli import comparisons_table, metrics_table
from llmrec.data.registry import load_named
from llmrec.eval.compare import compare_results
from llmrec.eval.results import EvalResults, ModelResult
from llmrec.eval.runner import evaluate_models
from llmrec.models.base import TrainOptions

MODELS = "popular,itemknn,ease,als,bpr,sasrec"
SEQUENTIAL = {"sasrec", "bert4rec"}
QUICK_MODELS = "popular,ease,als"


def _one(dataset: str, model: str, k: int, protocol: str, tune: bool, seed: int, seeds: int) -> dict:
    """Evaluate one model in this (fresh) process; return its results and the process's peak RSS."""
    data = load_named(dataset, prefer_store=False)
    results = evaluate_models(
        data, [model], k=k, protocol=protocol, tune=tune, options=TrainOptions(seed=seed), seeds=seeds
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    out = results.model_dump()
    out["results"][0]["peak_rss_mb"] = round(peak_mb, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--dataset", default="movielens-small")
    parser.add_argument("--models", default=None, help=f"comma-separated (default {MODELS}; quick: {QUICK_MODELS})")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--protocol", default="leave-last-out", choices=["leave-last-out", "timeline", "temporal"])
    parser.add_argument("--no-tune", action="store_true", help="use default hyperparameters")
    parser.add_argument("--tune-sequential", action="store_true", help="also search SASRec/BERT4Rec grids")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per stochastic model (default 3; quick: 2)")
    parser.add_argument("--compare-to", default=None, help="reference model (default: best classical baseline)")
    parser.add_argument("--quick", action="store_true", help="a few fast models, 2 seeds, no tuning: < 5 minutes")
    args = parser.parse_args(argv)
    args.models = args.models or (QUICK_MODELS if args.quick else MODELS)
    seeds = args.seeds or (2 if args.quick else 3)
    tune = not (args.no_tune or args.quick)
    console = Console()
    merged: EvalResults | None = None
    started = time.perf_counter()
    ctx = mp.get_context("spawn")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        console.print(f"[dim]{model}...[/]")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            tune_this = tune and (model not in SEQUENTIAL or args.tune_sequential)
            out = pool.submit(_one, args.dataset, model, args.k, args.protocol, tune_this, args.seed, seeds).result()
        part = EvalResults.model_validate(out)
        if merged is None:
            merged = part
        else:
            merged.results.append(ModelResult.model_validate(part.results[0].model_dump()))
        merged.write_json(args.out)  # after every model: a later failure loses only that model
    assert merged is not None, "no models given"
    merged = compare_results(merged, args.compare_to)
    merged.provenance = {}  # stamped afresh: the partial writes above carried the wall time so far
    merged.write_json(args.out)
    table = metrics_table(merged, [f"ndcg@{args.k}", f"recall@{args.k}", f"hr@{args.k}", f"coverage@{args.k}"])
    console.print(table)
    if merged.comparisons:
        console.print(comparisons_table(merged))
    console.print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
