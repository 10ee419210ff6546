"""Adapting the language model on MovieLens latest-small: TALLRec-protocol AUC and the tuned reranker's NDCG@10.

The question: how much do prompt tuning, LoRA and multi-task instruction tuning of the packaged SmolLM2-135M help
it judge whether a user will like a movie, with few training examples, on a CPU?

Protocol (TALLRec, on the per-user time-ordered leave-last-out split): a test case is a user's last rating (the
test target); the prompt is the reranker's own ``yesno`` prompt showing the user's liked movies from train +
validation only; the label is rating > 3. The score is ``log P("<title> - Yes") - log P("<title> - No")`` (the
yes/no logit difference, exactly what the served ``yesno`` reranker computes) and the metric is its ROC AUC
over a seeded sample of test users. Training examples come from the train split only
(:func:`llmrec.adapt.instructions.build_instructions`), ``N`` = 16 / 64 / 256:

- ``zero-shot``: the base model (no training data; run once).
- ``few-shot``: the base model with two of the ``N`` training examples (one liked, one not, when present) shown as
  earlier question/answer turns.
- ``prompt``: prompt tuning (16 virtual tokens) on the ``N`` yes/no examples.
- ``lora``: LoRA (r=8, all linear layers) on the ``N`` yes/no examples: the task-specific adapter.
- ``instruct``: LoRA on ``N`` examples spread over all five tasks (next, direct, yesno, rating, explain) at the same
  budget (same number of examples and steps): instruction tuning across tasks vs the task-specific adapter.
- ``collm``: CoLLM collaborative tokens: ALS (64 factors) fitted on the train split gives every item a vector; a
  projector (MLP, hidden 256) maps it to one soft token placed right after the item's title in the same yes/no
  prompt (history titles and the candidate), trained on the same ``N`` examples together with LoRA r=8 (the
  ``lora`` method plus the collaborative tokens; the projector at lr 1e-3, LoRA at 2e-4 as ``lora``). Its fit time
  includes fitting ALS.

Each (method, N) runs in its own process, so its wall time (training + scoring) and peak RSS are its own.
Optionally (``--ndcg-users``) the LoRA adapter trained on the largest ``N`` is put into the pipeline's ``yesno``
reranker and compared with the untuned one by NDCG@10 through ``evaluate_pipeline`` (EASE candidates, blend
weight chosen on validation, same test users).

    python benchmarks/adaptation.py --out out/adaptation.json [--quick] [--sizes 16,64,256]
        [--methods zero-shot,few-shot,prompt,lora,instruct,collm] [--test-users 200] [--epochs 3] [--ndcg-users 100]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import rankdata

from llmrec.eval.provenance import provenance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

METHODS = ("zero-shot", "few-shot", "prompt", "lora", "instruct", "collm")
AUC_TARGET = 0.70
NDCG_GAIN_TARGET = 0.10


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties count half); NaN when one class is missing."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _split() -> Any:
    from llmrec.data.movielens import load_movielens
    from llmrec.data.splits import leave_last_out

    return leave_last_out(load_movielens())


def _few_shot_messages(example: Any, demos: list[Any]) -> list[Any]:
    """The test prompt with each demonstration's question and answer as earlier turns (same system message)."""
    messages = [example.messages[0]]
    for demo in demos:
        messages += [demo.messages[-1], {"role": "assistant", "content": demo.target}]
    return [*messages, example.messages[-1]]


