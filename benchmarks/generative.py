"""The generative path on MovieLens latest-small: LM rerank, generative retrieval, explanations, latency, memory.

One run on the same per-user leave-last-out split as ``benchmarks/baselines.py`` (full ranking), with one local
language model (the packaged SmolLM2) loaded once and shared by every stage:

1. The best retriever (EASE, ``l2_reg=500`` as tuned by the baselines) with and without a language-model rerank
   of its top candidates, through ``evaluate_pipeline`` (fit on the split's fit data, blend weight chosen on
   validation NDCG@k, retriever and retriever+rerank scored on the same test users). Variants: zero-shot
   calibrated ``loglik``, ``yesno``, few-shot ``loglik`` (``fewshot``), optionally ``listwise``, and ``tuned``:
   the one-pass ``letters`` rerank with the LoRA adapter ``--adapter`` (trained by ``benchmarks/rerank_tune.py``
   on the train split only; ``--max-users 0`` ranks every validation and test user). The
   language model costs about 1-3 s per user on a small CPU, so validation and test users are capped
   (``--max-users``, a seeded sample); the JSON records how many users were ranked (``n_users``).
   ``tuned-int8`` is ``tuned`` with int8 weights: what makes it fast, with its NDCG effect beside ``tuned``;
   ``tuned-int8-warm`` also computes the user's part of the prompt as a pass of its own (``RerankConfig.warm``,
   what a server that warms users ahead computes), with its NDCG effect beside ``tuned-int8``: int8 scores depend
   on where a pass is cut.
   ``encoder`` reranks with the text encoder instead of the causal model: each candidate's cosine with the
   recency-weighted (half-life 1) mean of the user's history vectors (:mod:`llmrec.llm.encoder_rerank`); no
   training, about 3 ms per user. ``--retriever sasrec --retriever-seeds 3`` (or a ``fusion``) puts it on the
   strongest retrievers: each stage is fitted once per seed and each user's metrics are averaged over the seeds.
1b. Trained generative retrieval (``tiger``, ``--tiger-seeds`` seeds) against SASRec on every test user, paired
   (SASRec reused from ``--baselines`` when that run holds it), as ``benchmarks/genret_trained.py`` does.
2. Generative retrieval: the model names the next titles by constrained beam search (zero-shot), scored on a
   sample of test users, with its measured valid-output ratio; the retriever on the same users for reference.
3. Explanations of the pipeline's top 3: grounding, informativeness and copy rate, beside the template's.
4. Rerank latency for 20 candidates of ``--latency-method`` (default the tuned letters, int8 when run; one user
   per call, then the same user with the prompt cached), generation tokens/s, and the peak resident memory.
6. Dialogue understanding: slot precision/recall/F1 of the chat's turn reader on the labelled utterances.

Prints tables and the target lines, and writes one JSON: the retriever/rerank results in the shared shape
(DESIGN.md "Evaluation protocol") plus ``genret``, ``explanations``, ``latency``, ``generation``,
``dialogue``, ``peak_rss_mb`` and ``settings``.

    python benchmarks/generative.py --out out/generative.json [--quick] [--methods loglik,yesno,fewshot]
    python benchmarks/generative.py --methods tuned,tuned-int8 --max-users 0 --out results/generative.json
        [--max-users 150] [--genret-users 60] [--explain-users 30] [--latency-users 40] [--threads 2]
    # after a new genret_trained.py run: swap its tiger into a written file, no LM step run again
    python benchmarks/generative.py --refresh results/generative.json --tiger-from results/genret-trained.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from llmrec.cli import comparisons_table, metrics_table
from llmrec.data.dataset import Dataset
from llmrec.data.registry import load_named
from llmrec.data.splits import Split, make_split
from llmrec.eval.compare import compare_results
from llmrec.eval.latency import latency_metrics
from llmrec.eval.metrics import compute_metrics, item_features
from llmrec.eval.provenance import provenance
from llmrec.eval.results import Comparison, EvalResults
from llmrec.eval.runner import evaluate_pipeline
from llmrec.llm.explain import (
    Explainer,
    explanation_quality,
    grounding_rate,
    raw_grounding_rate,
    template_explanation,
)
from llmrec.llm.fewshot import FewShotConfig
from llmrec.llm.genret import GenerativeRetriever
from llmrec.llm.local import LocalLM, LocalLMConfig, clear_prompt_caches
from llmrec.llm.rerank import RerankConfig
from llmrec.models.base import TrainOptions
from llmrec.pipeline import LMSpec, Pipeline, PipelineConfig, RerankedBatch, RetrieverSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

METHODS = ("loglik", "yesno", "fewshot", "listwise", "tuned", "tuned-int8", "tuned-int8-warm", "encoder")
TUNED = ("tuned", "tuned-int8", "tuned-int8-warm")
QUICK_USERS = 8
BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines-leave-last-out.json"
UTTERANCES = Path(__file__).resolve().parents[1] / "tests" / "chat" / "data" / "utterances.jsonl"
DIALOGUE_F1_TARGET = 0.9
LATENCY_TARGET_MS = 300.0
GROUNDING_TARGET = 0.95
GEN_PROMPTS = [
    "Describe the movie Toy Story in two sentences.",
    "Write a short review of Heat (1995).",
    "Recommend three movies for someone who liked Alien and The Terminator, and say why.",
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _clean(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python (so the JSON stays standard)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rerank_config(method: str, args: argparse.Namespace) -> tuple[RerankConfig, FewShotConfig | None, str]:
    """(rerank config, few-shot config, result label suffix) of one ``--methods`` entry."""
    if method == "fewshot":
        return (
            RerankConfig(method="loglik", calibrate=True),
            FewShotConfig(shots=args.shots),
            f"loglik+{args.shots}shot",
        )
    if method == "loglik":
        return RerankConfig(method="loglik", calibrate=True), None, "loglik"
    if method in TUNED:  # one pass over the letters, with the LoRA adapter of --adapter
        history = args.rerank_history or RerankConfig().history
        suffix = method if history == RerankConfig().history else f"{method}-h{history}"
        config = RerankConfig(method="letters", history=history, warm=method.endswith("-warm"))
        return config, None, suffix
    return RerankConfig(method=method), None, method  # yesno, listwise, encoder


def _lm_settings(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``LocalLMConfig`` fields of one method's language model (``tuned`` wears ``--adapter``)."""
    settings: dict[str, Any] = {"threads": args.threads, "quantize": args.quantize}
    if method in TUNED:
        settings["adapter"] = args.adapter
    if method.startswith("tuned-int8"):  # what makes it fast, with its NDCG effect measured beside "tuned"
        settings["quantize"] = "int8"
    return settings


