"""Time and peak memory against size for the jobs that grow with the data, on one process and on Ray.

Questions answered:

1. How do ingest (SQLite), fit (ALS, ItemKNN) and batch recommendation (ALS top-10 for every user, one process)
   grow with the number of interactions? Synthetic data (:mod:`llmrec.data.synth`: power-law popularity,
   sessions) with a fixed catalogue and ``users = interactions / 20``; each step's wall time, throughput and the
   peak resident memory of this process during the step (sampled every 5 ms), and a fitted scaling exponent
   (slope of log time against log size; 1 is linear).
2. How does embedding grow with the number of texts (one process, the embedding cache in memory)?
3. One vs two Ray workers (a private local Ray): batch recommend at the largest size and batch embed at the
   largest text count, against the one-process run (recommend: batches of 200 users, as the Ray job sends
   them), with a check that the results are identical to the library's one call over every user (lists equal,
   scores bit for bit; vectors bit for bit). Ray's overhead is its time over the one-process time; it includes
   starting the actors and loading the model in each.
4. ``cluster``: a real two-node Ray cluster on loopback (:class:`llmrec.scale.cluster.LocalCluster`: ``ray start
   --head`` plus a second ``ray start --address``), ``llmrec batch recommend`` and ``llmrec batch embed`` run
   against it from a separate driver process, ``identical`` when both equal the one-process results.

Peak memory of Ray jobs is this (driver) process's only; the actors are other processes.

    python benchmarks/scale.py --quick --out results/scale-quick.json     # about 4 minutes on 2 cores
    python benchmarks/scale.py --out out/scale.json                       # 1e5, 1e6, 1e7 interactions
    python benchmarks/scale.py --ingest-only --ingest-sizes 100000,1000000 --pg-url postgresql+psycopg://... \
        --ingest-file out/synth-10m/interactions.csv --out out/ingest.json   # file ingest alone

5. ``ingest_files``: ``llmrec ingest``'s path (a CSV streamed into the store) per backend (SQLite; PostgreSQL with
   ``--pg-url`` or ``LLMREC_BENCH_PG_URL``, a scratch database) and size, each in a fresh process: rows/s of the
   ingest call, the process's peak RSS, the time of an idempotent re-ingest, and the load average (the machine
   is shared; throughput is only comparable at a similar load).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

import llmrec
from llmrec.data.store import Store
from llmrec.data.synth import synthesize
from llmrec.eval.provenance import provenance
from llmrec.models.base import TrainOptions
from llmrec.models.registry import get_scorer
from llmrec.pipeline import Pipeline, PipelineConfig

console = Console()
SRC = Path(llmrec.__file__).resolve().parents[1]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


@contextmanager
def measured(row: dict[str, Any]) -> Iterator[None]:
    """Fill ``row`` with ``seconds`` and ``peak_rss_mb`` (this process, sampled every 5 ms) of the block."""
    gc.collect()
    peak = [_rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        row["seconds"] = round(time.perf_counter() - start, 3)
        done.set()
        thread.join()
        row["peak_rss_mb"] = round(max(peak[0], _rss()) / 2**20, 1)


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(size): the scaling exponent (None with fewer than two sizes)."""
    if len(sizes) < 2:
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-6)), 1)[0]), 3)