def _run(method: str, size: int, args: dict[str, Any], queue: Any) -> None:
    """One (method, N) in a fresh process: build data, train if needed, score the test cases; report a dict."""
    import torch

    from llmrec.adapt.instructions import InstructionConfig, build_eval_examples, build_instructions
    from llmrec.adapt.lora import LoraTuneConfig, tune_lora
    from llmrec.adapt.prompt_tuning import PromptTuneConfig, tune_prompt
    from llmrec.llm.local import LocalLM, LocalLMConfig

    torch.set_num_threads(args["threads"])
    started = time.perf_counter()
    split = _split()
    history, seed = args["history"], args["seed"]
    slots = method == "collm"  # CoLLM's prompts mark each item title for its soft token; the same users and items
    test = build_eval_examples(
        split,
        InstructionConfig(
            tasks=("yesno",), examples=args["test_users"], history=history, seed=seed + 1, item_slots=slots
        ),
    )
    yesno = InstructionConfig(
        tasks=("yesno",), templates=("yesno-0",), examples=max(size, 1), history=history, seed=seed, item_slots=slots
    )
    train = build_instructions(split, yesno) if size else []
    lm_config = LocalLMConfig(threads=args["threads"])
    common = {"epochs": args["epochs"], "batch_size": 4, "eval_every": 0, "seed": seed, "threads": args["threads"]}
    fit_s, adapter = 0.0, None
    name = f"{method}-{size}"
    if method in ("prompt", "lora", "instruct"):
        if method == "instruct":
            train = build_instructions(split, InstructionConfig(examples=size, history=history, seed=seed))
        tick = time.perf_counter()
        if method == "prompt":
            config: Any = PromptTuneConfig(num_virtual_tokens=16, **common)
            result = tune_prompt(train, name=name, config=config, adapter_dir=args["workdir"], lm=lm_config)
        else:
            config = LoraTuneConfig(r=8, **common)
            result = tune_lora(train, name=name, config=config, adapter_dir=args["workdir"], lm=lm_config)
        fit_s = time.perf_counter() - tick
        adapter = str(result.path)
    elif method == "collm":
        from llmrec.adapt.collm import CollmTuneConfig, item_table, tune_collm
        from llmrec.models.base import TrainOptions
        from llmrec.models.registry import get_scorer

        tick = time.perf_counter()
        als = get_scorer("als", factors=64).fit(
            split.fit_data("valid"), TrainOptions(seed=seed, threads=args["threads"])
        )
        config = CollmTuneConfig(lora_r=8, projector_hidden=256, **common)
        table = item_table(als)
        result = tune_collm(train, name=name, table=table, config=config, adapter_dir=args["workdir"], lm=lm_config)
        fit_s = time.perf_counter() - tick
        adapter = str(result.path)
    lm = LocalLM(lm_config.model_copy(update={"adapter": adapter}))
    demos: list[Any] = []
    if method == "few-shot":
        liked = [e for e in train if e.label == 1.0][:1]
        disliked = [e for e in train if e.label == 0.0][:1]
        demos = liked + disliked
    tick = time.perf_counter()
    scores, labels = [], []
    for ex in test:
        title = ex.target.rsplit(" - ", 1)[0]
        messages = _few_shot_messages(ex, demos) if demos else list(ex.messages)
        if slots:  # the title carries its slot; the history's slots come first, the candidate's last
            ll = lm.loglik_items(
                messages,
                [f"{title} - Yes", f"{title} - No"],
                prompt_items=ex.slot_items[:-1],
                continuation_items=[ex.slot_items[-1:]] * 2,
            )
        else:
            ll = lm.loglik(messages, [f"{title} - Yes", f"{title} - No"])
        scores.append(float(ll.total[0] - ll.total[1]))
        labels.append(ex.label)
    score_s = time.perf_counter() - tick
    queue.put(
        {
            "model": f"yesno:{method}" + (f"@{size}" if method != "zero-shot" else ""),
            "method": method,
            "n_train": len(train),
            "n_test": len(test),
            "positive_share": float(np.mean(labels)),
            "auc": auc(np.array(labels), np.array(scores)),
            "fit_s": fit_s,
            "score_s": score_s,
            "wall_s": time.perf_counter() - started,
            "peak_rss_mb": _peak_rss_mb(),
            "adapter": adapter,
        }
    )