def _method_lm(method: str, args: argparse.Namespace, lm: LocalLM) -> LocalLM:
    """The language model of one method: the shared ``lm`` when its settings are the base ones."""
    settings = _lm_settings(method, args)
    if settings == {"threads": args.threads, "quantize": args.quantize}:
        return lm
    return LocalLM(LocalLMConfig(**settings))


def _rerank_section(
    data: Dataset,
    args: argparse.Namespace,
    retriever: RetrieverSpec,
    lm: LocalLM,
    console: Console,
    lms: dict[str, LocalLM],
) -> tuple[EvalResults | None, dict[str, float]]:
    """Step 1: retriever vs retriever+rerank per method; returns the results and each method's chosen weight.

    Each method's language model is put in ``lms`` (the shared one unless it wears an adapter or int8 weights).
    """
    options = TrainOptions(seed=args.seed)

    def log(done: int, total: int | None, message: str) -> None:
        """The evaluation's on_progress: print what it does next."""
        console.print(f"[dim]{message}[/]")

    key = f"ndcg@{args.k}"
    merged: EvalResults | None = None
    chosen: dict[str, float] = {}
    for method in args.methods:
        rerank, fewshot, suffix = _rerank_config(method, args)
        config = PipelineConfig(
            retriever=retriever,
            candidates=args.candidates,
            rerank=rerank,
            fewshot=fewshot,
            lm=LMSpec(local=_lm_settings(method, args)),
        )
        users = args.max_users or "all"
        console.print(f"[bold]rerank {suffix}[/] ({users} validation + {users} test users)")
        started = time.perf_counter()
        method_lm = lms.setdefault(method, _method_lm(method, args, lm))
        part = evaluate_pipeline(
            data,
            config,
            k=args.k,
            max_users=args.max_users or None,
            options=options,
            lm=method_lm,
            on_progress=log,
            seeds=[args.seed + i for i in range(args.retriever_seeds)],
        )
        elapsed = time.perf_counter() - started
        base, reranked = part.results
        reranked.model = f"{retriever.name}+rerank:{suffix}"
        reranked.config.update(
            {
                "method": rerank.method,
                "calibrate": rerank.calibrate,
                "shots": fewshot.shots if fewshot else 0,
                "adapter": _lm_settings(method, args).get("adapter"),
                "quantize": _lm_settings(method, args)["quantize"],
                "candidates": args.candidates,
                "valid_users_ranked": int(reranked.valid_metrics.get("n_users") or 0),
                "test_users_ranked": int(reranked.metrics.get("n_users") or 0),
                "elapsed_s": round(elapsed, 1),
            }
        )
        chosen[method] = float(reranked.config["weight"])
        per_weight = ", ".join(f"{t['config']['weight']:g}: {t[key]:.4f}" for t in reranked.tuning)
        console.print(f"  validation {key} by LM weight: {per_weight}")
        console.print(
            f"  chosen weight {chosen[method]:g}; test {key} {base.metrics[key]:.4f} -> {reranked.metrics[key]:.4f} "
            f"on {int(reranked.metrics.get('n_users') or 0)} users; {reranked.recommend_ms_per_user:.0f} ms/user "
            f"({elapsed:.0f} s)"
        )
        if merged is None:
            merged = part
        else:
            same = merged.results[0].metrics == base.metrics
            if not same:  # the seeded user sample should be identical for every method
                base.model = f"{retriever.name}[{suffix} users]"
                merged.results.append(base)
            merged.results.append(reranked)
    return merged, chosen


