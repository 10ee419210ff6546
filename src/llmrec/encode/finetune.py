"""Contrastive domain fine-tuning of the text encoder on item pairs mined from interactions.

A general-purpose sentence encoder places "Toy Story" near other films whose *descriptions* read alike; a
recommender wants it near films that the *same people* like. This module teaches the encoder that second
notion of similarity: it mines (anchor item, positive item) pairs from interactions, turns both sides into
item text, and trains with sentence-transformers' ``MultipleNegativesRankingLoss`` (InfoNCE with in-batch
negatives: every other item in the batch is a negative), then saves an ordinary sentence-transformers folder
that :class:`~llmrec.encode.encoder.TextEncoder` loads like the packaged model.

Leakage: pairs are mined from the :class:`~llmrec.data.dataset.Dataset` handed in and nothing else. Callers
pass the *training* part of a split (``split.fit_data(stage)``), so the held-out targets never shape the
encoder. The training loop is a plain torch loop over the model's own forward pass: it needs no ``datasets``
package, no hub, no experiment tracker and writes no checkpoints, only the final folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.dataset import Dataset
from llmrec.encode.encoder import TextEncoderConfig, default_model_path
from llmrec.errors import ConfigError
from llmrec.progress import progress

if TYPE_CHECKING:  # models sits above encode: the type only, never a runtime import upwards
    from llmrec.models.base import TrainOptions

__all__ = ["METADATA_FILE", "FinetuneConfig", "build_pairs", "finetune_encoder"]

log = logging.getLogger(__name__)

METADATA_FILE = "llmrec_finetune.json"
"""Name of the JSON file written beside the fine-tuned weights (base model, config, data used)."""

PairSource = Literal["sequential", "co-interaction"]
Weighting = Literal["uniform", "support", "cosine"]


class FinetuneConfig(BaseModel):
    """How to mine item pairs and fine-tune the encoder on them.

    Attributes:
        source: Where pairs come from. ``"co-interaction"`` (default): two items liked by the same users
            (order in time ignored); with ``min_support`` users behind each pair this is the cleaner signal.
            ``"sequential"``: an item and each of the next ``window`` items in the same user's time-ordered
            history (closer to next-item prediction, but mostly backed by one user each, so noisy).
        window: For ``"sequential"``: how many later items in a user's history pair with each item.
        min_value: Only interactions with ``value >= min_value`` count as "liked" (4.0 on a 0.5-5 star
            scale); ``None`` uses every interaction (implicit feedback).
        min_support: A pair must be backed by at least this many distinct users.
        weighting: Sampling preference among candidate pairs. ``"uniform"``: all alike; ``"support"``: by
            the number of users backing the pair; ``"cosine"``: support divided by the geometric mean of the
            two items' popularity, so pairs that are frequent only because both items are blockbusters are
            down-weighted.
        max_per_item: At most this many pairs per item. Together with ``"cosine"`` weighting this keeps the
            few blockbusters, which co-occur with everything, from filling the pair budget; the encoder then
            learns the long tail too, where text matters most.
        max_user_items: Only a user's most recent this-many liked items are mined (bounds the quadratic
            co-interaction cost for very active users).
        max_pairs: Cap on the number of training pairs (the fine-tuning time is linear in it).
        epochs: Passes over the pairs.
        batch_size: Pairs per step; the other ``2 * (batch_size - 1)`` items are each pair's negatives.
        lr: AdamW learning rate.
        warmup_ratio: Share of steps with a linear warm-up, then linear decay to zero.
        weight_decay: AdamW weight decay.
        scale: Inverse temperature of the loss (cosine similarity times ``scale``).
        directions: Which in-batch comparisons the loss ranks the positive against. ``"one-way"``: the anchor
            against every positive (classic InfoNCE); ``"symmetric"``: also each positive against every anchor
            (item pairs have no direction); ``"gte"``: also anchor-anchor and positive-positive similarities in
            one joint softmax (Li et al. 2023), meant to push all items apart. With noisy pairs every variant
            pulls the embeddings towards one shared direction (the mean cosine of random MovieLens items rose
            from 0.43 to 0.8 in our runs, ``"gte"`` included); ``train_layers`` limits that.
        max_grad_norm: Gradient clipping norm.
        train_layers: Train only the top this-many transformer layers (embeddings and lower layers frozen);
            ``None`` trains everything. Freezing keeps more of the pretrained language knowledge from a few
            thousand noisy pairs and saves the backward pass through the frozen part (faster on a CPU).
        seed: Seed of pair sampling, batching and dropout; ``None`` = ``TrainOptions.seed`` (42 without one).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: PairSource = "co-interaction"
    window: int = Field(default=3, ge=1)
    min_value: float | None = 4.0
    min_support: int = Field(default=5, ge=1)
    weighting: Weighting = "cosine"
    max_per_item: int = Field(default=20, ge=1)
    max_user_items: int = Field(default=500, ge=2)
    max_pairs: int = Field(default=3000, ge=1)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=48, ge=2)
    lr: float = Field(default=2e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    scale: float = Field(default=20.0, gt=0)
    directions: Literal["one-way", "symmetric", "gte"] = "symmetric"
    max_grad_norm: float = Field(default=1.0, gt=0)
    train_layers: int | None = Field(default=2, ge=1)
    seed: int | None = None


# -- pairs -------------------------------------------------------------------------------------------------
def _liked(data: Dataset, config: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered (user, item) of the liked interactions, each user's last ``max_user_items`` only."""
    mask = np.ones(len(data), dtype=bool) if config.min_value is None else data.values >= config.min_value
    users, items = data.user_idx[mask].astype(np.int64), data.item_idx[mask].astype(np.int64)
    # Repeated events of one (user, item) count once, at the latest time (data is time-sorted).
    frame = pd.DataFrame({"u": users, "i": items}).drop_duplicates(["u", "i"], keep="last")
    from_end = frame.groupby("u").cumcount(ascending=False).to_numpy()
    frame = frame[from_end < config.max_user_items]
    order = np.argsort(frame["u"].to_numpy(), kind="stable")  # by user, time order kept within a user
    return frame["u"].to_numpy()[order], frame["i"].to_numpy()[order]


def _sequential_candidates(users: np.ndarray, items: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, later) item pairs within ``window`` steps of one user's time-ordered history."""
    anchors, positives, owners = [], [], []
    for step in range(1, window + 1):
        same_user = users[step:] == users[:-step]
        anchors.append(items[:-step][same_user])
        positives.append(items[step:][same_user])
        owners.append(users[step:][same_user])
    a, b, u = np.concatenate(anchors), np.concatenate(positives), np.concatenate(owners)
    return _by_users(a, b, u)


def _by_users(a: np.ndarray, b: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs (as ``lo, hi`` then kept in first-seen orientation) and the distinct users backing them."""
    keep = a != b
    a, b, u = a[keep], b[keep], u[keep]
    frame = pd.DataFrame({"lo": np.minimum(a, b), "hi": np.maximum(a, b), "a": a, "b": b, "u": u})
    grouped = frame.groupby(["lo", "hi"], sort=True)
    first = grouped[["a", "b"]].first()
    support = grouped["u"].nunique()
    pairs = np.stack([first["a"].to_numpy(), first["b"].to_numpy()], axis=1)
    return pairs, support.to_numpy()


def _co_interaction_candidates(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Item pairs liked by the same users, with the number of such users (upper triangle of X^T X)."""
    liked = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items), dtype=np.float32
    )
    liked.data[:] = 1.0
    co = sp.triu(liked.T @ liked, k=1).tocoo()
    pairs = np.stack([co.row.astype(np.int64), co.col.astype(np.int64)], axis=1)
    return pairs, co.data.astype(np.int64)


def build_pairs(data: Dataset, config: FinetuneConfig | None = None) -> list[tuple[int, int]]:
    """Mine (anchor item, positive item) dense-index pairs for contrastive fine-tuning.

    Only the interactions in ``data`` are read, so passing the training part of a split
    (``split.fit_data("test")`` or ``("valid")``) is what keeps the evaluation targets out of the encoder.

    Steps: liked interactions (``min_value``) -> candidate pairs from ``config.source`` with the number of
    distinct users backing each (``min_support`` filters) -> a seeded weighted shuffle (``weighting``;
    Efraimidis-Spirakis keys ``u ** (1 / w)``) -> greedy acceptance while both items have fewer than
    ``max_per_item`` pairs, until ``max_pairs``. Popular items co-occur with everything; the per-item cap
    (and the cosine weighting) is what stops the top few dozen blockbusters from taking most of the budget.

    Args:
        data: The interactions to learn from (a split's training part).
        config: Mining settings (defaults if ``None``).

    Returns:
        Distinct unordered pairs (never ``(i, i)``), each as ``(anchor, positive)``; for ``"sequential"`` the
        anchor is the earlier item. The same data and seed give the same list.

    """
    config = config or FinetuneConfig()
    seed = 42 if config.seed is None else config.seed
    users, items = _liked(data, config)
    if len(items) < 2:
        return []
    if config.source == "sequential":
        pairs, support = _sequential_candidates(users, items, config.window)
    else:
        pairs, support = _co_interaction_candidates(users, items, data.n_users, data.n_items)
    keep = support >= config.min_support
    pairs, support = pairs[keep], support[keep]
    if len(pairs) == 0:
        return []
    if config.weighting == "uniform":
        weight = np.ones(len(pairs))
    elif config.weighting == "support":
        weight = support.astype(np.float64)
    else:
        popularity = np.bincount(items, minlength=data.n_items).astype(np.float64)
        weight = support / np.sqrt(popularity[pairs[:, 0]] * popularity[pairs[:, 1]])
    rng = np.random.default_rng(seed)
    keys = np.log(rng.random(len(pairs))) / weight  # log of u ** (1 / w): same order, no underflow
    order = np.argsort(-keys, kind="stable")
    used = np.zeros(data.n_items, dtype=np.int64)
    chosen: list[tuple[int, int]] = []
    for a, b in pairs[order].tolist():
        if used[a] >= config.max_per_item or used[b] >= config.max_per_item:
            continue
        used[a] += 1
        used[b] += 1
        chosen.append((int(a), int(b)))
        if len(chosen) >= config.max_pairs:
            break
    log.info(
        "mined %d %s pairs from %d candidates (%d liked interactions, %d items involved)",
        len(chosen),
        config.source,
        len(pairs),
        len(items),
        int((used > 0).sum()),
    )
    return chosen


# -- training ----------------------------------------------------------------------------------------------
def _take_batch(pending: list[int], pairs: Sequence[tuple[int, int]], size: int) -> tuple[list[int], list[int]]:
    """The first pairs of ``pending`` (up to ``size``) that share no item, and what is left, order kept.

    A repeated item would be its own in-batch "negative" (a false negative that pushes identical texts
    apart), so a pair whose item is already in the batch waits for a later one.
    """
    batch: list[int] = []
    seen: set[int] = set()
    rest: list[int] = []
    for pos in pending:
        a, b = pairs[pos]
        if len(batch) < size and a not in seen and b not in seen:
            batch.append(pos)
            seen.update((a, b))
        else:
            rest.append(pos)
    return batch, rest


def _batches(
    pairs: Sequence[tuple[int, int]], lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """One epoch of batches (pair positions): length-grouped, duplicate-free, in a seeded random order.

    A batch is padded to its longest text, and on a CPU the cost is linear in padded tokens, so pairs are
    taken in order of text length (jittered by the seed, so groups vary between epochs). Pairs that would
    repeat an item in a batch carry over to the next ones; only the last few batches may be short.
    """
    key = lengths + rng.random(len(lengths)) * np.maximum(1.0, 0.25 * lengths)
    order = np.argsort(key, kind="stable").tolist()
    window = 8 * batch_size  # how far ahead to look for pairs that fit (keeps batches length-grouped)
    batches: list[list[int]] = []
    pending: list[int] = []
    cursor = 0
    while cursor < len(order) or pending:
        take = window - len(pending)
        pending.extend(order[cursor : cursor + take])
        cursor += max(take, 0)
        batch, rest = _take_batch(pending, pairs, batch_size)
        if len(batch) < batch_size and cursor < len(order):
            pending.extend(order[cursor : cursor + batch_size])  # look further ahead before settling
            cursor += batch_size
            continue
        if len(batch) >= 2:  # a single pair has no negatives
            batches.append(batch)
        pending = rest if len(batch) >= 2 else []
    return [batches[i] for i in rng.permutation(len(batches))]


def _trainable_parameters(model: Any, train_layers: int | None) -> list[Any]:
    """Freeze all but the top ``train_layers`` transformer layers (and what follows them); return the rest.

    Layers are found by their ``encoder.layer.<n>.`` parameter names (BERT-style models such as MiniLM).
    """
    params = list(model.named_parameters())
    if train_layers is None:
        return [p for _, p in params]
    layer_of = {}
    for name, _ in params:
        marker = name.find("encoder.layer.")
        if marker >= 0:
            layer_of[name] = int(name[marker + len("encoder.layer.") :].split(".", 1)[0])
    if not layer_of:
        raise ConfigError("train_layers needs a BERT-style encoder (parameters named encoder.layer.<n>.)")
    first = max(layer_of.values()) + 1 - train_layers
    keep = []
    for name, param in params:
        # Embeddings (no layer number) sit below every layer; pooler/head parameters after the layers stay on.
        below = layer_of[name] < first if name in layer_of else "embeddings" in name
        param.requires_grad_(not below)
        if not below:
            keep.append(param)
    return keep


def finetune_encoder(
    data: Dataset,
    base: TextEncoderConfig | None,
    config: FinetuneConfig | None,
    out_dir: Path | str,
    options: TrainOptions | None = None,
) -> TextEncoderConfig:
    """Fine-tune the text encoder so items liked together embed close together; save it to ``out_dir``.

    Pairs come from :func:`build_pairs` on ``data`` (pass a split's training part: nothing else is read),
    item text from :func:`llmrec.text.build.item_texts`. The loss is sentence-transformers'
    ``MultipleNegativesRankingLoss`` (``config.directions`` picks the variant) over batches without repeated
    items. The base model is loaded fresh (the process-wide encoder cache is not touched) from the packaged weights or
    ``base.model_path``, fully offline.

    Args:
        data: Interactions to mine pairs from (a split's training part) and the item table for texts.
        base: The encoder to start from (``None`` = the packaged all-MiniLM-L6-v2 with default settings).
        config: Pair mining and optimisation settings (``None`` = defaults).
        out_dir: Folder to write: a sentence-transformers model (safetensors) plus ``llmrec_finetune.json``.
        options: :class:`~llmrec.models.base.TrainOptions` (seed, torch threads, progress bar).

    Returns:
        ``base`` with ``model_path=str(out_dir)``: hand it to ``TextEncoder`` to embed with the new model.

    Raises:
        ConfigError: Too few pairs to train on (fewer than two), or ``out_dir`` is a non-empty folder
            that is not an earlier fine-tuning output.

    """
    base = base or TextEncoderConfig()
    config = config or FinetuneConfig()
    seed = config.seed if config.seed is not None else (options.seed if options is not None else 42)
    threads = options.threads if options is not None else None
    show_progress = bool(options.show_progress) if options is not None else False
    config = config.model_copy(update={"seed": seed})
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise ConfigError(f"{out} is a non-empty folder that is not a fine-tuned encoder; choose an empty folder")

    pairs = build_pairs(data, config)
    if len(pairs) < 2:
        raise ConfigError(
            f"only {len(pairs)} item pair(s) could be mined from {len(data)} interactions; lower min_value or "
            "min_support, or give more data"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from llmrec.text.build import item_texts

    base_path = base.model_path or str(default_model_path())
    if not Path(base_path).is_dir():
        raise ConfigError(f"text encoder folder {base_path} does not exist; pass a local sentence-transformers folder")
    texts = item_texts(data)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        torch.manual_seed(seed)
        model = SentenceTransformer(base_path, device="cpu")
        model.max_seq_length = base.max_seq_length
        trainable = _trainable_parameters(model, config.train_layers)
        variants: dict[str, tuple[Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"], ...]] = {
            "one-way": ("query_to_doc",),
            "symmetric": ("query_to_doc", "doc_to_query"),
            "gte": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
        }
        directions = variants[config.directions]
        loss_fn = MultipleNegativesRankingLoss(
            model,
            scale=config.scale,
            directions=directions,
            partition_mode="per_direction" if config.directions == "symmetric" else "joint",
        )
        rng = np.random.default_rng(seed)
        lengths = np.array([max(len(texts[a]), len(texts[b])) for a, b in pairs], dtype=np.float64)
        epochs = [_batches(pairs, lengths, config.batch_size, rng) for _ in range(config.epochs)]
        total = sum(len(e) for e in epochs)
        warmup = math.ceil(config.warmup_ratio * total)
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        model.train()
        losses: list[float] = []
        with progress(show_progress, "fine-tune encoder", total) as advance:
            for batches in epochs:
                for batch in batches:
                    anchors = [texts[pairs[p][0]] for p in batch]
                    positives = [texts[pairs[p][1]] for p in batch]
                    features = [model.preprocess(anchors), model.preprocess(positives)]
                    loss = loss_fn(features, None)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    losses.append(float(loss.detach()))
                    advance(1, f"loss {losses[-1]:.3f}")
        model.eval()
        out.mkdir(parents=True, exist_ok=True)
        model.save(str(out), create_model_card=False, safe_serialization=True)
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - started
    first = float(np.mean(losses[: max(1, len(losses) // 10)])) if losses else float("nan")
    last = float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else float("nan")
    metadata = {
        "base_model": "all-MiniLM-L6-v2" if base.model_path is None else base.model_path,
        "base_model_path": base_path,
        "config": config.model_dump(mode="json"),
        "dataset": data.name,
        "n_interactions": len(data),
        "n_pairs": len(pairs),
        "n_items_in_pairs": len({i for pair in pairs for i in pair}),
        "steps": total,
        "loss_first": first,
        "loss_last": last,
        "train_seconds": round(seconds, 2),
        "max_seq_length": base.max_seq_length,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    log.info(
        "fine-tuned encoder on %d pairs in %d steps (%.0f s, loss %.3f -> %.3f): %s",
        len(pairs),
        total,
        seconds,
        first,
        last,
        out,
    )
    return base.model_copy(update={"model_path": str(out)})