def _same_lists(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cast = {"user_id": object, "item_id": object}
    return a.reset_index(drop=True).astype(cast).equals(b.reset_index(drop=True).astype(cast))


def recommend_batched(pipe: Pipeline, users: list[str], batch: int = 200) -> pd.DataFrame:
    """Top-10 lists for ``users`` in one process, ``batch`` users per call (what a batch job does: constant memory)."""
    frames = [pipe.recommend(users[i : i + batch], 10, rerank=False).to_frame() for i in range(0, len(users), batch)]
    return pd.concat(frames, ignore_index=True)


def _als_pipeline() -> Pipeline:
    config = {"retriever": {"name": "als", "config": {"factors": 32, "iterations": 10}}, "rerank": None}
    return Pipeline(PipelineConfig.model_validate(config))


def size_rows(sizes: list[int], items: int, work: Path) -> tuple[list[dict[str, Any]], Path]:
    """Ingest, fit and one-process recommend at each size; returns the rows and the largest saved ALS pipeline."""
    rows: list[dict[str, Any]] = []
    saved = work / "als"
    for n in sizes:
        data = synthesize(users=max(n // 20, 10), items=items, interactions=n, seed=0).to_dataset(f"synth-{n}")
        base = {"interactions": len(data), "users": data.n_users, "items": data.n_items}
        row = {"step": "ingest", **base}
        store = Store(f"sqlite:///{work / f'ingest-{n}.db'}")
        store.migrate()
        with measured(row):
            store.ingest(data, name="synth")
        row["throughput_per_s"] = round(len(data) / row["seconds"], 1)
        rows.append(row)
        store.close()
        for name in ("als", "itemknn"):
            row = {"step": f"fit_{name}", **base}
            with measured(row):
                get_scorer(name).fit(data, TrainOptions(seed=0))
            rows.append(row)
        pipe = _als_pipeline().fit(data, TrainOptions(seed=0))
        users = [str(u) for u in data.user_vocab.ids]
        row = {"step": "recommend_als_top10", **base, "batch_size": 200}
        with measured(row):
            recommend_batched(pipe, users)
        row["throughput_per_s"] = round(len(users) / row["seconds"], 1)
        rows.append(row)
        if n == sizes[-1]:
            pipe.save(saved)
        console.print(f"size {n}: done")
    return rows, saved


_INGEST_CHILD = """
import json, os, sys, time
from llmrec.data.store import Store
url, name, path = sys.argv[1:4]
store = Store(url)
store.migrate()
store.delete_dataset(name)
began, cpu = time.perf_counter(), time.process_time()
report = store.ingest_files(name, path)
seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
facts = {"seconds": seconds, "cpu_seconds": cpu, "inserted": report.inserted}
if report.inserted <= 1_000_000:  # the re-ingest (all rows skipped) of a larger file is left out: time
    again = time.perf_counter()
    second = store.ingest_files(name, path)
    facts.update(reingest_seconds=time.perf_counter() - again, reingest_inserted=second.inserted)
with open("/proc/self/status") as status:  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's)
    facts["peak_rss_kb"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps(facts), flush=True)
if url.startswith("postgresql"):  # a SQLite file is simply removed (deleting 10M rows took minutes and 450 MB)
    store.delete_dataset(name)
"""


def ingest_file_row(url: str, backend: str, path: Path, rows: int) -> dict[str, Any]:
    """``Store.ingest_files`` (what ``llmrec ingest`` runs) on one file, in a fresh process.

    A fresh process, so that its peak RSS (``VmHWM``) is the ingest's own (imports included) and not this
    benchmark's. ``seconds`` times the ingest call alone (not the interpreter start); then the same file is
    ingested again (idempotence: 0 inserted) and timed as ``reingest_seconds``.
    """
    load_before = os.getloadavg()
    proc = subprocess.Popen(
        [sys.executable, "-c", _INGEST_CHILD, url, "bench-ingest", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ingest child failed ({proc.returncode}): {err.decode()[-2000:]}")
    facts = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "step": "ingest_file", "backend": backend, "interactions": rows,
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "seconds": round(facts["seconds"], 2), "throughput_per_s": round(rows / facts["seconds"], 1),
        # CPU time of the ingesting process (not the PostgreSQL server's): rows per CPU second tells what one
        # free core would do, whatever the load of the shared machine.
        "cpu_seconds": round(facts["cpu_seconds"], 2), "rows_per_cpu_s": round(rows / facts["cpu_seconds"], 1),
        "peak_rss_mb": round(facts["peak_rss_kb"] / 1024, 1), "inserted": facts["inserted"],
        "reingest_seconds": round(facts["reingest_seconds"], 2) if "reingest_seconds" in facts else None,
        "reingest_inserted": facts.get("reingest_inserted"),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


def ingest_file_rows(sizes: list[int], work: Path, pg_url: str | None, files: list[Path]) -> list[dict[str, Any]]:
    """File ingest (streamed, ``llmrec ingest``'s path) per backend and size: rows/s and the process's peak RSS.

    Files are ``llmrec synth`` CSVs (users = interactions / 20, 10k items, 1-5 ratings), or those given.
    """
    from llmrec.data.synth import SynthConfig, write_synth

    inputs: list[tuple[Path, int]] = []
    for n in sizes:
        config = SynthConfig(users=max(n // 20, 10), items=10_000, interactions=n, seed=0, ratings=True)
        paths = write_synth(config, work / f"synth-{n}")
        inputs.append((paths["interactions"], json.loads(paths["meta"].read_text())["rows"]["interactions"]))
    for path in files:
        with path.open("rb") as handle:
            inputs.append((path, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b"")) - 1))
    backends = [("sqlite", "")] + ([("postgresql", pg_url)] if pg_url else [])
    rows = []
    for path, n in inputs:
        for backend, url in backends:
            db_url = url or f"sqlite:///{work / f'file-ingest-{n}.db'}"
            row = ingest_file_row(db_url, backend, path, n)
            console.print(f"ingest file {n:,} rows into {backend}: {row['throughput_per_s']:,.0f} rows/s, "
                          f"peak RSS {row['peak_rss_mb']} MB, load {row['loadavg_before'][0]}")  # fmt: skip
            rows.append(row)
            if not url:
                (work / f"file-ingest-{n}.db").unlink(missing_ok=True)
    return rows


def target_row(interactions: int, items: int, users: int) -> dict[str, Any]:
    """ALS top-10 over a large catalogue in one process (batches of 200): the users-per-second target's figure."""
    data = synthesize(users=max(interactions // 20, users), items=items, interactions=interactions, seed=3)
    dataset = data.to_dataset("target")
    pipe = _als_pipeline().fit(dataset, TrainOptions(seed=0))
    chosen = [str(u) for u in dataset.user_vocab.ids[:users]]
    row: dict[str, Any] = {"step": "recommend_als_top10", "interactions": len(dataset), "items": dataset.n_items,
                           "users": len(chosen), "batch_size": 200}  # fmt: skip
    with measured(row):
        recommend_batched(pipe, chosen)
    row["throughput_per_s"] = round(len(chosen) / row["seconds"], 1)
    return row


def summary(rows: list[dict[str, Any]], exponents: dict[str, float | None], ray: list[dict[str, Any]],
            cluster: dict[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The issue's targets, each with the figure measured here (met or not, as measured)."""
    two = next((r for r in ray if r["job"] == "recommend" and r["engine"].startswith("ray, 2")), {})
    largest = max(r.get("interactions", 0) for r in rows)
    out = [
        {"figure": f"batch recommend, ALS top-10 over {target['items']:,} items, users/s (one process)",
         "target": ">= 2000", "value": target["throughput_per_s"]},
        {"figure": "scaling exponent in interactions: ingest", "target": "<= 1.1", "value": exponents["ingest"]},
        {"figure": "scaling exponent in interactions: batch recommend", "target": "<= 1.1",
         "value": exponents["recommend_als_top10"]},
        {"figure": f"Ray overhead vs one process, recommend, 2 workers, {largest:,} interactions",
         "target": "<= 20%", "value": two.get("overhead_vs_one_process")},
        {"figure": "Ray results identical to one process (every run)", "target": "true",
         "value": all(bool(r.get("identical", True)) for r in ray)},
        {"figure": "cluster: nodes", "target": "2", "value": cluster.get("nodes")},
        {"figure": "cluster: identical", "target": "true", "value": cluster.get("identical")},
    ]  # fmt: skip
    return out


_INGEST_COLUMNS = ["backend", "interactions", "seconds", "throughput_per_s", "rows_per_cpu_s", "peak_rss_mb",
                   "reingest_seconds"]  # fmt: skip


def ingest_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 18's ingest targets against the largest file measured per backend (met or not, as measured)."""
    out = []
    for backend in sorted({r["backend"] for r in rows}):
        largest = max((r for r in rows if r["backend"] == backend), key=lambda r: r["interactions"])
        out.append(
            {
                "figure": f"file ingest rows/s, {backend}, {largest['interactions']:,} rows",
                "target": ">= 100000",
                "value": largest["throughput_per_s"],
                "met": largest["throughput_per_s"] >= 100_000,
                "loadavg": largest["loadavg_before"],
            }
        )
        out.append({"figure": f"file ingest peak RSS MB, {backend}, {largest['interactions']:,} rows",
                    "target": "<= 300 (at 10M rows)", "value": largest["peak_rss_mb"],
                    "met": largest["peak_rss_mb"] <= 300})  # fmt: skip
    return out


def embed_texts(count: int) -> list[str]:
    """``count`` distinct synthetic item texts."""
    from llmrec.text.build import item_texts

    items = synthesize(users=10, items=count, interactions=count, topics=min(20, count), seed=1).to_dataset()
    return item_texts(items)


def embed_rows(counts: list[int], chunk: int) -> list[dict[str, Any]]:
    """One-process embedding (through an in-memory cache) of ``counts`` texts; the encoder loaded beforehand."""
    from llmrec.encode.cache import CachedEncoder, EmbeddingCache
    from llmrec.encode.encoder import TextEncoder

    encoder = TextEncoder()
    encoder.encode(["warm up"])
    rows = []
    for count in counts:
        texts = embed_texts(count)
        row: dict[str, Any] = {"step": "embed", "texts": count}
        with measured(row):
            CachedEncoder(encoder, EmbeddingCache(None), chunk_size=chunk).encode(texts)
        row["throughput_per_s"] = round(count / row["seconds"], 1)
        rows.append(row)
    return rows


def ray_rows(saved: Path, texts: int, chunk: int) -> list[dict[str, Any]]:
    """Batch recommend and embed with one and with two workers on a private local Ray, against one process."""
    import ray

    from llmrec.encode.cache import CachedEncoder, EmbeddingCache
    from llmrec.encode.encoder import TextEncoder
    from llmrec.scale import RayOptions, batch_embed, batch_recommend, model_users

    users = [str(u) for u in model_users(saved)]
    pipe = Pipeline.load(saved)
    want = pipe.recommend(users, 10, rerank=False).to_frame()  # the reference: every user in one library call
    single: dict[str, Any] = {"job": "recommend", "engine": "one process, batches of 200", "users": len(users)}
    with measured(single):
        batched = recommend_batched(pipe, users)
    single["throughput_per_s"] = round(len(users) / single["seconds"], 1)
    single["identical"] = _same_lists(batched, want)
    sample = embed_texts(texts)
    encoder = TextEncoder()
    encoder.encode(["warm up"])
    one_embed: dict[str, Any] = {"job": "embed", "engine": "one process", "texts": texts}
    with measured(one_embed):
        vectors = CachedEncoder(encoder, EmbeddingCache(None), chunk_size=chunk).encode(sample)
    one_embed["throughput_per_s"] = round(texts / one_embed["seconds"], 1)
    rows = [single, one_embed]
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        for workers in (1, 2):
            options = RayOptions(workers=workers, cpus_per_worker=1.0)
            out = saved.parent / f"ray-{workers}.parquet"
            row: dict[str, Any] = {"job": "recommend", "engine": f"ray, {workers} worker(s)", "users": len(users)}
            with measured(row):
                report = batch_recommend(saved, k=10, out=out, options=options)
            row["throughput_per_s"] = round(len(users) / row["seconds"], 1)
            row["overhead_vs_one_process"] = round(row["seconds"] / single["seconds"] - 1, 3)
            row["identical"] = _same_lists(pd.read_parquet(out), want)
            row["nodes"] = report.nodes
            rows.append(row)
            row = {"job": "embed", "engine": f"ray, {workers} worker(s)", "texts": texts}
            with measured(row):
                got, embed_report = batch_embed(sample, EmbeddingCache(None), chunk_size=chunk, options=options)
            row["throughput_per_s"] = round(texts / row["seconds"], 1)
            row["overhead_vs_one_process"] = round(row["seconds"] / one_embed["seconds"] - 1, 3)
            row["identical"] = bool(np.array_equal(got, vectors))
            row["nodes"] = embed_report.nodes
            rows.append(row)
            console.print(f"ray with {workers} worker(s): done")
    finally:
        ray.shutdown()
    return rows


def cluster_section(saved: Path, texts: int, chunk: int, work: Path) -> dict[str, Any]:
    """Batch recommend and embed on a real two-node loopback cluster, from separate driver processes."""
    from llmrec.encode.cache import CachedEncoder, EmbeddingCache
    from llmrec.encode.encoder import TextEncoder
    from llmrec.scale.cluster import LocalCluster
    from llmrec.text.build import item_texts

    db = f"sqlite:///{work / 'cluster.db'}"
    tiny = synthesize(users=10, items=texts, interactions=texts * 4, topics=min(20, texts), seed=2)
    tiny = tiny.to_dataset("cluster-texts")
    Store(db).ingest(tiny, name="cluster-texts")
    stored = Store(db).load("cluster-texts")
    want_vectors = CachedEncoder(TextEncoder(), EmbeddingCache(None), chunk_size=chunk).encode(item_texts(stored))
    users = [str(u) for u in Pipeline.load(saved).data.user_vocab.ids]
    want_lists = Pipeline.load(saved).recommend(users, 10, rerank=False).to_frame()
    section: dict[str, Any] = {"nodes": 0, "identical": False}
    start = time.perf_counter()
    with LocalCluster(nodes=2, cpus_per_node=1, timeout_s=180, env={"PYTHONPATH": str(SRC)}) as cluster:
        section["start_s"] = round(time.perf_counter() - start, 1)
        nodes = cluster.alive_nodes()
        section["nodes"] = len(nodes)
        section["node_addresses"] = sorted(str(n["NodeManagerAddress"]) for n in nodes)

        def cli(*args: str) -> dict[str, Any]:
            report = work / "cluster-report.json"
            began = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "llmrec.cli", "batch", *args, "--address", cluster.address, "--workers", "2",
                 "--cpus-per-worker", "1", "--report", str(report)],
                env=cluster.env(), check=True, timeout=600, capture_output=True,
            )  # fmt: skip
            facts = json.loads(report.read_text())
            facts["driver_wall_s"] = round(time.perf_counter() - began, 1)
            return dict(facts)

        out = work / "cluster.parquet"
        rec = cli("recommend", "--model", str(saved), "--out", str(out))
        rec_same = _same_lists(pd.read_parquet(out), want_lists)
        npz = work / "cluster.npz"
        emb = cli("embed", "--dataset", "cluster-texts", "--db", db, "--chunk-size", str(chunk), "--out", str(npz))
        with np.load(npz, allow_pickle=False) as saved_vectors:
            emb_same = bool(np.array_equal(saved_vectors["vectors"], want_vectors))
    section.update(
        identical=rec_same and emb_same,
        recommend={"identical": rec_same, "users": rec["users"], "nodes_used": rec["nodes"],
                   "seconds": round(rec["seconds"], 2), "driver_wall_s": rec["driver_wall_s"]},
        embed={"identical": emb_same, "texts": emb["texts"], "nodes_used": emb["nodes"],
               "seconds": round(emb["seconds"], 2), "driver_wall_s": emb["driver_wall_s"]},
    )  # fmt: skip
    return section


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def _timed(label: str, fn: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    out = fn()
    console.print(f"{label}: {time.perf_counter() - began:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small sizes (minutes on 2 cores).")
    parser.add_argument("--out", type=Path, required=True, help="Results JSON to write.")
    parser.add_argument("--no-cluster", action="store_true", help="Skip the two-node cluster section.")
    parser.add_argument("--ingest-only", action="store_true", help="Only the file-ingest section.")
    parser.add_argument("--ingest-sizes", type=str, default=None, help="Comma-separated file-ingest sizes.")
    parser.add_argument("--ingest-file", type=Path, action="append", default=[], help="Also ingest this CSV file.")
    parser.add_argument(
        "--pg-url", default=os.environ.get("LLMREC_BENCH_PG_URL"), help="PostgreSQL for file ingest (a scratch DB)."
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.quick:
        sizes, items, text_counts, chunk = [20_000, 60_000, 200_000], 3_000, [16, 32, 64], 16
        target_size = (300_000, 100_000, 1_000)
    else:
        sizes, items, text_counts, chunk = [100_000, 1_000_000, 10_000_000], 100_000, [512, 1024, 2048], 256
        target_size = (10_000_000, 100_000, 50_000)
    ingest_sizes = [100_000] if args.quick else [100_000, 1_000_000]
    if args.ingest_sizes:
        ingest_sizes = [int(x) for x in args.ingest_sizes.split(",") if x.strip()]
    # The cluster embeds a few texts in chunks of 8, so that both nodes get chunks to embed.
    cluster_texts, cluster_chunk = 16, 4
    with tempfile.TemporaryDirectory(prefix="llmrec-scale-bench-") as scratch:
        work = Path(scratch)
        ingest_files = _timed(
            "ingest files", lambda: ingest_file_rows(ingest_sizes, work, args.pg_url, args.ingest_file)
        )
        if args.ingest_only:
            result_only = {
                "benchmark": "scale (file ingest only)",
                "ingest_files": ingest_files,
                "ingest_targets": ingest_summary(ingest_files),
                "provenance": provenance(),
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result_only, indent=2) + "\n", encoding="utf-8")
            console.print(_table("file ingest", ingest_files, _INGEST_COLUMNS))
            return 0
        rows, saved = _timed("sizes", lambda: size_rows(sizes, items, work))
        target = _timed("target", lambda: target_row(*target_size))
        rows += _timed("embed", lambda: embed_rows(text_counts, chunk))
        ray = _timed("ray", lambda: ray_rows(saved, text_counts[-1], chunk))
        cluster = (
            {"nodes": 0, "identical": None, "skipped": "--no-cluster"}
            if args.no_cluster
            else _timed("cluster", lambda: cluster_section(saved, cluster_texts, cluster_chunk, work))
        )
    exponents: dict[str, float | None] = {}
    for step in ("ingest", "fit_als", "fit_itemknn", "recommend_als_top10"):
        chosen = [r for r in rows if r["step"] == step]
        exponents[step] = exponent([r["interactions"] for r in chosen], [r["seconds"] for r in chosen])
    embeds = [r for r in rows if r["step"] == "embed"]
    exponents["embed (in texts)"] = exponent([r["texts"] for r in embeds], [r["seconds"] for r in embeds])
    result = {
        "benchmark": "scale",
        "quick": args.quick,
        "data": f"llmrec.data.synth, seed 0: users = interactions / 20, a fixed catalogue of {items} items",
        "memory": "peak_rss_mb: this process's peak resident memory during the step (Ray actors not included)",
        "sizes": sizes,
        "rows": rows,
        "exponents": exponents,
        "ray": ray,
        "cluster": cluster,
        "target_recommend": target,
        "summary": summary(rows, exponents, ray, cluster, target),
        "ingest_files": ingest_files,
        "ingest_targets": ingest_summary(ingest_files),
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    columns = ["step", "interactions", "texts", "seconds", "throughput_per_s", "peak_rss_mb"]
    console.print(_table("time and memory against size", rows, columns))
    console.print(f"scaling exponents: {exponents}")
    ray_columns = ["job", "engine", "seconds", "throughput_per_s", "overhead_vs_one_process", "identical", "nodes"]
    console.print(_table("one process vs Ray", ray, ray_columns))
    console.print(f"cluster: {json.dumps(cluster)}")
    console.print(_table("file ingest", ingest_files, _INGEST_COLUMNS))
    console.print(_table("targets", result["summary"], ["figure", "target", "value"]))
    console.print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