def speed_comparisons(results: EvalResults) -> list[Comparison]:
    """What the speed-ups cost in ranking quality: int8 against fp32, the warmed int8 against plain int8."""
    labels = {r.model for r in results.results}
    rows: list[Comparison] = []
    pairs = [(m, m.removesuffix("-int8")) for m in labels if m.endswith(":tuned-int8")]
    pairs += [(m, m.removesuffix("-warm")) for m in labels if m.endswith(":tuned-int8-warm")]
    for fast, slow in sorted(pairs):
        if slow in labels:
            pair = results.model_copy(update={"results": [results.result(slow), results.result(fast)]})
            rows += compare_results(pair, slow).comparisons
    return rows


def refresh(out: dict[str, Any]) -> dict[str, Any]:
    """Add the parts derived from a results JSON's own numbers: the int8-vs-fp32 comparisons and the targets."""
    parsed = EvalResults.model_validate(out)
    have = {(c["a"], c["b"], c["metric"]) for c in out.get("comparisons", [])}
    extra = [c.model_dump() for c in speed_comparisons(parsed) if (c.a, c.b, c.metric) not in have]
    out["comparisons"] = [*out.get("comparisons", []), *extra]
    out["targets"] = targets(out)
    return out


def swap_tiger(out: dict[str, Any], path: Path, console: Console) -> dict[str, Any]:
    """``out`` with its tiger and SASRec rows and tiger's comparisons replaced by a ``genret_trained.py`` run's.

    The rerank, explanation, latency and dialogue steps do not depend on tiger, so a changed tiger updates a
    written results JSON without the LM steps' 20 minutes; the run must be of the same split (as ``--tiger-from``).
    """
    pair = _reused_tiger(path, EvalResults.model_validate(out), console)
    models = {r.model for r in pair.results}
    rows = json.loads(pair.model_dump_json())
    out["results"] = _replaced(out["results"], lambda r: r["model"] in models, rows["results"])
    out["comparisons"] = _replaced(out["comparisons"], lambda c: c["a"] in models, rows["comparisons"])
    out.setdefault("settings", {})["tiger_from"] = str(path)
    return out


