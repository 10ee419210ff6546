"""Text-encoder throughput (torch, ONNX int8) on short item texts, agreement with torch, index query latency.

Questions answered:

1. How many MovieLens item texts per second does all-MiniLM-L6-v2 embed on ``--threads`` CPU threads with the
   torch backend (sentence-transformers) and with the ONNX Runtime int8 backend, as packaged (int8 weights,
   float products) and dynamically quantised (int8 products), at batch sizes 32/64/128?
   Configurations run interleaved, ``--repeats`` times each, after a warm-up; the best and the median run are
   reported (the best is the least disturbed by other load on a shared machine).
2. Does each ONNX variant agree with torch? Cosine between the two vectors of every text (mean, min), and the overlap of
   each item's 10 nearest neighbours in the sample (what a recommender actually uses).
3. With ``--ranking``: does the difference reach recommendations? The content scorer's NDCG@10 with each
   variant, untuned, on the leave-last-out and the cold-items protocols (a few minutes more), with 95%
   bootstrap intervals over users and each ONNX variant minus torch paired over the same users.
4. How long does a query take on each vector index (exact numpy, faiss flat, faiss HNSW), on the embedded
   sample and on a synthetic 100k-item catalogue: single-query p50/p95 and batched throughput, with 50 seen
   items excluded per query.

Prints progress and tables and writes the results JSON (DESIGN.md shape: ``dataset``, ``protocol``, ``k``,
``results``, ``comparisons``, ``provenance``), plus ``summary``: one object per encoder variant (texts/s at
batch 64, agreement with torch, the content scorer's NDCG@10 per protocol with its interval) that the README
table is generated from. Timings on a shared machine are noisy: the load average is recorded beside them.
``--quick`` (a smoke run, about a minute): 512 texts, batch 64 only, one repeat, a 10k-item synthetic index, no
ranking unless ``--ranking`` is given.

    python benchmarks/encoder_speed.py --out out/encoder_speed.json [--n 2048] [--threads 2] [--repeats 3] \
        [--ranking] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from llmrec.data.dataset import Dataset
from llmrec.data.movielens import load_movielens
from llmrec.encode.encoder import TextEncoder
from llmrec.encode.index import ExactIndex, FaissIndex, VectorIndex
from llmrec.eval.latency import latency_metrics
from llmrec.eval.provenance import provenance
from llmrec.eval.runner import evaluate_models
from llmrec.text.build import item_texts

BATCH_SIZES = (32, 64, 128)
QUICK_BATCH_SIZES = (64,)
# Label -> encoder settings, in table order.
VARIANTS: dict[str, dict[str, str]] = {
    "torch": {"backend": "torch"},
    "onnx int8": {"backend": "onnx"},
    "onnx int8 dynamic": {"backend": "onnx", "quantization": "dynamic"},
}


def _slug(label: str) -> str:
    """A variant's label as it appears in result names ("onnx int8" -> "onnx-int8")."""
    return label.replace(" ", "-")


