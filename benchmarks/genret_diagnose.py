"""Where trained generative retrieval (``tiger``) loses to SASRec: its first code levels or the items within them.

``tiger`` scores an item as ``p(c1) p(c2 | c1) ...``: a choice among groups of items sharing a code prefix, then
a choice within the group. Both tiger and SASRec give a distribution over the whole catalogue, so each can be
split at a prefix length ``L`` into a group mass and a within-group share, and the halves swapped:

* ``tiger groups + sasrec within @L``: tiger's probability of each prefix-``L`` group, SASRec's share of the item
  inside it. If this matches SASRec, tiger's coarse choice is as good as SASRec's and it loses inside the groups.
* ``sasrec groups + tiger within @L``: the converse.
* ``tiger top N ranked by sasrec``: tiger's N most probable unseen items, ordered by SASRec's scores (nothing
  else can be recommended). Generation names the candidates, a dense scorer orders them, as LIGER (Yang et al.
  2024) does inside one model: if this reaches SASRec, tiger's lists hold the right items and only their order
  inside them loses.

Both models are fitted on the same leave-last-out split with the same seeds (tiger's codes of each seed define the
groups); every row is NDCG@10 on every test user, means over seeds, each compared paired (95% bootstrap over users)
with tiger and with SASRec. Writes one JSON; README's "Where tiger loses" table is read from it.

    python benchmarks/genret_diagnose.py --out results/genret-diagnose.json     # 3 seeds, ~25 min on 2 cores
    python benchmarks/genret_diagnose.py --quick --out out/genret-diagnose.json  # 1 seed, 2 epochs: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table
from scipy.special import log_softmax

from llmrec.data.movielens import load_movielens
from llmrec.data.splits import make_split
from llmrec.eval.metrics import ndcg_at_k
from llmrec.eval.provenance import provenance
from llmrec.eval.stats import paired_comparison, verdict
from llmrec.models.base import TrainOptions, top_k
from llmrec.models.registry import get_scorer

QUICK: dict[str, Any] = {"max_epochs": 2, "patience": 1}
CANDIDATES = (20, 50, 200)
"""Sizes of tiger's candidate lists that SASRec orders (the ``tiger top N ranked by sasrec`` rows)."""


def group_log_mass(logp: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row and item: the log of the probability mass of the item's group (``logp`` rows are log-probabilities)."""
    n_groups = int(groups.max()) + 1
    member = sp.csr_matrix((np.ones(len(groups)), (np.arange(len(groups)), groups)), shape=(len(groups), n_groups))
    top = logp.max(axis=1, keepdims=True)
    mass = np.asarray(np.exp(logp - top) @ member)
    return (np.log(np.maximum(mass, np.finfo(np.float64).tiny)) + top)[:, groups]


def swap_within(groups_from: np.ndarray, within_from: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Log-scores taking each group's mass from ``groups_from`` and each item's share of its group from ``within_from``.

    Both are ``(users, items)`` log-probabilities over the catalogue; the result is one too.
    """
    return group_log_mass(groups_from, groups) + within_from - group_log_mass(within_from, groups)


def rank_candidates(candidates_from: np.ndarray, rank_by: np.ndarray, seen: sp.csr_matrix, n: int) -> np.ndarray:
    """``rank_by``'s scores on each row's ``n`` best unseen items by ``candidates_from``, ``-inf`` elsewhere."""
    candidates = _top_k(candidates_from, seen, n)
    out = np.full(rank_by.shape, -np.inf)
    rows = np.arange(len(rank_by))[:, None]
    out[rows, candidates] = rank_by[rows, candidates]
    return out


def _top_k(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    masked = scores.copy()
    masked[seen.nonzero()] = -np.inf
    return top_k(masked, k)[0]


def diagnose(
    config: dict[str, Any], sasrec: dict[str, Any], *, seeds: list[int], k: int, threads: int
) -> dict[str, Any]:
    """Fit tiger (``config``) and SASRec (``sasrec``) per seed on the leave-last-out test stage; NDCG@k per user."""
    data = load_movielens()
    split = make_split(data, "leave-last-out")
    fit, targets = split.fit_data("test"), split.targets("test")
    users = np.unique(targets.user_idx)
    seen = fit.matrix("binary")[users].tocsr()
    truth = split.unseen_targets("test", users, fit)
    ids = fit.user_vocab.ids[users]
    per_seed: dict[str, list[np.ndarray]] = {}
    console = Console()
    for seed in seeds:
        options = TrainOptions(seed=seed, threads=threads)
        scores = {}
        for name, cfg in (("tiger", config), ("sasrec", sasrec)):
            console.print(f"[dim]seed {seed}: fitting {name}[/]")
            model = get_scorer(name, **cfg).fit(fit, options)
            scores[name] = log_softmax(model.score(ids), axis=1)
            if name == "tiger":
                codes = np.asarray(model.codes)
        rows = {"tiger": scores["tiger"], "sasrec": scores["sasrec"]}
        for level in range(1, codes.shape[1]):
            groups = np.unique(codes[:, :level], axis=0, return_inverse=True)[1].reshape(-1)
            rows[f"tiger groups + sasrec within @{level}"] = swap_within(scores["tiger"], scores["sasrec"], groups)
            rows[f"sasrec groups + tiger within @{level}"] = swap_within(scores["sasrec"], scores["tiger"], groups)
        for n in CANDIDATES:
            rows[f"tiger top {n} ranked by sasrec"] = rank_candidates(scores["tiger"], scores["sasrec"], seen, n)
        for name, s in rows.items():
            per_seed.setdefault(name, []).append(ndcg_at_k(_top_k(s, seen, k), truth, k))
    means = {name: np.mean(v, axis=0) for name, v in per_seed.items()}

    def versus(name: str, other: str) -> str:
        c = paired_comparison(means[name], means[other])
        # A diagnostic row is no model: say which way it went, not "better".
        return f"{c.diff:+.4f} [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] {verdict(c.ci95, 'none')}"

    return {
        "rows": [
            {
                "name": name,
                f"ndcg@{k}": round(float(means[name].mean()), 4),
                "per_seed": [round(float(v.mean()), 4) for v in per_seed[name]],
                "vs_tiger": "-" if name == "tiger" else versus(name, "tiger"),
                "vs_sasrec": "-" if name == "sasrec" else versus(name, "sasrec"),
            }
            for name in per_seed
        ],
        "per_user": {"users": [str(u) for u in ids], **{n: [round(float(x), 6) for x in m] for n, m in means.items()}},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the diagnosis and write ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument("--quick", action="store_true", help="one seed, two epochs: a smoke run")
    parser.add_argument("--config", type=json.loads, default=None, help="tiger config fields as JSON")
    args = parser.parse_args(argv)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    # The code decoder alone (the diagnosis reads its distribution over the catalogue), not the dense head's order.
    config = {"dense": False, **(QUICK if args.quick else {}), **(args.config or {})}
    sasrec = {"max_epochs": 2} if args.quick else {}
    out = diagnose(config, sasrec, seeds=seeds, k=args.k, threads=args.threads)
    table = Table("row", f"NDCG@{args.k}", "per seed", "vs tiger", "vs sasrec")
    for row in out["rows"]:
        table.add_row(
            row["name"], f"{row[f'ndcg@{args.k}']:.4f}", str(row["per_seed"]), row["vs_tiger"], row["vs_sasrec"]
        )
    Console().print(table)
    result = {
        "dataset": "movielens-small",
        "protocol": "leave-last-out",
        "k": args.k,
        "seeds": seeds,
        "tiger_config": config,
        "sasrec_config": sasrec,
        "quick": args.quick,
        **out,
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