def _replaced(items: list[Any], old: Callable[[Any], bool], new: list[Any]) -> list[Any]:
    """``items`` without those ``old`` picks, and ``new`` where the first of them was (else at the end)."""
    at = next((i for i, x in enumerate(items) if old(x)), len(items))
    kept = [x for x in items if not old(x)]
    return kept[:at] + new + kept[at:]


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets, each met or missed, from a written results JSON (the README table of them).

    Derived from the file's own numbers only, so ``--refresh FILE`` can add them to a file written before this
    function existed without running anything again.
    """
    key = f"ndcg@{out.get('k', 10)}"
    rows: list[dict[str, Any]] = []

    def add(target: str, value: str, met: bool) -> None:
        rows.append({"target": target, "value": value, "met": bool(met), "verdict": "met" if met else "missed"})

    def interval(c: dict[str, Any]) -> str:
        return f"{c['diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] on {c['n_users']} users"

    for c in out.get("comparisons", []):
        if c["metric"] == key and "+rerank:" in c["b"]:  # the NDCG effect of a speed-up: int8, the warmed passes
            what = "the warmed passes" if c["a"].endswith("-warm") else "int8"
            add(f"{c['a']} not below {c['b']} (the NDCG effect of {what})", interval(c), c["ci95"][1] >= 0)
        elif c["metric"] == key and "+rerank:" in c["a"]:
            add(f"{c['a']} beats {c['b']}: {key} difference, 95% interval above 0", interval(c), c["ci95"][0] > 0)
        elif c["metric"] == key and c["a"] == "tiger":
            add(f"trained generative retrieval (tiger) {key} at least {c['b']}'s", interval(c), c["diff"] >= 0)
    latency = out.get("latency") or {}
    if latency:
        target = f"rerank p95 <= {LATENCY_TARGET_MS:.0f} ms, {latency['candidates']} candidates ({latency['method']})"
        cold = f"p95 {latency['latency_p95_ms']:.0f} ms, p50 {latency['latency_p50_ms']:.0f} ms"
        warm = latency.get("history_cached")
        if warm:  # the issue's setting: the user's part of the prompt cached ahead; the cold figure beside it
            value = (
                f"p95 {warm['latency_p95_ms']:.0f} ms, p50 {warm['latency_p50_ms']:.0f} ms over {latency['n_users']} "
                f"users, history prompt cached ahead (cold first request: {cold})"
            )
            add(f"{target}, the user's prompt cached", value, warm["latency_p95_ms"] <= LATENCY_TARGET_MS)
        else:
            add(target, f"{cold} over {latency['n_users']} users", latency["latency_p95_ms"] <= LATENCY_TARGET_MS)
    dialogue = out.get("dialogue") or {}
    if dialogue:
        f1, n = dialogue["overall"]["f1"], dialogue["utterances"]
        add(f"dialogue slot F1 >= {DIALOGUE_F1_TARGET}", f"{f1:.3f} on {n} utterances", f1 >= DIALOGUE_F1_TARGET)
    explanations = out.get("explanations") or {}
    if explanations:
        rate = explanations["grounding_rate"]
        value = f"{rate:.1%} of {explanations['n_explanations']}"
        add(f"explanations grounded >= {GROUNDING_TARGET:.0%}", value, rate >= GROUNDING_TARGET)
        kept = (explanations.get("quality") or {}).get("lm_informative_copy_free_rate")
        if kept is not None:
            add("LM-phrased explanations kept unrepaired, informative and copy-free >= 90%", f"{kept:.1%}", kept >= 0.9)
    return rows


def _print_targets(rows: list[dict[str, Any]]) -> None:
    """One line per target of :func:`targets`: met or MISSED, what it asks, what was measured."""
    for row in rows:
        print(f"{'met   ' if row['met'] else 'MISSED'} {row['target']}: {row['value']}")


def _tiger_section(
    data: Dataset, args: argparse.Namespace, results: EvalResults | None, console: Console
) -> EvalResults:
    """Step 1b: the trained generative retriever (``tiger``) and SASRec on every test user, compared paired.

    SASRec is reused from ``--baselines`` when that run holds it (same split, its seeds); otherwise it is fitted
    here with as many seeds as ``tiger``. Returns ``results`` with both rows and a ``tiger`` vs ``sasrec``
    comparison added to the rerank comparisons.
    """
    if args.tiger_from is not None:
        pair = _reused_tiger(args.tiger_from, results, console)
        return pair if results is None else _with_tiger(results, pair)
    seeds = 1 if args.quick else args.tiger_seeds
    options = TrainOptions(seed=args.seed)

    def log(done: int, total: int | None, message: str) -> None:
        console.print(f"[dim]{message}[/]")

    from genret_trained import QUICK, TIGER, tiger_vs_sasrec  # the sibling benchmark: one home for this step

    config = QUICK if args.quick else TIGER
    console.print(f"[bold]trained generative retrieval[/] (tiger, {seeds} seed(s)) vs SASRec, every test user")
    pair = tiger_vs_sasrec(
        data,
        config,
        k=args.k,
        options=options,
        seeds=seeds,
        baselines=args.baselines,
        quick=args.quick,
        on_progress=log,
    )
    return pair if results is None else _with_tiger(results, pair)


def _with_tiger(results: EvalResults, pair: EvalResults) -> EvalResults:
    """The rerank ``results`` with tiger's and SASRec's rows and their comparisons added."""
    return results.model_copy(
        update={"results": results.results + pair.results, "comparisons": results.comparisons + pair.comparisons}
    )


def _reused_tiger(path: Path, results: EvalResults | None, console: Console) -> EvalResults:
    """Step 1b read from a ``benchmarks/genret_trained.py`` run (``--tiger-from``) instead of fitted again.

    Tiger's three fits take about 35 minutes on 2 cores; a run that only changes the rerank can reuse them. The
    reused run must hold both rows and be of the same split (its protocol and user counts), else it is refused.
    """
    if not path.is_file():
        raise SystemExit(f"--tiger-from: {path} does not exist (write it with benchmarks/genret_trained.py --out)")
    reused = EvalResults.read_json(path)
    models = {r.model for r in reused.results}
    if not {"tiger", "sasrec"} <= models:
        raise SystemExit(f"--tiger-from: {path} holds {sorted(models)}, not both tiger and sasrec")
    if results is not None:
        mine = {key: results.split.get(key) for key in reused.split}
        if mine != reused.split:
            raise SystemExit(f"--tiger-from: {path} is of another split ({reused.split}, this run: {mine})")
    console.print(f"[bold]trained generative retrieval[/] reused from {path} (tiger vs SASRec, every test user)")
    return reused


def _dialogue_section() -> dict[str, Any]:
    """Step 6: slot precision/recall/F1 of the chat's turn reader on the labelled utterances (rules, no LM)."""
    from llmrec.catalogue import Catalogue
    from llmrec.data.movielens import load_movielens
    from llmrec.eval.dialogue import load_utterances, score_utterances

    movies = load_movielens()
    catalogue = Catalogue.of(movies)
    newest = max(y for y in (catalogue.year(i) for i in range(len(catalogue))) if y)
    rows = load_utterances(UTTERANCES)
    report = score_utterances(rows, catalogue, popularity=movies.item_popularity, newest_year=newest)
    overall = report["overall"]
    return {
        "utterances": len(rows),
        "utterances_file": str(UTTERANCES.relative_to(UTTERANCES.parents[3])),
        "overall": overall,
        "slots": report["slots"],
        "exact_match": report["exact_match"],
        "intent_accuracy": report["intent_accuracy"],
        "target": {"overall_f1": DIALOGUE_F1_TARGET, "met": overall["f1"] >= DIALOGUE_F1_TARGET},
    }