def _ndcg(adapter: str | None, args: dict[str, Any], queue: Any) -> None:
    """NDCG@10 of the EASE + yesno-rerank pipeline with ``adapter`` (``None`` = untuned), in a fresh process."""
    import torch

    from llmrec.data.movielens import load_movielens
    from llmrec.eval.runner import evaluate_pipeline
    from llmrec.llm.rerank import RerankConfig
    from llmrec.models.base import TrainOptions
    from llmrec.pipeline import LMSpec, PipelineConfig, RetrieverSpec

    torch.set_num_threads(args["threads"])
    started = time.perf_counter()
    config = PipelineConfig(
        retriever=RetrieverSpec(name="ease", config={"l2_reg": 500.0}),
        candidates=20,
        rerank=RerankConfig(method="yesno", history=args["history"]),
        lm=LMSpec(local={"threads": args["threads"], "adapter": adapter}),
    )
    results = evaluate_pipeline(
        load_movielens(), config, k=10, max_users=args["ndcg_users"], options=TrainOptions(seed=args["seed"])
    )
    queue.put(
        {
            "results": [r.model_dump() for r in results.results],
            "wall_s": time.perf_counter() - started,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )


def _in_child(target: Any, *params: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*params, queue))
    process.start()
    try:
        out = queue.get(timeout=24 * 3600)
    finally:
        process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{params[:2]} failed with exit code {process.exitcode}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the JSON; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Where to write the results JSON.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes to check the script runs (minutes).")
    parser.add_argument("--sizes", default="16,64,256", help="Training-set sizes N.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--test-users", type=int, default=200, help="Test cases (users' last ratings) scored.")
    parser.add_argument("--epochs", type=int, default=3, help="Passes over the N examples (batch 4).")
    parser.add_argument("--history", type=int, default=5, help="Liked movies shown per prompt.")
    parser.add_argument("--ndcg-users", type=int, default=100, help="Users per stage for NDCG@10 (0 = skip).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.test_users, args.epochs, args.history, args.ndcg_users = "4,8", 24, 1, 3, 3
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    console = Console()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmrec-adapt-bench-") as workdir:
        shared = {
            "threads": args.threads,
            "history": args.history,
            "seed": args.seed,
            "epochs": args.epochs,
            "test_users": args.test_users,
            "ndcg_users": args.ndcg_users,
            "workdir": workdir,
        }
        runs: list[dict[str, Any]] = []
        for method in methods:
            for size in [0] if method == "zero-shot" else sizes:
                console.print(f"[dim]{method} N={size} ...[/]")
                run = _in_child(_run, method, size, shared)
                console.print(f"[dim]  AUC {run['auc']:.3f} in {run['wall_s']:.0f} s, {run['peak_rss_mb']:.0f} MB[/]")
                runs.append(run)
        ndcg: dict[str, Any] = {}
        lora_runs = [r for r in runs if r["method"] == "lora"]
        if args.ndcg_users > 0 and lora_runs:
            best = max(lora_runs, key=lambda r: r["n_train"])
            console.print(f"[dim]NDCG@10: untuned vs {best['model']} yesno rerank, {args.ndcg_users} users ...[/]")
            ndcg["untuned"] = _in_child(_ndcg, None, shared)
            ndcg["tuned"] = _in_child(_ndcg, best["adapter"], shared)
            ndcg["adapter"] = best["model"]
    elapsed = time.perf_counter() - started

    table = Table(title=f"TALLRec AUC (yes/no, rating > 3), {args.test_users} test users, leave-last-out")
    for column in ("model", "N", "AUC", "train s", "wall s", "peak MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in runs:
        table.add_row(
            r["model"],
            str(r["n_train"]),
            f"{r['auc']:.3f}",
            f"{r['fit_s']:.0f}",
            f"{r['wall_s']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
        )
    console.print(table)
    results = [
        {
            "model": r["model"],
            "metrics": {"auc": r["auc"], "peak_rss_mb": r["peak_rss_mb"]},
            "fit_s": round(r["fit_s"], 2),
            "peak_rss_mb": r["peak_rss_mb"],
            "config": {"n_train": r["n_train"], "n_test": r["n_test"], "positive_share": r["positive_share"]},
            "wall_s": round(r["wall_s"], 2),
            "score_s": round(r["score_s"], 2),
        }
        for r in runs
    ]
    largest = [r for r in runs if r["n_train"] == max(sizes)]
    met = {r["model"]: r["auc"] >= AUC_TARGET for r in largest}
    console.print(f"AUC >= {AUC_TARGET} with N={max(sizes)}: " + (", ".join(f"{m}: {v}" for m, v in met.items())))
    if ndcg:
        before = next(x for x in ndcg["untuned"]["results"] if "rerank" in x["model"])["metrics"]["ndcg@10"]
        after = next(x for x in ndcg["tuned"]["results"] if "rerank" in x["model"])["metrics"]["ndcg@10"]
        base = next(x for x in ndcg["untuned"]["results"] if "rerank" not in x["model"])["metrics"]["ndcg@10"]
        gain = (after - before) / before if before else math.nan
        ndcg["summary"] = {"ease": base, "rerank:yesno": before, "rerank:yesno+lora": after, "gain": gain}
        console.print(
            f"NDCG@10 ({args.ndcg_users} users): EASE {base:.4f}, untuned yesno rerank {before:.4f}, "
            f"tuned {after:.4f} ({gain:+.1%}; target +{NDCG_GAIN_TARGET:.0%})"
        )
    out = {
        "dataset": "movielens-small",
        "protocol": "leave-last-out; TALLRec yes/no on each test user's last rating (label = rating > 3)",
        "k": 10,
        "results": results,
        "ndcg": ndcg,
        "targets": {"auc": AUC_TARGET, "ndcg_gain": NDCG_GAIN_TARGET, "auc_met_at_largest_n": met},
        "settings": {
            "sizes": sizes,
            "methods": methods,
            "test_users": args.test_users,
            "epochs": args.epochs,
            "batch_size": 4,
            "history": args.history,
            "threads": args.threads,
            "seed": args.seed,
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "elapsed_s": round(elapsed, 1),
            "peak_rss_note": "ru_maxrss of the process that ran each (method, N): data, LM, training and scoring",
        },
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(out), indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out} in {elapsed:.0f} s")
    return 0


def _clean(value: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, so the JSON stays standard."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