def _timed(encoder: TextEncoder, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    return time.perf_counter() - start, vectors


def throughput(
    texts: list[str], threads: int, repeats: int, console: Console, batch_sizes: tuple[int, ...] = BATCH_SIZES
) -> tuple[list[dict], dict]:
    """Texts/s per variant and batch size; returns result rows and the vectors per variant (batch 64)."""
    encoders = {
        (label, bs): TextEncoder(batch_size=bs, threads=threads, **settings)  # type: ignore[arg-type]
        for label, settings in VARIANTS.items()
        for bs in batch_sizes
    }
    vectors: dict[str, np.ndarray] = {}
    for (_backend, bs), enc in encoders.items():  # warm-up: load the model, first batches
        enc.encode(texts[: 2 * bs])
    runs: dict[tuple[str, int], list[float]] = {key: [] for key in encoders}
    for rep in range(repeats):
        for key, enc in encoders.items():  # interleaved, so background load hits every configuration alike
            seconds, out = _timed(enc, texts)
            runs[key].append(len(texts) / seconds)
            if key[1] == 64:
                vectors[key[0]] = out
            console.print(f"[dim]run {rep + 1}/{repeats} {key[0]} bs={key[1]}: {runs[key][-1]:.0f} texts/s[/]")
    rows = []
    for (label, bs), values in runs.items():
        rows.append(
            {
                "model": f"minilm-{_slug(label)}@bs{bs}",
                "backend": label,
                "batch_size": bs,
                "metrics": {
                    "throughput_per_s": round(max(values), 1),
                    "throughput_median_per_s": round(float(np.median(values)), 1),
                    "runs_per_s": [round(v, 1) for v in values],
                },
            }
        )
    return rows, vectors


def agreement(torch_vectors: np.ndarray, onnx_vectors: np.ndarray, k: int = 10) -> dict[str, float]:
    """Cosine per text and top-k neighbour overlap between the two backends' vectors."""
    cos = np.sum(torch_vectors * onnx_vectors, axis=1) / (
        np.linalg.norm(torch_vectors, axis=1) * np.linalg.norm(onnx_vectors, axis=1)
    )
    overlaps = []
    sims_t = torch_vectors @ torch_vectors.T
    sims_o = onnx_vectors @ onnx_vectors.T
    np.fill_diagonal(sims_t, -np.inf)
    np.fill_diagonal(sims_o, -np.inf)
    top_t = np.argsort(-sims_t, axis=1)[:, :k]
    top_o = np.argsort(-sims_o, axis=1)[:, :k]
    for a, b in zip(top_t, top_o, strict=True):
        overlaps.append(len(set(a) & set(b)) / k)
    return {
        "cosine_mean": round(float(cos.mean()), 5),
        "cosine_min": round(float(cos.min()), 5),
        f"neighbour_overlap@{k}": round(float(np.mean(overlaps)), 4),
    }


def index_latency(name: str, index: VectorIndex, vectors: np.ndarray, k: int, rng: np.random.Generator) -> dict:
    """Single-query p50/p95 (ms) and batched throughput (queries/s), 50 excluded ids per query."""
    n = len(vectors)
    groups = rng.integers(0, n, size=(200, 20))
    queries = vectors[groups].mean(axis=1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = [set(rng.integers(0, n, size=50).tolist()) for _ in range(len(queries))]
    index.search(queries[:2], k, exclude=exclude[:2])  # warm-up
    single = []
    for q, ex in zip(queries, exclude, strict=True):
        start = time.perf_counter()
        index.search(q[None, :], k, exclude=[ex])
        single.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    index.search(queries, k, exclude=exclude)
    batch_s = time.perf_counter() - start
    return {
        "model": name,
        "metrics": {
            **latency_metrics(single, digits=3),
            "throughput_per_s": round(len(queries) / batch_s, 1),
        },
        "n_items": n,
    }


def indexes(vectors: np.ndarray, k: int, label: str) -> list[dict]:
    rng = np.random.default_rng(0)
    ids = np.arange(len(vectors))
    rows = []
    for name, index in (
        ("exact", ExactIndex()),
        ("faiss-flat", FaissIndex("flat")),
        ("faiss-hnsw", FaissIndex("hnsw")),
    ):
        start = time.perf_counter()
        index.add(ids, vectors)
        build_s = time.perf_counter() - start
        row = index_latency(f"index:{name}@{label}", index, vectors, k, rng)
        row["metrics"]["build_s"] = round(build_s, 3)
        rows.append(row)
    return rows


def ranking(data: Dataset, k: int, console: Console) -> tuple[list[dict], list[dict]]:
    """The content scorer (defaults, no tuning) with each encoder variant, per protocol, with intervals.

    Returns:
        One row per (protocol, variant) with test metrics and their 95% intervals over users, and the paired
        comparisons of each ONNX variant minus torch on the same users (``protocol`` added to each).

    """
    rows: list[dict] = []
    comparisons: list[dict] = []
    reference = f"content:{_slug('torch')}"
    for protocol in ("leave-last-out", "cold-items"):
        # The in-memory embedding cache is keyed by each encoder's settings: every variant embeds the catalogue
        # once, and the second protocol reuses it (accuracy only is measured here, not time).
        specs = [
            ("content", {"encoder": settings, "cache": "memory"}, f"content:{_slug(label)}")
            for label, settings in VARIANTS.items()
        ]
        console.print(f"[dim]ranking: {protocol}, {len(specs)} encoder variants...[/]")
        results = evaluate_models(data, specs, k=k, protocol=protocol, tune=False, compare_to=reference)
        for label in VARIANTS:
            result = results.result(f"content:{_slug(label)}")
            rows.append(
                {
                    "model": result.model,
                    "encoder": label,
                    "protocol": protocol,
                    "metrics": result.metrics,
                    "ci95": result.ci95,
                }
            )
            console.print(f"[dim]{protocol} {result.model}: NDCG@{k} {result.metrics[f'ndcg@{k}']:.4f}[/]")
        comparisons += [
            c.model_dump() | {"protocol": protocol, "a": f"{c.a} ({protocol})", "b": f"{c.b} ({protocol})"}
            for c in results.comparisons
            if c.metric == f"ndcg@{k}"
        ]
    return rows, comparisons


def summary(
    speed_rows: list[dict], agree: dict[str, dict[str, float]], ranking_rows: list[dict], k: int
) -> dict[str, dict]:
    """Per encoder variant: texts/s at batch 64, agreement with torch and NDCG@k per protocol (the README row)."""
    out: dict[str, dict] = {}
    for label in VARIANTS:
        speed = next(r for r in speed_rows if r["backend"] == label and r["batch_size"] == 64)["metrics"]
        entry: dict = {
            "texts_per_s": speed["throughput_per_s"],
            "texts_per_s_median": speed["throughput_median_per_s"],
            "agreement": agree.get(label, {"cosine_mean": 1.0, "cosine_min": 1.0, f"neighbour_overlap@{k}": 1.0}),
            "metrics": {},
            "ci95": {},
        }
        for row in ranking_rows:
            if row["encoder"] == label:
                tag = "warm" if row["protocol"] == "leave-last-out" else "cold"
                entry["metrics"][f"ndcg@{k}:{tag}"] = row["metrics"][f"ndcg@{k}"]
                entry["ci95"][f"ndcg@{k}:{tag}"] = row["ci95"].get(f"ndcg@{k}")
        out[label] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--n", type=int, default=2048, help="item texts to embed per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--synthetic", type=int, default=100_000, help="items in the synthetic index catalogue")
    parser.add_argument("--skip-index", action="store_true", help="measure the encoders only")
    parser.add_argument("--ranking", action="store_true", help="also the content scorer's NDCG with each variant")
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated; 64 must be one of them"
    )
    parser.add_argument("--quick", action="store_true", help="512 texts, batch 64, 1 repeat, 10k synthetic items")
    args = parser.parse_args(argv)
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",") if b.strip())
    if 64 not in batch_sizes:
        parser.error("--batch-sizes must include 64 (the agreement and the summary use batch 64)")
    if args.quick:
        args.n, args.repeats, args.synthetic = min(args.n, 512), 1, min(args.synthetic, 10_000)
        batch_sizes = QUICK_BATCH_SIZES
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console()
    data = load_movielens()
    texts = item_texts(data)
    rng = np.random.default_rng(42)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.n, len(texts)), replace=False)]
    console.print(
        f"{len(sample)} MovieLens item texts, mean {np.mean([len(t) for t in sample]):.0f} characters; "
        f"{args.threads} threads; os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    load_before = list(os.getloadavg())
    speed_rows, vectors = throughput(sample, args.threads, args.repeats, console, batch_sizes)
    agree = {label: agreement(vectors["torch"], vectors[label]) for label in VARIANTS if label != "torch"}
    index_rows: list[dict] = []
    ranking_rows, comparisons = ranking(data, args.k, console) if args.ranking else ([], [])
    if not args.skip_index:
        console.print("[dim]index latency...[/]")
        index_rows = indexes(vectors["torch"], args.k, f"{len(sample)}")
        dim = vectors["torch"].shape[1]
        synthetic = np.random.default_rng(1).normal(size=(args.synthetic, dim)).astype(np.float32)
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        index_rows += indexes(synthetic, args.k, f"{args.synthetic}-synthetic")

    table = Table(title=f"encoder throughput, texts/s ({args.threads} threads; best / median of {args.repeats})")
    table.add_column("backend")
    for bs in batch_sizes:
        table.add_column(f"batch {bs}", justify="right")
    for label in VARIANTS:
        cells = []
        for bs in batch_sizes:
            m = next(r for r in speed_rows if r["backend"] == label and r["batch_size"] == bs)["metrics"]
            cells.append(f"{m['throughput_per_s']:.0f} / {m['throughput_median_per_s']:.0f}")
        table.add_row(label, *cells)
    console.print(table)
    for label, metrics in agree.items():
        console.print(f"{label} vs torch agreement: {metrics}")
    itable = Table(title=f"index query latency (k={args.k}, 50 excluded ids per query)")
    for col in ("index", "items", "p50 ms", "p95 ms", "batch queries/s", "build s"):
        itable.add_column(col, justify="right" if col != "index" else "left")
    for row in index_rows:
        m = row["metrics"]
        itable.add_row(
            row["model"],
            str(row["n_items"]),
            f"{m['latency_p50_ms']:.2f}",
            f"{m['latency_p95_ms']:.2f}",
            f"{m['throughput_per_s']:.0f}",
            f"{m['build_s']:.2f}",
        )
    if index_rows:
        console.print(itable)
    if ranking_rows:
        rtable = Table(title=f"content scorer by encoder variant (untuned): NDCG@{args.k} / HR@{args.k}")
        for col in ("encoder", "leave-last-out", "cold-items"):
            rtable.add_column(col, justify="right" if col != "encoder" else "left")
        for label in VARIANTS:
            cells = [
                f"{m[f'ndcg@{args.k}']:.4f} / {m[f'hr@{args.k}']:.4f}"
                for r in ranking_rows
                if r["encoder"] == label
                for m in [r["metrics"]]
            ]
            rtable.add_row(label, *cells)
        console.print(rtable)
    out = {
        "dataset": data.name,
        "protocol": "encoder-speed",
        "k": args.k,
        "threads": args.threads,
        "n_texts": len(sample),
        "repeats": args.repeats,
        "quick": args.quick,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "results": [
            *speed_rows,
            *({"model": f"minilm-{_slug(name)} vs minilm-torch", "metrics": m} for name, m in agree.items()),
            *index_rows,
            *ranking_rows,
        ],
        "summary": summary(speed_rows, agree, ranking_rows, args.k),
        "reference": "content:torch" if comparisons else None,
        "comparisons": comparisons,
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