def _genret_section(
    lm: LocalLM,
    identifier: str,
    fit: Dataset,
    split: Split,
    users: np.ndarray,
    pipe: Pipeline,
    args: argparse.Namespace,
    features: sp.csr_matrix,
) -> dict[str, Any]:
    """Step 2: generative retrieval (zero-shot) on ``users`` (dense indices), with the retriever beside it."""
    started = time.perf_counter()
    genret = GenerativeRetriever(lm, identifier=identifier).fit(fit, TrainOptions(seed=args.seed))
    fit_s = time.perf_counter() - started
    user_ids = fit.user_vocab.ids[users]
    truth = split.unseen_targets("test", users, fit)
    started = time.perf_counter()
    recs = genret.recommend(user_ids, k=args.k)
    rec_s = time.perf_counter() - started
    metrics = compute_metrics(recs.item_idx, truth, k=args.k, train=fit, item_features=features, users=users)
    assert pipe.retriever is not None
    base = pipe.retriever.recommend(user_ids, args.k)
    base_metrics = compute_metrics(base.item_idx, truth, k=args.k, train=fit, item_features=features, users=users)
    stats = genret.stats
    return {
        "identifier": identifier,
        "n_users": int(metrics["n_users"]),
        "metrics": {
            f"ndcg@{args.k}": metrics[f"ndcg@{args.k}"],
            f"hr@{args.k}": metrics[f"hr@{args.k}"],
            f"mrr@{args.k}": metrics[f"mrr@{args.k}"],
            f"coverage@{args.k}": metrics[f"coverage@{args.k}"],
            "valid_ratio": genret.valid_ratio,
        },
        "generated": stats.generated,
        "valid": stats.valid,
        "excluded": stats.excluded,
        "num_beams": genret.config.num_beams,
        "fit_s": round(fit_s, 2),
        "ms_per_user": round(1000 * rec_s / max(len(users), 1), 1),
        "retriever_same_users": {
            "model": pipe.config.retriever.name,
            f"ndcg@{args.k}": base_metrics[f"ndcg@{args.k}"],
            f"hr@{args.k}": base_metrics[f"hr@{args.k}"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="results JSON to write (required unless --refresh)")
    parser.add_argument("--dataset", default="movielens-small")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--retriever", default="ease", help="registered scorer that retrieves the candidates")
    parser.add_argument(
        "--retriever-config", default=None, help='its config as JSON (default for ease: {"l2_reg": 500.0})'
    )
    parser.add_argument("--candidates", type=int, default=20, help="retrieved items the LM reranks")
    parser.add_argument(
        "--retriever-seeds",
        type=int,
        default=1,
        help="fits of the retriever per stage (seeds --seed, --seed + 1, ...): 3 for a stochastic one (sasrec)",
    )
    parser.add_argument(
        "--rerank-history",
        type=int,
        default=None,
        help="liked titles the tuned letters prompt shows (default: RerankConfig's; fewer = a shorter, faster prompt)",
    )
    parser.add_argument("--methods", default="loglik,yesno,fewshot", help=f"rerank variants, from {','.join(METHODS)}")
    parser.add_argument("--shots", type=int, default=2, help="demonstrations of the fewshot variant")
    parser.add_argument(
        "--max-users", type=int, default=150, help="validation and test users per rerank variant (0 = every user)"
    )
    parser.add_argument(
        "--adapter", default="letters-ease-ml", help="registry name or folder of the tuned method's LoRA adapter"
    )
    parser.add_argument("--genret-users", type=int, default=60, help="test users for generative retrieval")
    parser.add_argument("--genret-semantic", action="store_true", help="also zero-shot semantic ids (near chance)")
    parser.add_argument("--explain-users", type=int, default=30, help="test users whose top 3 are explained")
    parser.add_argument("--latency-users", type=int, default=40, help="distinct users timed for rerank latency")
    parser.add_argument(
        "--latency-method",
        choices=METHODS,
        default=None,
        help="the rerank timed (and explained): default tuned-int8 or tuned when run, else loglik",
    )
    parser.add_argument(
        "--tiger-seeds", type=int, default=3, help="seeds of trained generative retrieval vs SASRec (0 = skip)"
    )
    parser.add_argument(
        "--tiger-from",
        type=Path,
        default=None,
        help="reuse tiger vs SASRec from this genret_trained.py run of the same split instead of fitting tiger here",
    )
    parser.add_argument(
        "--baselines",
        type=Path,
        default=BASELINES,
        help="reuse SASRec from this baselines run of the same split (missing: SASRec is fitted here)",
    )
    parser.add_argument("--gen-tokens", type=int, default=64, help="new tokens per generation prompt")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the LM (2 = the target machine)")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="LocalLM weights (int8: faster)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rerank-only",
        action="store_true",
        help="stop after the rerank comparison (step 1) and write it, with paired intervals, as a results JSON",
    )
    parser.add_argument("--quick", action="store_true", help=f"cap every user count at {QUICK_USERS} (smoke run)")
    parser.add_argument(
        "--refresh",
        type=Path,
        default=None,
        help="only add what derives from this results JSON's own numbers (int8 vs fp32, the targets) and stop; "
        "with --tiger-from, first replace its tiger and SASRec rows by that run's",
    )
    args = parser.parse_args(argv)
    if args.refresh is None and args.out is None:
        parser.error("--out is required (the results JSON to write), unless --refresh names one to update")
    if args.refresh is not None:
        out = json.loads(args.refresh.read_text(encoding="utf-8"))
        if args.tiger_from is not None:
            out = swap_tiger(out, args.tiger_from, Console())
        written = refresh(out)
        args.refresh.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        _print_targets(written["targets"])
        return 0
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.retriever_config is not None:
        retriever_config = json.loads(args.retriever_config)
    else:
        retriever_config = {"l2_reg": 500.0} if args.retriever == "ease" else {}
    if args.quick:
        for cap in ("max_users", "genret_users", "explain_users", "latency_users"):
            setattr(args, cap, min(getattr(args, cap) or QUICK_USERS, QUICK_USERS))
        GEN_PROMPTS[:] = GEN_PROMPTS[:2]
    console = Console()
    started_all = time.perf_counter()
    load_before = os.getloadavg()
    key = f"ndcg@{args.k}"
    retriever = RetrieverSpec(name=args.retriever, config=retriever_config)

    data = load_named(args.dataset, prefer_store=False)
    lm = LocalLM(LocalLMConfig(threads=args.threads, quantize=args.quantize))
    started = time.perf_counter()
    lm.load()
    console.print(f"[dim]loaded {lm.model_id} ({lm.load_source}) in {time.perf_counter() - started:.1f} s[/]")

    # 1. Retriever vs retriever + LM rerank.
    lms: dict[str, LocalLM] = {}
    results, chosen = _rerank_section(data, args, retriever, lm, console, lms) if args.methods else (None, {})
    if results is not None:
        results = compare_results(results, retriever.name)  # each rerank minus the retriever on the same users
    # 1b. Trained generative retrieval against SASRec (both on every test user of the same split).
    if args.tiger_seeds and not args.rerank_only:
        results = _tiger_section(data, args, results, console)
    if results is not None:
        console.print(metrics_table(results, [key, f"hr@{args.k}", f"mrr@{args.k}", f"coverage@{args.k}"]))
        console.print(comparisons_table(results))
    if args.rerank_only:
        if results is None:
            parser.error("--rerank-only needs at least one --methods entry")
        results.write_json(args.out)
        console.print(f"wrote {args.out} in {time.perf_counter() - started_all:.0f} s")
        return 0

    # The test-stage pipeline shared by steps 2-4: fitted on train + validation, zero-shot calibrated loglik.
    split = make_split(data, "leave-last-out")
    fit = split.fit_data("test")
    split.check(fit, "test")
    fast = args.latency_method or next((m for m in TUNED[::-1] if m in args.methods), "loglik")
    fast_rerank, fast_fewshot, _ = _rerank_config(fast, args)
    weight = chosen.get(fast, RerankConfig().weight)
    pipe_config = PipelineConfig(
        retriever=retriever,
        candidates=args.candidates,
        rerank=fast_rerank.model_copy(update={"weight": weight}),
        fewshot=fast_fewshot,
        lm=LMSpec(local=_lm_settings(fast, args)),
    )
    fast_lm = lms.get(fast) or _method_lm(fast, args, lm)
    pipe = Pipeline(pipe_config, lm=fast_lm).fit(fit, TrainOptions(seed=args.seed))
    test_users = np.unique(split.targets("test").user_idx)
    order = np.random.default_rng(args.seed + 1).permutation(test_users)  # one seeded sample for steps 2-4
    features = item_features(data)

    # 2. Generative retrieval.
    genret: dict[str, Any] = {}
    identifiers = (["title", "semantic"] if args.genret_semantic else ["title"]) if args.genret_users else []
    for identifier in identifiers:
        console.print(f"[dim]generative retrieval ({identifier} ids), {args.genret_users} test users...[/]")
        genret[identifier] = _genret_section(
            lm, identifier, fit, split, np.sort(order[: args.genret_users]), pipe, args, features
        )
    if args.genret_semantic:
        genret["semantic"]["note"] = (
            "zero-shot semantic ids are expected to be near chance: the model has never seen the codes; they need "
            "tuning (issue 5)"
        )

    # 4 (first, so step 3 can reuse its reranked lists). Rerank latency, 20 candidates, one user per call.
    console.print(f"[dim]rerank latency: {args.latency_users} users x 2 calls (+1 warm-up)...[/]")
    pipe.rerank_scores([fit.user_vocab.ids[order[-1]]])  # warm-up: allocator, kernels, first prior titles
    first_ms, cached_ms, first_cpu, batches = [], [], [], {}
    for u in order[: args.latency_users]:
        user = fit.user_vocab.ids[u]
        c0, w0 = time.process_time(), time.perf_counter()
        batches[int(u)] = pipe.rerank_scores([user])
        first_ms.append(1000 * (time.perf_counter() - w0))
        first_cpu.append(1000 * (time.process_time() - c0))
        w0 = time.perf_counter()
        pipe.rerank_scores([user])  # the same user again: prompt (and title priors) cached
        cached_ms.append(1000 * (time.perf_counter() - w0))
    # The same users with their history part of the prompt computed ahead (Pipeline.warm, as a server does when
    # a user's history changes): the request computes only the candidate list. Each user's earlier prompts are
    # dropped first and the shared instructions cached again (another user warmed), as on a serving process.
    # With fp32 weights the scores must not change; with int8 they move with where each pass is cut.
    warm_ms, warm_tokens, warm_diff, same_order = [], [], [], 0
    for u in order[: args.latency_users]:
        user = fit.user_vocab.ids[u]
        clear_prompt_caches()
        pipe.warm([fit.user_vocab.ids[order[-1]]])
        warm_tokens.append(pipe.warm([user]))
        w0 = time.perf_counter()
        warmed = pipe.rerank_scores([user])
        warm_ms.append(1000 * (time.perf_counter() - w0))
        cold_lm, warm_lm = batches[int(u)].lm_scores, warmed.lm_scores
        assert cold_lm is not None and warm_lm is not None
        real = np.isfinite(cold_lm)
        warm_diff.append(float(np.abs(cold_lm[real] - warm_lm[real]).max()) if real.any() else 0.0)
        same_order += bool(np.array_equal(np.argsort(-cold_lm[real]), np.argsort(-warm_lm[real])))
    latency = {
        "candidates": args.candidates,
        "method": fast,
        "rerank": pipe_config.rerank.model_dump() if pipe_config.rerank else None,
        "lm": _lm_settings(fast, args),
        "retriever": retriever.name,
        "n_users": len(first_ms),
        **latency_metrics(first_ms, mean=True, digits=1),
        **latency_metrics(first_cpu, percentiles=(50,), prefix="cpu", digits=1),
        "throughput_per_s": round(1000 * len(first_ms) / sum(first_ms), 3),
        "throughput_unit": "users (rerank requests) per second, one at a time",
        "prompt_cached": {
            **latency_metrics(cached_ms, mean=True, digits=1),
            "throughput_per_s": round(1000 * len(cached_ms) / sum(cached_ms), 3),
        },
        "history_cached": {
            **latency_metrics(warm_ms, mean=True, digits=1),
            "note": "each user's prompt up to the candidate list computed ahead (Pipeline.warm), then one rerank",
            "tokens_cached_mean": round(float(np.mean(warm_tokens)), 1),
            "max_abs_lm_score_diff": round(max(warm_diff), 6),
            "same_order_users": same_order,
        },
    }

    # 3. Explanations of the pipeline's top 3 (reranked with the chosen weight).
    console.print(f"[dim]explanations: {args.explain_users} users x top 3...[/]")
    explainer = Explainer(lm, fit)
    explanations, explain_ms = [], []
    for u in order[: args.explain_users]:
        user = fit.user_vocab.ids[u]
        batch: RerankedBatch = batches.get(int(u)) or pipe.rerank_scores([user])
        top = batch.final(3, weight)
        history = explainer.history(user)
        for item in top.items[0]:
            if item is None:
                continue
            w0 = time.perf_counter()
            explanations.append(explainer.explain(history, item))
            explain_ms.append(1000 * (time.perf_counter() - w0))
    sources = Counter(e.source for e in explanations)
    explain_section = {
        "n_users": min(args.explain_users, len(order)),
        "n_explanations": len(explanations),
        "grounding_rate": grounding_rate(explanations, explainer.catalogue),
        "raw_grounding_rate": raw_grounding_rate(explanations),
        "sources": dict(sources),
        # Worth reading? Informative (names a liked item or shared attribute, says why) and not a copy of an
        # evidence line; the template's rates on the same evidence beside them (llmrec.llm.explain.quality).
        "quality": dataclasses.asdict(explanation_quality(explanations)),
        "template_quality": dataclasses.asdict(
            explanation_quality([template_explanation(e.evidence) for e in explanations if e.evidence is not None])
        ),
        "ms_per_explanation": round(float(np.mean(explain_ms)), 1) if explain_ms else None,
        **(latency_metrics(explain_ms, mean=True, digits=1) if explain_ms else {}),
        "examples": [
            {"item_id": e.item_id, "text": e.text, "source": e.source, "raw_text": e.raw_text} for e in explanations[:3]
        ],
    }

    # 5. Generation speed and memory.
    console.print(f"[dim]generation: {len(GEN_PROMPTS)} prompts x {args.gen_tokens} new tokens...[/]")
    lm.generate(GEN_PROMPTS[0], max_new_tokens=4)  # warm-up
    tokens, seconds = 0, 0.0
    for prompt in GEN_PROMPTS:
        w0 = time.perf_counter()
        text = lm.generate(prompt, max_new_tokens=args.gen_tokens)
        seconds += time.perf_counter() - w0
        tokens += lm.count_tokens(text)
    generation = {
        "tokens_per_s": round(tokens / seconds, 1),
        "tokens": tokens,
        "prompts": len(GEN_PROMPTS),
        "max_new_tokens": args.gen_tokens,
        "greedy": True,
    }
    # 6. Dialogue understanding.
    console.print("[dim]dialogue: slot scores on the labelled utterances...[/]")
    dialogue = _dialogue_section()
    peak_mb = round(_peak_rss_mb(), 1)
    elapsed = time.perf_counter() - started_all

    # Tables and target lines.
    gtable = Table(title=f"generative retrieval (zero-shot), k={args.k}")
    for col in ("ids", "users", key, f"hr@{args.k}", "valid", "ms/user", f"{retriever.name} {key} (same users)"):
        gtable.add_column(col, justify="right")
    for identifier, g in genret.items():
        m = g["metrics"]
        gtable.add_row(
            identifier,
            str(g["n_users"]),
            f"{m[key]:.4f}",
            f"{m[f'hr@{args.k}']:.4f}",
            f"{m['valid_ratio']:.1%} ({g['valid']}/{g['generated']})",
            f"{g['ms_per_user']:.0f}",
            f"{g['retriever_same_users'][key]:.4f}",
        )
    console.print(gtable)
    if args.genret_semantic:
        console.print("[dim]semantic ids zero-shot are expected to be near chance: they need tuning (issue 5)[/]")
    stable = Table(title=f"{lm.model_id}, {args.threads} threads")
    stable.add_column("measure")
    stable.add_column("value", justify="right")
    stable.add_row(
        f"rerank p50 / p95 ms ({args.candidates} cand., {len(first_ms)} users)",
        f"{latency['latency_p50_ms']:.0f} / {latency['latency_p95_ms']:.0f}",
    )
    pc = latency["prompt_cached"]
    hc = latency["history_cached"]
    stable.add_row("rerank p50 / p95 ms, history cached", f"{hc['latency_p50_ms']:.0f} / {hc['latency_p95_ms']:.0f}")
    stable.add_row("rerank p50 / p95 ms, same prompt again", f"{pc['latency_p50_ms']:.0f} / {pc['latency_p95_ms']:.0f}")
    stable.add_row(
        f"explanations grounded ({len(explanations)})",
        f"{explain_section['grounding_rate']:.1%}" if explanations else "-",
    )
    raw = explain_section["raw_grounding_rate"]
    stable.add_row("LM text grounded without repair", "-" if math.isnan(raw) else f"{raw:.1%}")
    stable.add_row("ms per explanation (mean)", f"{explain_section['ms_per_explanation'] or float('nan'):.0f}")
    stable.add_row("generation tokens/s", f"{generation['tokens_per_s']:.1f}")
    stable.add_row("peak RSS MB", f"{peak_mb:.0f}")
    console.print(stable)

    console.print(
        f"latency: {args.threads} threads, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; history-cached scores differ from cold by at most {hc['max_abs_lm_score_diff']:.1e} "
        f"(same order for {hc['same_order_users']} of {latency['n_users']} users)"
    )
    for identifier, g in genret.items():
        ratio = g["metrics"]["valid_ratio"]
        console.print(
            f"generative retrieval ({identifier}) valid 100%? {'yes' if ratio == 1.0 else 'no'}: "
            f"{ratio:.1%} of {g['generated']} generated"
        )
    f1 = dialogue["overall"]["f1"]
    console.print(
        f"dialogue slot F1 >= {DIALOGUE_F1_TARGET}? {'met' if f1 >= DIALOGUE_F1_TARGET else 'missed'}: {f1:.3f} on "
        f"{dialogue['utterances']} labelled utterances"
    )
    rate = explain_section["grounding_rate"]
    console.print(
        f"explanations grounded >= {GROUNDING_TARGET:.0%}? {'yes' if rate >= GROUNDING_TARGET else 'no'}: {rate:.1%} "
        f"of {len(explanations)} (LM text passing unrepaired: {raw:.1%}; sources {dict(sources)})"
    )

    out: dict[str, Any] = (
        results.model_dump()
        if results is not None
        else EvalResults(dataset=data.name, protocol="leave-last-out", k=args.k, results=[]).model_dump()
    )
    out.update(
        {
            "genret": genret,
            "explanations": explain_section,
            "latency": latency,
            "generation": generation,
            "dialogue": dialogue,
            "peak_rss_mb": peak_mb,
            "settings": {
                "model_id": lm.model_id,
                "threads": args.threads,
                "retriever": retriever.model_dump(),
                "candidates": args.candidates,
                "methods": args.methods,
                "shots": args.shots,
                "chosen_weights": chosen,
                "max_users": args.max_users,
                "genret_users": args.genret_users,
                "explain_users": args.explain_users,
                "latency_users": args.latency_users,
                "quick": args.quick,
                "seed": args.seed,
                "cpus": os.cpu_count(),
                "loadavg_before": list(load_before),
                "loadavg_after": list(os.getloadavg()),
                "elapsed_s": round(elapsed, 1),
                "peak_rss_note": "ru_maxrss of this one process: LM, dataset, retriever and explainer together",
            },
            "provenance": provenance(),
        }
    )
    out = refresh(_clean(out))
    _print_targets(out["targets"])  # the rerank and trained-retrieval verdicts come from the paired intervals
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
