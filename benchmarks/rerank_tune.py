"""Tune the one-pass letter reranker: LoRA on letter examples from the train split only, on the CPU, time-boxed.

Examples come from :func:`llmrec.adapt.letters.build_letter_examples` (each train user's last training events
held out as targets, the retriever's top-20 from a fit without them as candidates, the target's letter as the
reply). A few users' examples are kept aside for the validation loss that picks the weights kept. The adapter is
saved in the adapter registry (``--name``) with its card (``llmrec_adapter.json``: data, settings, seed, training
wall time, load average) and is then used as ``LocalLMConfig(adapter=NAME)`` with ``RerankConfig(method="letters")``
(``benchmarks/generative.py --methods tuned --adapter NAME``).

    python benchmarks/rerank_tune.py --name letters-ease-ml [--max-seconds 1600] [--last-layers 8] [--quick]
    python benchmarks/rerank_tune.py --name letters-ease-ml --evaluate-only --out results/letters-adapter-nll.json

The card's ``letter_nll_valid`` is the validation letters' own cross-entropy (the trainer's loss averages the letter
and the end-of-turn token) beside the position prior: a tuned model that does not go below the prior has learnt
nothing the retriever's order did not already say.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from llmrec.adapt.instructions import InstructionExample
from llmrec.adapt.letters import LetterDataConfig, build_letter_examples, letter_losses
from llmrec.adapt.lora import LoraTuneConfig, tune_lora
from llmrec.adapt.registry import resolve_adapter
from llmrec.data.registry import load_named
from llmrec.data.splits import make_split


def _letter_report(
    train: list[InstructionExample], valid: list[InstructionExample], candidates: int, adapter: Path, threads: int
) -> dict[str, dict[str, float]]:
    """The validation letters' cross-entropy: the tuned and the untuned model beside the position prior.

    The trainer's validation loss averages the letter and the end-of-turn token; this is the letter's own loss, and
    a tuned model that does not go below ``position_prior`` has learnt nothing the retriever's order did not say.
    """
    from llmrec.llm.local import LocalLM, LocalLMConfig

    tuned, untuned = (
        LocalLM(LocalLMConfig(threads=threads, adapter=str(adapter))),
        LocalLM(LocalLMConfig(threads=threads)),
    )
    hits = [ex for ex in valid if ex.template == "letters-hit"]
    report: dict[str, dict[str, float]] = {}
    # All validation examples, then the natural hits alone (the faithful ones: at inference every candidate is
    # retrieved, where an inserted target is the odd one out of its list).
    for label, rows in (("all validation", valid), ("natural hits", hits)):
        if not rows:
            continue
        losses = letter_losses(train, rows, candidates, lm=tuned)
        base = letter_losses(train, rows, candidates, lm=untuned)
        report[label] = {
            "n": len(rows),
            **losses,
            "untuned_model": base["model"],
            "untuned_model_letters": base["model_letters"],
        }
        print(
            f"{label} letter cross-entropy (nats): " + ", ".join(f"{k} {v:.3f}" for k, v in report[label].items()),
            flush=True,
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="letters-ease-ml", help="adapter registry name")
    parser.add_argument("--adapter-dir", default=None, help="registry folder (default: the settings' adapter_dir)")
    parser.add_argument("--dataset", default="movielens-small")
    parser.add_argument("--retriever", default="ease")
    parser.add_argument("--targets-per-user", type=int, default=20)
    parser.add_argument("--inserted-share", type=float, default=0.5)
    parser.add_argument("--max-examples", type=int, default=4000)
    parser.add_argument("--valid-users", type=int, default=20, help="users whose examples are the validation set")
    parser.add_argument("--valid-examples", type=int, default=64, help="at most this many validation examples")
    parser.add_argument("--max-seconds", type=float, default=1600.0, help="training wall-time budget")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--last-layers", type=int, default=8, help="adapt only the last N decoder layers (0 = all; fewer = faster)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few examples and steps (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="also write the card as JSON here")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: report the letter cross-entropy of the adapter already registered as --name on the "
        "validation examples these settings build (the defaults rebuild those of letters-ease-ml)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = load_named(args.dataset)
    split = make_split(data, "leave-last-out")
    data_config = LetterDataConfig(
        retriever=args.retriever,
        targets_per_user=2 if args.quick else args.targets_per_user,
        inserted_share=args.inserted_share,
        max_examples=40 if args.quick else args.max_examples,
        max_users=30 if args.quick else None,
        seed=args.seed,
    )
    examples = build_letter_examples(split, data_config)
    build_s = time.perf_counter() - started
    users = sorted({ex.user_id for ex in examples})
    rng = np.random.default_rng(args.seed)
    n_valid = min(2 if args.quick else args.valid_users, max(1, len(users) // 5))
    valid_users = set(rng.choice(users, n_valid, replace=False).tolist())
    train = [ex for ex in examples if ex.user_id not in valid_users]
    valid = [ex for ex in examples if ex.user_id in valid_users][: args.valid_examples]
    hits = sum(1 for ex in examples if ex.template == "letters-hit")
    print(f"{len(examples)} examples ({len(train)} train, {len(valid)} valid) in {build_s:.0f} s", flush=True)
    config = LoraTuneConfig(
        r=args.rank,
        alpha=2.0 * args.rank,
        last_layers=args.last_layers or None,
        lr=args.lr,
        batch_size=2 if args.quick else args.batch_size,
        max_steps=2 if args.quick else args.max_steps,
        epochs=1,
        max_tokens=420,
        warmup_steps=0 if args.quick else 10,
        schedule="constant",
        eval_every=0 if args.quick else 60,
        patience=None,
        seed=args.seed,
        threads=args.threads,
        max_seconds=args.max_seconds,
    )
    card = {
        "purpose": "one-pass letter reranker (RerankConfig(method='letters')) for the pipeline's retriever top-20",
        "data": {
            "dataset": args.dataset,
            "split": "leave-last-out, train part only (validation and test events never read)",
            **data_config.model_dump(),
            "n_examples": len(examples),
            "n_train": len(train),
            "n_valid": len(valid),
            "valid_users": len(valid_users),
            "retriever_hits": hits,
            "build_s": round(build_s, 1),
        },
        "seed": args.seed,
        "loadavg_start": os.getloadavg(),
    }

    def on_step(info: object) -> None:
        step = getattr(info, "step", 0)
        if step % 10 == 0 or getattr(info, "valid_loss", None) is not None:
            print(
                f"step {step}/{getattr(info, 'total', 0)} loss {getattr(info, 'loss', 0.0):.3f} "
                f"valid {getattr(info, 'valid_loss', None)} t={time.perf_counter() - started:.0f}s",
                flush=True,
            )

    if args.evaluate_only:
        path = resolve_adapter(args.name, args.adapter_dir)
        report = {
            "adapter": args.name,
            "letter_nll_valid": _letter_report(train, valid, data_config.candidates, path, args.threads),
        }
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return 0
    result = tune_lora(
        train,
        valid,
        name=args.name,
        config=config,
        adapter_dir=args.adapter_dir,
        overwrite=True,
        extra_metadata={"card": card},
        on_step=on_step,
    )
    meta = dict(result.metadata)
    meta["card"]["train_s"] = meta["wall_s"]
    meta["card"]["letter_nll_valid"] = _letter_report(train, valid, data_config.candidates, result.path, args.threads)
    meta["card"]["loadavg_end"] = os.getloadavg()
    (result.path / "llmrec_adapter.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: meta[k] for k in ("steps", "wall_s", "valid_loss_start", "valid_loss_best", "n_train")}))
    print(f"adapter: {result.path}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
