"""Dialogue understanding: slot precision, recall and F1 of the chat's turn reader on the labelled utterances.

Reads ``tests/chat/data/utterances.jsonl`` (300 utterances written for the project: shortened, misspelled and
re-punctuated titles, sentiment cues before and after a title, seen items, negations and comparatives, genre
conjunctions and alternatives, decades and year bounds, described wishes; see :mod:`llmrec.eval.dialogue` for
the slots and the labelling conventions) and parses each one against the bundled MovieLens catalogue, as a
first turn. Writes per-slot and overall (micro-averaged) precision/recall/F1, intent accuracy, the share of
utterances read exactly right, every error, and whether the target (overall slot F1 >= 0.9) is met.

Caveat: the utterances and the rules were written by the same team, so this measures the rules on the phenomena
they were built for; unseen phrasing will score lower (each further set's first run, before any change made from
its errors, is kept as ``*-first.json``).

With ``--lm`` the packaged language model decides liked/disliked for the titles no rule cue speaks of
(:class:`llmrec.chat.judge.LMSentimentJudge`); the result records how many titles it was asked about.

    python benchmarks/dialogue.py --out results/dialogue.json
    python benchmarks/dialogue.py --lm --utterances tests/chat/data/utterances_heldout3.jsonl --out out/d.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from llmrec.catalogue import Catalogue
from llmrec.data.movielens import load_movielens
from llmrec.eval.dialogue import SLOTS, load_utterances, score_utterances
from llmrec.eval.provenance import provenance

TARGET_F1 = 0.9
DEFAULT_SET = Path(__file__).resolve().parent.parent / "tests" / "chat" / "data" / "utterances.jsonl"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=Path, default=DEFAULT_SET)
    parser.add_argument("--out", type=Path, default=Path("out/dialogue.json"))
    parser.add_argument(
        "--quick", action="store_true", help="accepted for the common benchmark interface: the full run takes seconds"
    )
    parser.add_argument(
        "--lm", action="store_true", help="let the packaged LM decide sentiment where the rules find no cue (slow)"
    )
    args = parser.parse_args(argv)
    data = load_movielens()
    catalogue = Catalogue.of(data)
    newest = max(y for y in (catalogue.year(i) for i in range(len(catalogue))) if y)
    rows = load_utterances(args.utterances)
    asked: list[tuple[str, str, str]] = []
    judge = None
    if args.lm:
        from llmrec.chat.judge import LMSentimentJudge
        from llmrec.llm.local import LocalLM

        lm_judge = LMSentimentJudge(LocalLM().load())

        def judge(text: str, title: str) -> Literal["liked", "disliked"]:
            feeling = lm_judge(text, title)
            asked.append((text, title, feeling))
            return feeling

    start = time.perf_counter()
    report = score_utterances(rows, catalogue, popularity=data.item_popularity, newest_year=newest, judge=judge)
    seconds = time.perf_counter() - start
    overall = report["overall"]["f1"]
    result = {
        "dataset": data.name,
        "utterances_file": str(args.utterances.relative_to(DEFAULT_SET.parents[3]))
        if args.utterances.is_relative_to(DEFAULT_SET.parents[3])
        else str(args.utterances),
        "target": {"overall_f1": TARGET_F1, "met": overall >= TARGET_F1},
        "sentiment_judge": "lm" if args.lm else "rules",
        "judge_calls": [{"text": t, "title": title, "feeling": f} for t, title, f in asked],
        "ms_per_utterance": round(1000 * seconds / max(len(rows), 1), 2),
        "results": [{"model": slot, **report["slots"][slot]} for slot in SLOTS]
        + [{"model": "overall", **report["overall"]}],
        **{k: v for k, v in report.items() if k not in ("slots", "overall")},
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = Table(title=f"Slot scores on {len(rows)} utterances")
    for header in ("slot", "precision", "recall", "F1", "tp", "fp", "fn"):
        table.add_column(header)
    for row in result["results"]:
        table.add_row(
            row["model"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
            str(row["tp"]), str(row["fp"]), str(row["fn"]),
        )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(
        f"overall F1 {overall:.4f} (target {TARGET_F1}: {'met' if overall >= TARGET_F1 else 'MISSED'}); "
        f"exact match {report['exact_match']:.3f}; intent accuracy {report['intent_accuracy']}; "
        f"{len(report['errors'])} slot errors; written to {args.out}"
    )


if __name__ == "__main__":
    main()
