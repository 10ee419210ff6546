"""The discriminative path on MovieLens latest-small: baselines, content, SASRec, BERT4Rec, fusion, cold start.

One run, the same per-user leave-last-out split as ``benchmarks/baselines.py``, hyperparameters chosen on
validation. Then the item-cold-start protocol (held-out items never seen in training, ranked among themselves),
the encoder's throughput and the vector index's query latency. Prints tables and writes one JSON: the warm
results in the shared shape plus ``cold_start``, ``encoder`` and ``index`` sections.

Every stochastic model is fitted with ``--seeds`` seeds; every metric has its 95% interval over users and every
model a paired comparison against the best classical baseline (warm) or popularity (cold items). The warm
baselines and SASRec can be reused from a baselines run of the same protocol (``--from-baselines``) instead of
being fitted again.

    python benchmarks/discriminative.py --out results/discriminative.json \
        --from-baselines results/baselines-leave-last-out.json --sequential sasrec
    python benchmarks/discriminative.py --quick --out out/discriminative-quick.json   # < 5 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from llmrec.cli import comparisons_table, metrics_table
from llmrec.data.movielens import load_movielens
from llmrec.encode.encoder import TextEncoder, TextEncoderConfig
from llmrec.encode.index import make_index
from llmrec.eval.compare import compare_results
from llmrec.eval.latency import latency_metrics
from llmrec.eval.provenance import provenance
from llmrec.eval.results import EvalResults
from llmrec.eval.runner import evaluate_models
from llmrec.models.base import TrainOptions
from llmrec.text.build import item_texts

BASELINES = ["popular", "itemknn", "ease", "als", "bpr"]
SEQUENTIAL: dict[str, dict[str, Any]] = {
    "sasrec": {},
    "sasrec+textinit": {"text_init": True},
    "bert4rec": {},
    "bert4rec+textinit": {"text_init": True},
}


def _encoder_speed(texts: list[str], backend: str) -> dict[str, float]:
    encoder = TextEncoder(TextEncoderConfig(backend=backend, batch_size=64))
    encoder.encode(texts[:64])  # load and warm up
    start = time.perf_counter()
    encoder.encode(texts)
    return {"texts_per_s": round(len(texts) / (time.perf_counter() - start), 1), "n_texts": len(texts)}


def _index_latency(vectors: np.ndarray, kind: str, queries: np.ndarray, k: int = 10) -> dict[str, float]:
    index = make_index(kind)
    index.add(np.arange(len(vectors)), vectors)
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None, :], k)
        times.append(1000 * (time.perf_counter() - start))
    return {
        **latency_metrics(times, digits=3),
        "n_items": len(vectors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per stochastic model (default 3; quick: 1)")
    parser.add_argument(
        "--sequential",
        default=",".join(SEQUENTIAL),
        help=f"sequential variants to run, comma-separated, '' for none (default {','.join(SEQUENTIAL)})",
    )
    parser.add_argument("--skip-sequential", action="store_true", help="leave out SASRec and BERT4Rec")
    parser.add_argument("--from-baselines", type=Path, default=None, help="reuse warm results of a baselines run")
    parser.add_argument("--quick", action="store_true", help="no sequential models, one seed, no speed sections")
    args = parser.parse_args(argv)
    console = Console()
    data = load_movielens()
    options = TrainOptions(seed=args.seed)
    seeds = args.seeds or (1 if args.quick else 3)
    sequential = [] if args.skip_sequential or args.quick else [v for v in args.sequential.split(",") if v]
    unknown = set(sequential) - set(SEQUENTIAL)
    if unknown:
        parser.error(f"unknown --sequential variants {sorted(unknown)}; choose from {', '.join(SEQUENTIAL)}")

    def log(done: int, total: int | None, message: str) -> None:
        """The evaluation's on_progress: print what it does next."""
        console.print(f"[dim]{message}[/]")

    # 1. Warm protocol: baselines and content tuned on validation; sequential models with their defaults.
    reused = EvalResults.read_json(args.from_baselines) if args.from_baselines else None
    have = {r.model for r in reused.results} if reused else set()
    baselines = ["popular", "ease"] if args.quick else BASELINES
    specs: list[Any] = [m for m in baselines if m not in have] + ["content"]
    specs += [(v.split("+")[0], SEQUENTIAL[v], v) for v in sequential if v not in have]
    warm = evaluate_models(data, specs, k=args.k, options=options, seeds=seeds, on_progress=log)
    if reused is not None:
        keep = set(baselines) | set(sequential)
        warm.results = [r for r in reused.results if r.model in keep] + warm.results
    key = f"ndcg@{args.k}"
    best_baseline = max((warm.result(m) for m in baselines), key=lambda r: r.valid_metrics.get(key) or 0)
    # Fusion of the best baseline (by validation), content and the best sequential model, weights on validation.
    components = [
        {"name": best_baseline.model, "config": best_baseline.config},
        {"name": "content", "config": warm.result("content").config},
    ]
    if sequential:
        seq = max(
            (r for r in warm.results if r.model.startswith(("sasrec", "bert4rec"))),
            key=lambda r: r.valid_metrics.get(key) or r.metrics[key],
        )
        components.append({"name": seq.model.split("+")[0], "config": seq.config})
    fused = evaluate_models(
        data,
        [("fusion", {"components": components}, "fusion")],
        k=args.k,
        options=options,
        seeds=seeds,
        on_progress=log,
    )
    warm.results += fused.results
    warm = compare_results(warm)
    console.print(metrics_table(warm, [key, f"hr@{args.k}", f"mrr@{args.k}", f"coverage@{args.k}"]))
    console.print(comparisons_table(warm))
    best_single = max(warm.result(m).metrics[key] for m in baselines)
    gain = warm.result("fusion").metrics[key] / best_single - 1
    row = next((c for c in warm.comparisons if c.a == "fusion" and c.metric == key), None)
    evidence = f", paired difference {row.diff:+.4f} {row.ci95}: {row.verdict}" if row else ""
    console.print(f"fusion vs best single baseline NDCG@{args.k}: {gain:+.1%} (target +10%){evidence}")

    # 2. Item cold start.
    cold = evaluate_models(
        data,
        ["popular", "content"],
        k=args.k,
        protocol="cold-items",
        options=options,
        compare_to="popular",
        on_progress=log,
    )
    console.print(metrics_table(cold, [key, f"hr@{args.k}", f"coverage@{args.k}"]))
    ratio = cold.result("content").metrics[key] / max(cold.result("popular").metrics[key], 1e-9)
    row = next((c for c in cold.comparisons if c.a == "content" and c.metric == key), None)
    evidence = f", paired difference {row.diff:+.4f} {row.ci95}: {row.verdict}" if row else ""
    console.print(f"cold items: content NDCG@{args.k} = {ratio:.1f}x popularity (target 5x){evidence}")

    # 3. Encoder throughput on short item texts, and 4. index latency.
    encoder: dict[str, Any] = {}
    index: dict[str, Any] = {}
    if not args.quick:
        texts = item_texts(data)[:2048]
        encoder = {backend: _encoder_speed(texts, backend) for backend in ("torch", "onnx")}
        console.print(f"encoder texts/s: {encoder} (target 400)")
        vectors = TextEncoder().encode(item_texts(data))
        queries = vectors[np.random.default_rng(args.seed).choice(len(vectors), 200, replace=False)]
        index = {kind: _index_latency(vectors, kind, queries) for kind in ("exact", "faiss")}
        console.print(f"index query latency: {index}")

    warm.provenance = provenance()
    out = warm.model_dump()
    out.update(
        {
            "fusion_gain_over_best_baseline": round(gain, 4),
            "cold_start": cold.model_dump(),
            "cold_content_over_popular": round(ratio, 2),
            "encoder": encoder,
            "index": index,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
