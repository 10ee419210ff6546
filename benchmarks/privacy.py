"""What privacy costs in accuracy: SASRec under DP-SGD at epsilon 1, 3, 8 and federated, against centralised.

Every model is SASRec with the same configuration and the same fixed schedule (``--epochs`` epochs, no early
stopping: a private or federated fit cannot pick its epoch on held-out items of its users), evaluated by the
project's harness (:func:`llmrec.eval.runner.evaluate_models`, leave-last-out, full ranking), ``--seeds`` seeds
each, and paired against the centralised, non-private fit over the same users (``compare_results``: the
difference, its 95% bootstrap interval and a p-value; per-user values are means over seeds):

* ``sasrec`` -- centralised, no DP: the reference of every comparison.
* ``sasrec+dp(eps=E)`` -- DP-SGD (Opacus): user-level (epsilon, delta) with delta = 1e-5, per-user clipping at
  ``--clip``; each row carries the epsilon actually spent (``privacy.epsilon``, Opacus' RDP accountant).
* ``sasrec+fedavg`` -- FedAvg over ``--clients`` user partitions, ``--epochs`` rounds of one local epoch (equal
  epochs); its ``privacy`` block carries ``ratio_to_centralised`` (NDCG@10 over the reference's, with a paired
  bootstrap interval over users) and whether the 0.9 target is met.
* ``popular`` -- the popularity ranking, for scale (what a model that learned nothing personal gets).

    python benchmarks/privacy.py --out results/privacy.json            # 3 seeds, the full schedule
    python benchmarks/privacy.py --quick --out out/privacy-quick.json  # 1 seed, 1 epoch, short windows: minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from scipy import stats

from llmrec.cli import comparisons_table, metrics_table
from llmrec.data.registry import load_named
from llmrec.eval.compare import compare_results
from llmrec.eval.results import EvalResults, ModelResult
from llmrec.eval.runner import evaluate_models
from llmrec.models.base import DPOptions, FederatedOptions, TrainOptions

REFERENCE = "sasrec"
FEDERATED = "sasrec+fedavg"
TARGET_RATIO = 0.9
DELTA = 1e-5


def _ratio(results: EvalResults, a: str, b: str, metric: str, seed: int) -> dict[str, Any]:
    """``mean(a) / mean(b)`` over the users both have, with a paired bootstrap 95% interval (scipy)."""
    ra, rb = results.result(a), results.result(b)
    index = {u: i for i, u in enumerate(rb.per_user["users"])}
    pairs = [(ra.per_user[metric][i], rb.per_user[metric][index[u]]) for i, u in enumerate(ra.per_user["users"])]
    va = np.array([p[0] for p in pairs if p[0] is not None and p[1] is not None], dtype=np.float64)
    vb = np.array([p[1] for p in pairs if p[0] is not None and p[1] is not None], dtype=np.float64)
    ratio = float(va.mean() / vb.mean()) if vb.mean() > 0 else float("nan")
    boot = stats.bootstrap(
        (va, vb),
        lambda x, y, axis=-1: x.mean(axis=axis) / y.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return {
        "ratio_to_centralised": round(ratio, 4),
        "ratio_ci95": [round(low, 4), round(high, 4)],
        "ratio_reference": b,
        "ratio_metric": metric,
        "ratio_target": TARGET_RATIO,
        "ratio_target_met": bool(ratio >= TARGET_RATIO),
    }


def _finish(merged: EvalResults, seed: int, schedule: str) -> EvalResults:
    """Comparisons against the reference and the federated ratio, as far as the models so far allow."""
    labels = {r.model for r in merged.results}
    if REFERENCE in labels:
        merged = compare_results(merged, REFERENCE)
    if {REFERENCE, FEDERATED} <= labels:
        fed = merged.result(FEDERATED)
        fed.privacy = {**(fed.privacy or {}), **_ratio(merged, FEDERATED, REFERENCE, f"ndcg@{merged.k}", seed)}
    merged.split = {**merged.split, "schedule": schedule}
    merged.provenance = {}  # stamped afresh at every write (the wall time so far)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--dataset", default="movielens-small")
    parser.add_argument("--epsilons", default="1,3,8", help="DP budgets, comma-separated")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every fit (default 3; quick: 1)")
    parser.add_argument("--max-len", type=int, default=None, help="SASRec window (default 50; quick: 20)")
    parser.add_argument("--clients", type=int, default=10, help="federated user partitions")
    parser.add_argument("--clip", type=float, default=1.0, help="DP-SGD per-user clipping bound")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default 3; quick: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--only",
        default="popular,sasrec,fedavg,dp",
        help="which rows to run (comma-separated among popular, sasrec, fedavg, dp); merge partial runs with "
        "`llmrec compare a.json b.json --compare-to sasrec --out all.json`",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 20-item windows: a few minutes")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 3)
    max_len = args.max_len or (20 if args.quick else 50)
    seeds = args.seeds or (1 if args.quick else 3)
    epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
    console = Console()
    started = time.perf_counter()
    data = load_named(args.dataset, prefer_store=False)
    config = {"max_epochs": epochs, "max_len": max_len, "early_stopping": False}
    base = TrainOptions(seed=args.seed, threads=args.threads)
    federated = FederatedOptions(clients=args.clients, rounds=epochs, local_epochs=1)
    runs: list[tuple[str, str, dict[str, Any], TrainOptions]] = [
        ("popular", "popular", {}, base),
        (REFERENCE, "sasrec", config, base),
        (FEDERATED, "sasrec", config, base.model_copy(update={"federated": federated})),
    ]
    for eps in epsilons:
        dp = DPOptions(epsilon=eps, delta=DELTA, max_grad_norm=args.clip)
        runs.append((f"sasrec+dp(eps={eps:g})", "sasrec", config, base.model_copy(update={"dp": dp})))
    only = {o.strip() for o in args.only.split(",") if o.strip()}
    kinds = {"popular": "popular", REFERENCE: "sasrec", FEDERATED: "fedavg"}
    runs = [r for r in runs if kinds.get(r[0], "dp") in only]
    merged: EvalResults | None = None
    for label, name, cfg, options in runs:
        console.print(f"[dim]{label}...[/]")
        part = evaluate_models(
            data, [(name, cfg, label)], protocol="leave-last-out", tune=False, options=options, seeds=seeds
        )
        if merged is None:
            merged = part
        else:
            merged.results.append(ModelResult.model_validate(part.results[0].model_dump()))
        merged = _finish(merged, args.seed, f"{epochs} epochs, max_len {max_len}, no early stopping")
        merged.write_json(args.out)  # after every model: a later failure loses only that model
    assert merged is not None
    console.print(metrics_table(merged, [f"ndcg@{merged.k}", f"recall@{merged.k}"]))
    if merged.comparisons:
        console.print(comparisons_table(merged))
    for r in merged.results:
        if r.privacy:
            eps_spent = r.privacy.get("epsilon")
            console.print(f"{r.model}: epsilon spent {eps_spent}, NDCG@10 {r.metrics[f'ndcg@{merged.k}']:.4f}")
    ratio = next((r.privacy for r in merged.results if r.model == FEDERATED and r.privacy), {})
    if "ratio_to_centralised" in ratio:
        verdict = "met" if ratio["ratio_target_met"] else "missed"
        console.print(
            f"federated / centralised NDCG@10: {ratio['ratio_to_centralised']:.3f} {ratio['ratio_ci95']} "
            f"(target >= {TARGET_RATIO}: {verdict})"
        )
    console.print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
