"""Latency of the local language model on the rerank workload: 20 candidate titles scored for one user.

The prompt is a user's last 15 MovieLens titles (oldest first) and the candidates are the next title they rated
plus 19 other titles; every candidate is scored as the assistant's complete reply (``LocalLM.loglik``). Scoring
strategies compared (same numbers, different cost):

- ``naive``: prompt + candidate as 20 full sequences in one padded batch (the prompt is computed 20 times);
- ``batch``: the prompt computed once, its key/value cache expanded to a right-padded batch of candidates;
- ``packed``: the prompt computed once, all candidates in one row with a block mask (the default);
- ``packed+prompt-cache``: the same user scored again (the prompt's cache kept from the previous call).
- ``letters`` and ``letters+int8``: the reranker's one-pass ``letters`` method (``RerankConfig(method="letters")``,
  the format the tuned adapter learns): the same candidates listed A-T under the same history, scored by the
  next-token log-probability of each letter, in fp32 and with int8 dynamic quantisation. Different numbers from
  the title log-likelihoods (so no difference against ``naive`` is reported), the same ranking job.

Also: generation tokens/s (greedy), load time cold (GGUF conversion, in a fresh process with an empty cache) vs
cached (fp32 safetensors copy), and peak RSS. Wall times on a shared machine are noisy, so CPU time is reported
beside them, and the load average is recorded. Prints progress and a table and writes the results JSON
(DESIGN.md shape, with provenance). ``--quick`` (a smoke run, about a minute): 3 users, 1 naive user, 16
generated tokens, no cold load.

    python benchmarks/lm_latency.py --out out/lm_latency.json [--users 10] [--naive-users 3] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from llmrec.data.movielens import load_movielens
from llmrec.eval.latency import latency_metrics
from llmrec.eval.results import EvalResults, ModelResult

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "You are a movie recommender. Answer with one movie title from the catalogue."


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _load_in_fresh_process(cache_dir: str | None, threads: int) -> dict[str, float | str]:
    """Load the packaged model in this (fresh) process; ``cache_dir`` None = the default cache."""
    from llmrec.llm.local import LocalLM, LocalLMConfig

    lm = LocalLM(LocalLMConfig(cache_dir=cache_dir, threads=threads))
    started = time.perf_counter()
    lm.load()
    return {"load_s": time.perf_counter() - started, "source": lm.load_source, "peak_rss_mb": _peak_rss_mb()}


def _workload(n_users: int, history: int, n_candidates: int, seed: int) -> list[tuple[list[dict[str, str]], list[str]]]:
    """(chat prompt, candidate titles) per user: last ``history`` titles, next title + random others."""
    data = load_movielens(with_tags=False)
    titles = dict(zip(data.items["item_id"].astype(str), data.items["title"].astype(str), strict=True))
    inter = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    rng = np.random.default_rng(seed)
    catalogue = np.array(sorted(titles))
    out = []
    users = [u for u, g in inter.groupby("user_id", sort=True) if len(g) > history]
    for user in rng.choice(np.array(users, dtype=object), size=n_users, replace=False):
        items = inter.loc[inter["user_id"] == user, "item_id"].astype(str).tolist()
        seen, target = items[-history - 1 : -1], items[-1]
        others: list[str] = []
        while len(others) < n_candidates - 1:
            item = str(rng.choice(catalogue))
            if item not in items and item not in others:
                others.append(item)
        candidates = [titles[i] for i in [target, *others]]
        rng.shuffle(candidates)
        listing = "\n".join(f"- {titles[i]}" for i in seen)
        user_msg = f"Movies I watched, oldest first:\n{listing}\nWhich movie should I watch next?"
        out.append(([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_msg}], candidates))
    return out


def _time_calls(fn: Any, calls: list[Any]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    wall, cpu, outs = [], [], []
    for args in calls:
        c0, w0 = time.process_time(), time.perf_counter()
        outs.append(fn(*args))
        wall.append((time.perf_counter() - w0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return np.array(wall), np.array(cpu), outs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--users", type=int, default=10, help="users (loglik calls) per strategy")
    parser.add_argument("--naive-users", type=int, default=3, help="users for the slow naive strategy")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--history", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = the target machine)")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--no-cold", action="store_true", help="skip the GGUF conversion timing (~30-60 s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="3 users, 1 naive, 16 tokens, no cold load")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.naive_users = min(args.users, 3), min(args.naive_users, 1)
        args.gen_tokens, args.no_cold = min(args.gen_tokens, 16), True
    console = Console()
    load_before = os.getloadavg()

    ctx = mp.get_context("spawn")
    loads: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="llmrec-lm-cold-") as empty:
        runs = [("cached", None)] if args.no_cold else [("cold", empty), ("cached", empty)]
        for label, cache_dir in runs:
            console.print(f"[dim]load ({label}) in a fresh process...[/]")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                loads[label] = pool.submit(_load_in_fresh_process, cache_dir, args.threads).result()

    from llmrec.llm.local import LocalLM, LocalLMConfig

    lm = LocalLM(LocalLMConfig(threads=args.threads, prompt_cache_size=0)).load()
    cached_lm = LocalLM(LocalLMConfig(threads=args.threads, prompt_cache_size=4))
    work = _workload(args.users, args.history, args.candidates, args.seed)
    prompt_tokens = [lm.count_tokens(lm.render(p)) for p, _ in work]
    cand_tokens = [lm.count_tokens(c) + 1 for _, cands in work for c in cands]
    lm.loglik(*work[0])  # warm-up (allocator, kernels)

    rows: list[tuple[str, np.ndarray, np.ndarray, list[Any]]] = []
    for strategy in ("naive", "batch", "packed"):
        calls = work[: args.naive_users] if strategy == "naive" else work
        console.print(f"[dim]{strategy}: {len(calls)} calls...[/]")
        wall, cpu, outs = _time_calls(lambda p, c, s=strategy: lm.loglik(p, c, strategy=s), calls)
        rows.append((strategy, wall, cpu, outs))
    console.print("[dim]packed+prompt-cache...[/]")

    def rescore(prompt: Any, cands: list[str]) -> Any:
        return cached_lm.loglik(prompt, cands)

    walls, cpus, outs = [], [], []
    for prompt, cands in work:
        cached_lm.loglik(prompt, cands[:1])  # the user's earlier call leaves the prompt's cache behind
        wall, cpu, out = _time_calls(rescore, [(prompt, cands)])
        walls.append(wall[0])
        cpus.append(cpu[0])
        outs.extend(out)
    rows.append(("packed+prompt-cache", np.array(walls), np.array(cpus), outs))

    from llmrec.llm.rerank import LMReranker, RerankConfig

    letters_rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    for label, quantize in (("letters", "none"), ("letters+int8", "int8")):
        console.print(f"[dim]{label}: {len(work)} calls...[/]")
        model = LocalLM(LocalLMConfig(threads=args.threads, prompt_cache_size=0, quantize=quantize))
        reranker = LMReranker(model, RerankConfig(method="letters", history=args.history))
        histories = [[line[2:] for line in p[1]["content"].splitlines()[1:-1]] for p, _ in work]
        reranker.score(histories[0], work[0][1])  # warm-up (load, kernels)
        wall, cpu, _ = _time_calls(reranker.score, [(h, c) for h, (_, c) in zip(histories, work, strict=True)])
        letters_rows.append((label, wall, cpu))

    naive_outs = rows[0][3]
    results: list[ModelResult] = []
    name = lm.model_id
    for strategy, wall, cpu, outs in rows:
        diffs = [float(np.max(np.abs(o.total - n.total))) for o, n in zip(outs, naive_outs, strict=False)]
        same_top = [int(np.argmax(o.mean) == np.argmax(n.mean)) for o, n in zip(outs, naive_outs, strict=False)]
        metrics = {
            **latency_metrics(wall),
            **latency_metrics(cpu, prefix="cpu"),
            "throughput_per_s": float(args.candidates * len(wall) / (wall.sum() / 1000)),
            "max_abs_diff_vs_naive": max(diffs),
            "top1_agreement_vs_naive": float(np.mean(same_top)),
        }
        config = {"strategy": strategy, "calls": len(wall), "threads": args.threads}
        results.append(ModelResult(model=f"{name}:{strategy}", metrics=metrics, fit_s=0.0, config=config))

    for label, wall, cpu in letters_rows:
        metrics = {
            **latency_metrics(wall),
            **latency_metrics(cpu, prefix="cpu"),
            "throughput_per_s": float(args.candidates * len(wall) / (wall.sum() / 1000)),
            "max_abs_diff_vs_naive": float("nan"),
            "top1_agreement_vs_naive": float("nan"),
        }
        config = {"strategy": label, "calls": len(wall), "threads": args.threads, "method": "letters (one pass)"}
        results.append(ModelResult(model=f"{name}:{label}", metrics=metrics, fit_s=0.0, config=config))
    console.print(f"[dim]generate: {args.gen_tokens} tokens x 3...[/]")
    gen_prompts = ["Describe the movie Toy Story in detail.", "Write a short review of Heat (1995).", work[0][0]]
    tokens, seconds = 0, 0.0
    for prompt in gen_prompts:
        started = time.perf_counter()
        text = lm.generate(prompt, max_new_tokens=args.gen_tokens)
        seconds += time.perf_counter() - started
        tokens += lm.count_tokens(text)
    gen_metrics = {"tokens_per_s": tokens / seconds, "tokens": float(tokens)}
    results.append(ModelResult(model=f"{name}:generate", metrics=gen_metrics, fit_s=0.0, config={"greedy": True}))
    load_metrics = {
        "load_cold_s": float(loads["cold"]["load_s"]) if "cold" in loads else float("nan"),
        "load_cached_s": float(loads["cached"]["load_s"]),
        "peak_rss_mb": _peak_rss_mb(),
        "load_peak_rss_mb": float(loads["cached"]["peak_rss_mb"]),
    }
    results.append(ModelResult(model=f"{name}:load", metrics=load_metrics, fit_s=float(loads["cached"]["load_s"])))
    machine = {
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "prompt_tokens_mean": float(np.mean(prompt_tokens)),
        "candidate_tokens_mean": float(np.mean(cand_tokens)),
    }
    protocol = (
        f"lm-latency: {args.candidates} candidate titles, prompt = last {args.history} titles, "
        f"{args.threads} threads, loglik of the complete reply"
    )
    out = EvalResults(dataset="movielens-small", protocol=protocol, k=args.candidates, results=results, split=machine)
    out.write_json(args.out)

    table = Table(title=f"{name}: {args.candidates} candidates, prompt ~{np.mean(prompt_tokens):.0f} tokens")
    for col in ("strategy", "p50 ms", "p95 ms", "cpu p50 ms", "calls", "max |diff| vs naive"):
        table.add_column(col, justify="right")
    for r in results[: len(rows)] + results[len(rows) : len(rows) + len(letters_rows)]:
        m = r.metrics
        table.add_row(
            str(r.config["strategy"]),
            f"{m['latency_p50_ms']:.0f}",
            f"{m['latency_p95_ms']:.0f}",
            f"{m['cpu_p50_ms']:.0f}",
            str(r.config["calls"]),
            f"{m['max_abs_diff_vs_naive']:.1e}",
        )
    console.print(table)
    console.print(
        f"generate {gen_metrics['tokens_per_s']:.1f} tok/s; load cold {load_metrics['load_cold_s']:.1f} s, "
        f"cached {load_metrics['load_cached_s']:.1f} s; peak RSS {load_metrics['peak_rss_mb']:.0f} MB; "
        f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
