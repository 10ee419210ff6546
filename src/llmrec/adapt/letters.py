"""Training examples for the one-pass letter reranker (``RerankConfig(method="letters")``), from the train split only.

The reranker shows the user's recent liked titles and the retriever's top candidates labelled A, B, C...; the
reply is the letter of the item the user picks next, and all candidates are scored in ONE forward pass by the
next-token distribution over the letter tokens. To teach a small model that format, each train user gives
``targets_per_user`` examples:

- The user's last ``targets_per_user`` *training* events are held out (the split's validation and test events are
  never read: only ``split.train`` is). A retriever is fitted on the training data without those held-out events,
  so it has not seen the answers it is asked to rank.
- For a held-out event ``t``, the candidates are the retriever's top ``candidates`` for the history before ``t``
  (folded in; the history and the user's other held-out events excluded), in the retriever's order. When the
  target is missing it replaces the candidate at a random position (so the list keeps its length), which also
  stops the model from learning "the answer is always near the top".
- The prompt is exactly :meth:`~llmrec.llm.rerank.LMReranker.listwise_prompt` over the same short titles the
  pipeline shows, so training sees what inference sends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.adapt.instructions import InstructionExample, _NoLM
from llmrec.data.splits import Split
from llmrec.errors import ConfigError
from llmrec.llm.base import LanguageModel
from llmrec.llm.rerank import LETTERS, LMReranker, RerankConfig, letter_logprobs

__all__ = ["LetterDataConfig", "build_letter_examples", "letter_losses"]

log = logging.getLogger(__name__)


class LetterDataConfig(BaseModel):
    """How the letter-reranking examples are built.

    Attributes:
        retriever: Registered scorer name that proposes the candidates (as the pipeline's retriever).
        retriever_config: Its config (default for ``ease``: ``l2_reg=500``, as the benchmarks tune it).
        candidates: Candidates per example (the pipeline's ``candidates``; at most 26 letters).
        targets_per_user: Held-out training events per user (each one example).
        min_history: Events a user must keep before the first held-out one.
        history: Liked titles shown (the reranker's ``history``).
        liked_min_value: Events valued at least this make up the shown history (all when a user has none).
        inserted_share: At most this share of the examples has a target the retriever missed (inserted); the
            rest are natural hits. Inserted targets are the odd one out of a retrieved list, which the model could
            learn to spot; at inference every candidate is retrieved, so natural hits are the faithful examples.
        max_examples: Keep at most this many examples (a seeded sample; ``None`` = all).
        max_users: Use at most this many users (a seeded sample); ``None`` = all.
        seed: Seed of the insertion positions and the user sample.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retriever: str = "ease"
    retriever_config: dict[str, float | int | str | bool] | None = None
    candidates: int = Field(default=20, ge=2, le=len(LETTERS))
    targets_per_user: int = Field(default=5, ge=1)
    min_history: int = Field(default=3, ge=1)
    history: int = Field(default=10, ge=1, le=100)
    liked_min_value: float | None = 4.0
    inserted_share: float = Field(default=0.5, ge=0.0, le=1.0)
    max_examples: int | None = Field(default=None, ge=1)
    max_users: int | None = Field(default=None, ge=1)
    seed: int = 0


def _titles(split: Split) -> list[str]:
    from llmrec.pipeline import item_titles

    return item_titles(split.train)


def build_letter_examples(
    split: Split, config: LetterDataConfig | None = None, *, rerank: RerankConfig | None = None
) -> list[InstructionExample]:
    """Letter-reranking examples from ``split.train`` only (see the module docstring).

    Args:
        split: A split; only its ``train`` part is read, so nothing of validation or test can leak in.
        config: How many targets, candidates and which retriever.
        rerank: The rerank settings whose prompt is reproduced (``history`` and ``item_noun`` matter).

    Returns:
        Examples whose ``target`` is a letter and ``label`` the target's position (0 = A); ``task`` ``letters``;
        ``template`` ``letters-hit`` (the retriever found the target) or ``letters-inserted``.

    Raises:
        ConfigError: No user has enough training events.
    """
    from llmrec.models.registry import SCORERS

    config = config or LetterDataConfig()
    rerank = rerank or RerankConfig(method="letters", history=config.history)
    train = split.train
    rng = np.random.default_rng(config.seed)
    n = config.candidates
    order = np.argsort(train.user_idx, kind="stable")  # time order within each user is kept
    users, items = train.user_idx[order], train.item_idx[order]
    values, times = train.values[order], train.timestamps[order]
    starts = np.searchsorted(users, np.arange(train.n_users + 1))
    counts = np.diff(starts)
    eligible = np.flatnonzero(counts >= config.min_history + config.targets_per_user)
    if config.max_users is not None and len(eligible) > config.max_users:
        eligible = np.sort(rng.choice(eligible, config.max_users, replace=False))
    if not len(eligible):
        raise ConfigError("no user has enough training events for letter examples: lower targets_per_user")
    held = np.zeros(len(train), dtype=bool)  # in ``order`` positions
    for user in eligible:
        held[starts[user + 1] - config.targets_per_user : starts[user + 1]] = True
    keep = np.ones(len(train), dtype=bool)
    keep[order[held]] = False
    fit = train.subset(keep, name=train.name)
    retriever_config = config.retriever_config
    if retriever_config is None:
        retriever_config = {"l2_reg": 500.0} if config.retriever == "ease" else {}
    klass = SCORERS[config.retriever]
    scorer = klass(klass.config_class.model_validate(retriever_config)).fit(fit)

    cases: list[tuple[int, int, np.ndarray]] = []  # (user, position of the target in ``order``, history)
    for user in eligible:
        lo, hi = starts[user], starts[user + 1]
        for pos in range(hi - config.targets_per_user, hi):
            cases.append((int(user), pos, items[lo:pos].astype(np.int64)))
    titles = _titles(split)
    reranker = LMReranker(_NoLM(), rerank)
    hits: list[InstructionExample] = []
    inserted: list[InstructionExample] = []
    chunk = 512
    for row, (u, pos, history) in enumerate(cases):
        if row % chunk == 0:  # score in chunks: all cases at once would be cases x catalogue floats
            scores = scorer.score_histories([h for _, _, h in cases[row : row + chunk]])
        target = int(items[pos])
        s = scores[row % chunk]
        s[history] = -np.inf
        later = items[pos + 1 : starts[u + 1]]
        s[later] = -np.inf  # the user's later held-out events are not negatives
        if not np.isfinite(s[target]):
            s[target] = np.nanmin(s[np.isfinite(s)])
        top = np.argsort(-s, kind="stable")[:n]
        hit = bool(np.any(top == target))
        if not hit:
            top = top[: n - 1]
            top = np.insert(top, int(rng.integers(0, len(top) + 1)), target)
        letter = int(np.flatnonzero(top == target)[0])
        vals = values[starts[u] : pos]
        own = history
        if config.liked_min_value is not None:
            liked = history[np.nan_to_num(vals, nan=-np.inf) >= config.liked_min_value]
            own = liked if len(liked) else history
        messages = reranker.listwise_prompt([titles[i] for i in own], [titles[i] for i in top])
        (hits if hit else inserted).append(
            InstructionExample(
                messages=tuple(messages),
                target=LETTERS[letter],
                task="letters",
                template="letters-hit" if hit else "letters-inserted",
                user_id=str(train.user_vocab.ids[u]),
                item_id=str(train.item_vocab.ids[target]),
                timestamp=int(times[pos]),
                label=float(letter),
            )
        )
    share = config.inserted_share
    n_inserted = len(inserted) if share >= 1.0 else min(len(inserted), int(len(hits) * share / (1.0 - share)))
    picked = [inserted[i] for i in np.sort(rng.choice(len(inserted), n_inserted, replace=False))]
    out = hits + picked
    if config.max_examples is not None and len(out) > config.max_examples:
        out = [out[i] for i in np.sort(rng.choice(len(out), config.max_examples, replace=False))]
    out = [out[i] for i in rng.permutation(len(out))]
    log.info("letter examples: %d (%d natural hits) from %d users", len(out), len(hits), len(eligible))
    return out


def letter_losses(
    train: Sequence[InstructionExample],
    valid: Sequence[InstructionExample],
    candidates: int,
    lm: LanguageModel | None = None,
) -> dict[str, float]:
    """Cross-entropy (nats per example) of the validation examples' target letters, beside what it must beat.

    A letter adapter that has learnt nothing but *where* the retriever tends to be right scores the position
    prior; only a loss below it says the model reads the titles. (The trainer's validation loss averages the letter
    and the end-of-turn token, which halves the letter's loss and hides that comparison.)

    Returns:
        ``uniform``: ``ln(candidates)``; ``position_prior``: the target positions' frequencies in ``train``
        (add-one smoothed) scored on ``valid``; with ``lm``: ``model``, the letter's next-token log-probability
        (one pass per example, as :meth:`LMReranker.score` with ``method="letters"`` ranks), and ``model_letters``,
        the same renormalised over the shown letters.

    Raises:
        ConfigError: ``valid`` is empty, or an example's label is not a position below ``candidates``.
    """
    if not valid:
        raise ConfigError("letter_losses needs at least one validation example")
    positions = []
    for row, ex in enumerate([*train, *valid]):
        if ex.label is None or not 0 <= ex.label < candidates:
            raise ConfigError(
                f"example {row} has label {ex.label!r}, not a position below {candidates}",
                field="label",
                fix="pass letter examples built with the same number of candidates",
            )
        positions.append(int(ex.label))
    counts = np.bincount(positions[: len(train)], minlength=candidates) + 1.0
    prior = np.log(counts / counts.sum())
    valid_pos = np.asarray(positions[len(train) :])
    out = {"uniform": float(np.log(candidates)), "position_prior": float(-prior[valid_pos].mean())}
    if lm is not None:
        logp = np.stack([letter_logprobs(lm, list(ex.messages), candidates) for ex in valid])
        picked = logp[np.arange(len(valid)), valid_pos]
        out["model"] = float(-picked.mean())
        out["model_letters"] = float(-(picked - np.logaddexp.reduce(logp, axis=1)).mean())
    return out
