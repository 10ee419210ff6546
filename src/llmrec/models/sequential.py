"""Shared machinery of the sequential transformers (:mod:`.sasrec`, :mod:`.bert4rec`).

What lives here:

* **Sequences** from a :class:`~llmrec.data.dataset.Dataset`: every user's items in time order (the dataset is
  stably time-sorted, so ties keep input order), the last-item holdout used for early stopping, fixed-length
  left-padded windows for training and the query window used for scoring. All numpy, vectorised.
* **The network**: item + learned positional embeddings, pre-LayerNorm transformer blocks whose attention is
  :func:`torch.nn.functional.scaled_dot_product_attention` over our own ``nn.Linear`` projections (not
  ``nn.TransformerEncoder``), so per-sample-gradient tools such as opacus see only standard layers. The item
  embedding table is also the output layer (shared weights) plus a per-item output bias.
* **Training**: Adam(W) over shuffled windows, full softmax cross-entropy over the catalogue (``loss="ce"``) or
  one uniformly sampled negative per target with binary cross-entropy (``loss="bce"``, the SASRec paper's
  objective); **early stopping** on each training user's last item, held out inside ``fit`` from the training
  data only (never the caller's validation or test targets): HR@10 / NDCG@10 after every epoch, best state kept,
  training stops after ``patience`` epochs without improvement. The returned model is that best checkpoint,
  not refitted: it never trained on the held-out items as targets, but scoring reads each user's *full*
  training sequence, so the held-out item is the most recent input at prediction time. A refit on the full
  sequences for the best epoch count would double the fit time (the 10-minute budget on 2 cores matters more)
  for one extra target per user (0.6% of MovieLens-small's training events).
* **Fixed schedules** (``early_stopping=False``): no item is held out, every epoch trains on every training item
  and the model after ``max_epochs`` epochs is kept (the fair reference for federated training at equal epochs).
* **DP-SGD** (``TrainOptions(dp=DPOptions(...))``): user-level differential privacy with Opacus. Each user is one
  example (their most recent window), users are drawn by Poisson sampling, per-user gradients are clipped and
  noised by Opacus' ``DPOptimizer``, and Opacus' accountant converts the noise into the epsilon spent
  (:attr:`Scorer.privacy`). Per-user gradients come from :mod:`torch.func` (``vmap(grad(...))`` over the whole
  loss) rather than Opacus' per-layer hooks: the item table is used twice (input embedding and output layer)
  and the positional table is indexed directly, and layer hooks see only the first use, so they would clip a
  partial gradient and drop the rest silently. Negatives are drawn uniformly (popularity-weighted negatives would
  use an item statistic that is not private), and there is no early stopping (see :class:`DPOptions`).
* **Federated** (``TrainOptions(federated=FederatedOptions(...))``): FedAvg over user partitions, see
  :mod:`llmrec.privacy.federated`; the local epochs are this module's ordinary epochs.
* **Text init** (``text_init=True``): item embeddings start from the text encoder's embeddings of
  :func:`~llmrec.text.build.item_texts`, projected to ``hidden`` dimensions by PCA (a rotation onto the top
  principal axes, so distances between items are preserved as far as ``hidden`` dimensions allow) and scaled to
  the random init's standard deviation; then everything trains as usual.

torch is imported only inside functions: importing this module (and the registry) stays cheap. The torch
modules are defined by :func:`torch_modules`, built once per process on first use.

Determinism: ``fit`` seeds torch inside :func:`torch.random.fork_rng` (the caller's global RNG state is
restored afterwards), draws batch order, masks and negatives from a ``numpy`` generator seeded with
``TrainOptions.seed``, and turns on ``torch.use_deterministic_algorithms`` for the duration of the fit. The same
seed, data and thread count give bit-identical scores.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError, ConfigError
from llmrec.models.base import PrivacyReport, Scorer, ScorerConfig, TrainOptions
from llmrec.progress import progress

if TYPE_CHECKING:
    import torch

__all__ = [
    "EpochLog",
    "SequenceBatch",
    "Sequences",
    "SequentialConfig",
    "SequentialScorer",
    "epoch_status",
    "pca_projection",
    "text_item_vectors",
    "torch_modules",
    "user_sequences",
]

log = logging.getLogger(__name__)

#: Standard deviation of the random embedding and linear-layer init (BERT's 0.02); text init is scaled to it.
INIT_STD = 0.02

#: Cut-off of the early-stopping metrics.
EVAL_K = 10

#: Renyi orders of DP-SGD's RDP accounting: integer orders (fast, exact formulas) plus two fractional ones for
#: small budgets. Opacus' default list has ~100 fractional orders, each a slow series: the noise search took 17 s.
RDP_ORDERS: tuple[float, ...] = (1.5, 1.75, *range(2, 64), 80, 96, 128, 160, 192, 256, 384, 512)


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
class SequentialConfig(ScorerConfig):
    """Configuration shared by the sequential transformers.

    Attributes:
        max_len: Items of history the model reads (the most recent ones); longer histories are cut into
            windows of this length for training.
        hidden: Width of item embeddings and transformer blocks; must be divisible by ``heads``.
        blocks: Number of transformer blocks.
        heads: Attention heads per block.
        dropout: Dropout on embeddings, attention weights, residual branches and the feed-forward layer.
        lr: Adam learning rate.
        weight_decay: Decoupled weight decay (AdamW); 0 = plain Adam.
        batch_size: Training windows per step.
        max_epochs: Upper bound on passes over the training windows.
        patience: Epochs without a better early-stopping NDCG@10 before training stops.
        loss: ``"ce"``: softmax cross-entropy over every catalogue item; ``"bce"``: binary cross-entropy
            against one uniformly sampled negative per target (SASRec paper).
        text_init: Initialise item embeddings from the text encoder (PCA-projected to ``hidden``).
        early_stopping: Hold out each user's last training item and keep the best epoch on it (default);
            ``False`` trains ``max_epochs`` epochs on every item and keeps the last model.

    """

    max_len: int = Field(default=50, ge=2, le=1024)
    hidden: int = Field(default=64, ge=2)
    blocks: int = Field(default=2, ge=1)
    heads: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=64, ge=1)
    max_epochs: int = Field(default=100, ge=1)
    patience: int = Field(default=10, ge=1)
    loss: Literal["ce", "sampled", "bce"] = "sampled"
    negatives: int = Field(default=1024, ge=1)
    text_init: bool = False
    early_stopping: bool = True

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> Self:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


# ---------------------------------------------------------------------------------------------------------
# sequences (numpy)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sequences:
    """Every user's item indices in time order, stored CSR-style.

    Attributes:
        indptr: ``(n_users + 1,)``; user ``u``'s items are ``items[indptr[u]:indptr[u + 1]]``.
        items: Dense item indices, oldest first within each user (int64).

    """

    indptr: np.ndarray
    items: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Number of items per user."""
        return np.diff(self.indptr)

    def of(self, user: int) -> np.ndarray:
        """Items of one user, oldest first."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def split_last(self, min_len: int = 3) -> tuple[Sequences, np.ndarray, np.ndarray]:
        """Hold out the last item of every user with at least ``min_len`` items.

        Returns:
            ``(rest, users, targets)``: the sequences without the held-out items, the users that had one held
            out, and those items.

        """
        lengths = self.lengths
        users = np.flatnonzero(lengths >= min_len)
        last = self.indptr[users + 1] - 1
        keep = np.ones(len(self.items), dtype=bool)
        keep[last] = False
        new_lengths = lengths.copy()
        new_lengths[users] -= 1
        indptr = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int64)
        return Sequences(indptr, self.items[keep]), users, self.items[last]

    def windows(self, ends: np.ndarray, starts: np.ndarray, length: int, pad: int) -> np.ndarray:
        """Left-padded windows: row ``r`` holds ``items[max(starts[r], ends[r] - length + 1) : ends[r] + 1]``.

        ``ends`` and ``starts`` are positions in :attr:`items` (``ends`` inclusive).
        """
        positions = ends[:, None] - length + 1 + np.arange(length)[None, :]
        valid = positions >= starts[:, None]
        return np.where(valid, self.items[np.clip(positions, 0, None)], pad).astype(np.int64)

    def last(self, users: np.ndarray, length: int, pad: int) -> np.ndarray:
        """The last ``length`` items of each of ``users``, left-padded: ``(len(users), length)``."""
        users = np.asarray(users, dtype=np.int64)
        return self.windows(self.indptr[users + 1] - 1, self.indptr[users], length, pad)

    def tiles(self, length: int, stride: int, min_items: int, pad: int) -> np.ndarray:
        """Cover every user's sequence with windows of ``length`` items, the first ending at the last item.

        Successive windows of a user end ``stride`` items earlier (``stride = length - 1`` makes neighbours
        share one item, which SASRec's shifted targets need so that every item but a user's first is a target
        exactly once; ``stride = length`` tiles without overlap). A window is kept only if it holds at least
        ``min_items`` real items. Returns ``(n_windows, length)`` int64, left-padded with ``pad``.
        """
        lengths = self.lengths
        counts = np.where(lengths >= min_items, (lengths - min_items) // stride + 1, 0)
        users = np.repeat(np.arange(len(lengths)), counts)
        if not len(users):
            return np.zeros((0, length), dtype=np.int64)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.arange(len(users)) - first
        ends = self.indptr[users + 1] - 1 - k * stride
        return self.windows(ends, self.indptr[users], length, pad)


def user_sequences(data: Dataset) -> Sequences:
    """Every user's items in time order (a stable sort of the time-sorted interactions by user)."""
    order = np.argsort(data.user_idx, kind="stable")
    counts = np.bincount(data.user_idx, minlength=data.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Sequences(indptr, data.item_idx[order].astype(np.int64))


@dataclass
class SequenceBatch:
    """One training batch: input tokens and, per position, the target item (-1 = no loss there).

    Attributes:
        tokens: ``(B, L)`` int64 token ids (items, padding, mask).
        targets: ``(B, L)`` int64 target item indices, -1 where no prediction is trained.

    """

    tokens: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class EpochLog:
    """What one training epoch did (kept in :attr:`SequentialScorer.history`).

    Attributes:
        epoch: 1-based epoch number.
        loss: Mean training loss.
        hr: Early-stopping HR@10 after the epoch.
        ndcg: Early-stopping NDCG@10 after the epoch.
        seconds: Wall time of the epoch (training + evaluation).

    """

    epoch: int
    loss: float
    hr: float
    ndcg: float
    seconds: float


# ---------------------------------------------------------------------------------------------------------
# text init
# ---------------------------------------------------------------------------------------------------------
def text_item_vectors(data: Dataset, *, threads: int | None = None, show_progress: bool = False) -> np.ndarray:
    """Text-encoder embeddings of every catalogue item, ``(n_items, 384)`` float32, in index order.

    Goes through the process-wide embedding cache (:func:`~llmrec.encode.cache.memory_cache`), shared with the
    content scorer, so tuning several configurations, fitting the validation and the test model, or fitting
    both sequential models embeds the catalogue once per process.
    """
    from llmrec.encode.cache import CachedEncoder, memory_cache
    from llmrec.encode.encoder import TextEncoder, TextEncoderConfig
    from llmrec.text.build import item_texts

    start = time.perf_counter()
    encoder = CachedEncoder(TextEncoder(TextEncoderConfig(threads=threads)), memory_cache())
    vectors = encoder.encode(item_texts(data), show_progress=show_progress)
    log.info(
        "text init: %d item texts (%d embedded, %d cached) in %.1f s",
        data.n_items,
        encoder.last.embedded,
        encoder.last.hits,
        time.perf_counter() - start,
    )
    return np.asarray(vectors, dtype=np.float32)


def pca_projection(vectors: np.ndarray, dim: int, std: float = INIT_STD) -> np.ndarray:
    """Project ``vectors`` onto their top ``dim`` principal axes, scaled to overall standard deviation ``std``.

    Centring and rotating preserve Euclidean distances, so when ``dim`` covers every non-degenerate axis, item
    neighbourhoods are exactly those of the text space; with fewer axes they are the best rank-``dim``
    approximation. One global scale factor keeps the geometry. Axes beyond the data's rank are zero (training
    moves them: their gradient is not zero). Axis signs are fixed (largest-magnitude loading positive), so the
    result is deterministic.

    Returns:
        ``(n, dim)`` float32.

    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    out = np.zeros((len(x), dim), dtype=np.float64)
    take = min(dim, len(vt))
    out[:, :take] = x @ vt[:take].T
    scale = out[:, :take].std()
    if scale > 0:
        out *= std / scale
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# torch modules
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchModules:
    """The torch classes of the sequential models (see :func:`torch_modules`)."""

    Block: type
    SequenceModel: type
    PerUserLoss: type


@cache
def torch_modules() -> TorchModules:
    """Define the torch modules on first use (keeps ``import torch`` out of module import time).

    Returns:
        ``Block`` (one pre-LayerNorm transformer block) and ``SequenceModel`` (embeddings, blocks, output
        layer); both are plain ``nn.Module`` subclasses built from ``nn.Linear``, ``nn.Embedding``,
        ``nn.LayerNorm`` and ``nn.Dropout``.

    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        """Pre-LayerNorm transformer block: self-attention then a GELU feed-forward, each with a residual.

        Attention is ``scaled_dot_product_attention`` on our own query/key/value projections.
        """

        def __init__(self, hidden: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads = heads
            self.attn_dropout = dropout
            self.norm1 = nn.LayerNorm(hidden)
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.norm2 = nn.LayerNorm(hidden)
            self.ff1 = nn.Linear(hidden, 4 * hidden)
            self.ff2 = nn.Linear(4 * hidden, hidden)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """``x``: ``(B, L, H)``; ``mask``: ``(B, 1, L, L)`` bool, True where a query may attend a key."""
            b, length, hidden = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(hidden, dim=-1)
            shape = (b, length, self.heads, hidden // self.heads)
            q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
            )
            x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, length, hidden)))
            return x + self.drop(self.ff2(F.gelu(self.ff1(self.norm2(x)))))

    class SequenceModel(nn.Module):
        """Item sequence -> hidden states -> scores over the catalogue (output layer = item embeddings).

        Token ids: ``0..n_items-1`` items, ``n_items`` padding, ``n_items + 1`` the [MASK] token.

        Args:
            n_items: Catalogue size.
            max_len: Longest input (number of positional embeddings).
            hidden: Width.
            blocks: Transformer blocks.
            heads: Attention heads.
            dropout: Dropout probability.
            causal: Position ``t`` attends only to positions ``<= t`` (SASRec); otherwise bidirectional.
            head: Add BERT4Rec's output transform (Linear, GELU, LayerNorm) before the item dot product.

        """

        def __init__(
            self,
            n_items: int,
            max_len: int,
            hidden: int,
            blocks: int,
            heads: int,
            dropout: float,
            causal: bool,
            head: bool = False,
        ) -> None:
            super().__init__()
            self.n_items = n_items
            self.causal = causal
            self.scale = math.sqrt(hidden)
            self.items = nn.Embedding(n_items + 2, hidden, padding_idx=n_items)
            self.positions = nn.Embedding(max_len, hidden)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(blocks))
            self.norm = nn.LayerNorm(hidden)
            self.head = (
                nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden)) if head else nn.Identity()
            )
            self.bias = nn.Parameter(torch.zeros(n_items))
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Embedding):
                    nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            with torch.no_grad():
                self.items.weight[n_items].zero_()

        @property
        def pad(self) -> int:
            """Padding token id."""
            return self.n_items

        @property
        def mask_token(self) -> int:
            """[MASK] token id."""
            return self.n_items + 1

        def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
            """``(B, 1, L, L)`` bool: keys that are not padding (and, if causal, not later); self always allowed.

            Allowing each position to attend to itself keeps padded query rows from being all-masked (which
            would give NaN); their outputs are never used.
            """
            length = tokens.shape[1]
            allowed = (tokens != self.pad)[:, None, None, :].expand(-1, 1, length, -1)
            if self.causal:
                allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            return allowed | torch.eye(length, dtype=torch.bool, device=tokens.device)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            """Hidden states ``(B, L, H)`` of token ids ``(B, L)`` (left-padded; L <= max_len)."""
            length = tokens.shape[1]
            x = self.items(tokens) * self.scale + self.positions.weight[:length]
            x = self.drop(x)
            mask = self.attention_mask(tokens)
            for block in self.blocks:
                x = block(x, mask)
            return self.norm(x)

        def item_weights(self) -> torch.Tensor:
            """Output embeddings of the catalogue items ``(n_items, H)`` (shared with the input table)."""
            return self.items.weight[: self.n_items]

        def logits(self, states: torch.Tensor) -> torch.Tensor:
            """Scores of every item for hidden states ``(..., H)``: ``(..., n_items)``."""
            return self.head(states) @ self.item_weights().T + self.bias

        def pair_logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            """Scores of given items for hidden states: ``states (N, H)``, ``items (N, m)`` -> ``(N, m)``."""
            out = self.head(states)
            return (self.items(items) * out[:, None, :]).sum(-1) + self.bias[items]

    class PerUserLoss(nn.Module):
        """One user's training loss, written for ``torch.func.vmap``: what DP-SGD differentiates per user.

        ``forward(tokens (L,), targets (L,), negatives (S,), pairs (L,))``: the mean loss over the positions with a
        target (``targets >= 0``). ``kind``: ``"ce"`` (full softmax), ``"sampled"`` (softmax over the target and
        ``negatives`` drawn uniformly, so the log-Q correction is a constant and drops out) or ``"bce"`` (the
        target against ``pairs``). Holds the model as a submodule so ``functional_call`` swaps every parameter.
        """

        def __init__(self, model: nn.Module, kind: str) -> None:
            super().__init__()
            self.model = model
            self.kind = kind

        def forward(
            self, tokens: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, pairs: torch.Tensor
        ) -> torch.Tensor:
            m: Any = self.model
            states = m(tokens[None])[0]
            valid = (targets >= 0).to(states.dtype)
            target = targets.clamp(min=0)
            if self.kind == "ce":
                losses = F.cross_entropy(m.logits(states), target, reduction="none")
            elif self.kind == "sampled":
                out = m.head(states)
                positive = (out * m.items(target)).sum(-1) + m.bias[target]
                negative = out @ m.items(negatives).T + m.bias[negatives]
                negative = negative.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
                logits = torch.cat([positive[:, None], negative], dim=1)
                zeros = torch.zeros(len(target), dtype=torch.long, device=logits.device)
                losses = F.cross_entropy(logits, zeros, reduction="none")
            else:
                pair = m.pair_logits(states, torch.stack([target, pairs], dim=1))
                labels = torch.zeros_like(pair)
                labels[:, 0] = 1.0
                losses = F.binary_cross_entropy_with_logits(pair, labels, reduction="none").mean(-1)
            return (losses * valid).sum() / valid.sum().clamp(min=1.0)

    return TorchModules(Block=Block, SequenceModel=SequenceModel, PerUserLoss=PerUserLoss)


# ---------------------------------------------------------------------------------------------------------
# the scorer base
# ---------------------------------------------------------------------------------------------------------
@contextmanager
def _torch_run(options: TrainOptions) -> Iterator[None]:
    """Seeded, deterministic torch for one fit, with the caller's RNG, threads and flags restored after."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        if options.threads:
            torch.set_num_threads(options.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)


class SequentialScorer(Scorer):
    """Base of the sequential transformers: sequences, training loop, early stopping, scoring.

    Subclasses set :attr:`causal` and :attr:`output_head` and implement :meth:`_train_windows`,
    :meth:`_batch` and :meth:`_queries`.

    Attributes:
        model: The trained ``SequenceModel`` (best early-stopping checkpoint, eval mode).
        history: One :class:`EpochLog` per epoch trained.
        best_epoch: Epoch of the kept checkpoint (1-based).
        stopped_early: Whether training stopped before ``max_epochs``.

    """

    stochastic: ClassVar[bool] = True
    supports_dp: ClassVar[bool] = True
    supports_federated: ClassVar[bool] = True
    memory_bound: ClassVar[str] = (
        "O(I x hidden) item embeddings (plus an I x hidden output head for BERT4Rec) and Adam's two moments of "
        "every parameter during fit; loss='ce' also holds (training positions per step x I) logits (and their "
        "gradient), so large catalogues need loss='sampled' (the default) or 'bce'. Histories: O(N) int64."
    )

    config: SequentialConfig
    causal: ClassVar[bool] = True
    output_head: ClassVar[bool] = False
    batch_size: ClassVar[int] = 256
    min_holdout_len: ClassVar[int] = 3
    """Users need this many training items to have their last one held out for early stopping."""
    negative_power: ClassVar[float] = 0.75
    """Sampled softmax draws negatives with probability proportional to ``(count + 1) ** negative_power``."""
    max_holdout_users: ClassVar[int] = 10_000
    """Early stopping ranks the catalogue for at most this many users (a seeded sample) after every epoch."""

    model: Any
    history: list[EpochLog]
    best_epoch: int
    stopped_early: bool

    # -- subclass hooks --------------------------------------------------------------------------------
    @abstractmethod
    def _train_windows(self, seqs: Sequences, pad: int) -> np.ndarray:
        """Fixed-length item windows ``(n, W)`` covering the training sequences (built once per fit)."""

    @abstractmethod
    def _batch(self, windows: np.ndarray, rng: np.random.Generator, pad: int, mask: int) -> SequenceBatch:
        """Inputs and targets of one training batch from a batch of windows."""

    @abstractmethod
    def _queries(self, seqs: Sequences, users: np.ndarray, pad: int, mask: int) -> np.ndarray:
        """Input tokens ``(len(users), L)`` whose last position predicts each user's next item."""

    @abstractmethod
    def _window_length(self) -> int:
        """Width of one training window (what :meth:`_train_windows` returns per row)."""

    def _user_windows(self, seqs: Sequences, pad: int) -> tuple[np.ndarray, np.ndarray]:
        """One training window per user with 2+ items: their most recent :meth:`_window_length` items.

        DP-SGD's unit: with one example per user, clipping each example's gradient bounds each user's influence.

        Returns:
            ``(users, windows)``: the users and their ``(len(users), W)`` left-padded windows.

        """
        users = np.flatnonzero(seqs.lengths >= 2)
        return users, seqs.last(users, self._window_length(), pad)

    # -- training --------------------------------------------------------------------------------------
    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        with _torch_run(options):
            if options.dp is not None:
                self._train_dp(data, options)
            elif options.federated is not None:
                # The federated round loop lives with the other privacy code; it drives this class's hooks.
                from llmrec.privacy.federated import train_federated

                train_federated(self, data, options)
            else:
                self._train(data, options)

    def _build(self, data: Dataset, options: TrainOptions) -> Any:
        """A freshly initialised model (text-initialised item embeddings when configured)."""
        import torch

        cfg = self.config
        model = torch_modules().SequenceModel(
            data.n_items, cfg.max_len, cfg.hidden, cfg.blocks, cfg.heads, cfg.dropout, self.causal, self.output_head
        )
        if cfg.text_init:
            vectors = text_item_vectors(data, threads=options.threads, show_progress=options.show_progress)
            init = pca_projection(vectors, cfg.hidden)
            with torch.no_grad():
                model.items.weight[: data.n_items] = torch.from_numpy(init)
        return model.to(options.device)

    def _train(self, data: Dataset, options: TrainOptions) -> None:
        import torch

        cfg = self.config
        start = time.perf_counter()
        rng = np.random.default_rng(options.seed)
        n_items = data.n_items
        pad, mask_token = n_items, n_items + 1
        full = user_sequences(data)
        if cfg.early_stopping:
            train_seqs, val_users, val_targets = full.split_last(self.min_holdout_len)
        else:
            train_seqs, val_users, val_targets = full, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if len(val_users) > self.max_holdout_users:
            keep = np.sort(rng.choice(len(val_users), self.max_holdout_users, replace=False))
            val_users, val_targets = val_users[keep], val_targets[keep]
        early = len(val_users) > 0
        if not early and cfg.early_stopping:
            log.warning(
                "%s: no user has %d+ items to hold out; training %d epochs without early stopping",
                self.name,
                self.min_holdout_len,
                cfg.max_epochs,
            )
        windows = self._train_windows(train_seqs, pad)
        model = self._build(data, options)
        device = torch.device(options.device)
        optimizer = self._optimizer(model)
        val_tokens = self._queries(train_seqs, val_users, pad, mask_token)
        log.info(
            "%s: %d training windows of %d, %d early-stopping users, %d items",
            self.name,
            len(windows),
            windows.shape[1] if len(windows) else 0,
            len(val_users),
            n_items,
        )
        # Sampling at least as many negatives as there are items costs more than the exact softmax.
        full_softmax = self._full_softmax(n_items)
        sampler = self._negative_sampler(train_seqs, n_items, device)
        self.history = []
        best: tuple[float, int, dict[str, torch.Tensor] | None] | None = None
        self.stopped_early = False
        with progress(options.show_progress, f"{self.name} epochs", cfg.max_epochs) as advance:
            for epoch in range(1, cfg.max_epochs + 1):
                epoch_start = time.perf_counter()
                total, count = self._train_epoch(model, optimizer, windows, rng, sampler, full_softmax, device)
                hr, ndcg = self._early_stopping_metrics(model, val_tokens, train_seqs, val_users, val_targets, device)
                entry = EpochLog(epoch, total / max(count, 1), hr, ndcg, time.perf_counter() - epoch_start)
                self.history.append(entry)
                log.debug("%s epoch %d: loss %.4f hr@10 %.4f ndcg@10 %.4f", self.name, epoch, entry.loss, hr, ndcg)
                if best is None or ndcg > best[0] or not early:
                    best = (ndcg, epoch, copy.deepcopy(model.state_dict()) if early else None)
                advance(status=epoch_status(entry.loss, entry.ndcg, best[0]))
                if early and epoch - best[1] >= cfg.patience:
                    self.stopped_early = epoch < cfg.max_epochs
                    break
        if best is None:  # max_epochs >= 1 makes this unreachable; keeps type checkers honest
            raise RuntimeError("no epoch was trained")
        if best[2] is not None:
            model.load_state_dict(best[2])
        self._finish(model, data, device, best[1])
        log.info(
            "%s: best epoch %d of %d (early-stopping ndcg@10 %.4f), %.1f s",
            self.name,
            self.best_epoch,
            len(self.history),
            best[0],
            time.perf_counter() - start,
        )

    def _optimizer(self, model: Any) -> Any:
        """A fresh AdamW over the model's parameters (the configured learning rate and weight decay)."""
        import torch

        return torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _full_softmax(self, n_items: int) -> bool:
        """Whether training uses the exact softmax (sampling as many negatives as items costs more than it)."""
        cfg = self.config
        return cfg.loss == "ce" or (cfg.loss == "sampled" and cfg.negatives >= n_items)

    def _train_epoch(
        self,
        model: Any,
        optimizer: Any,
        windows: np.ndarray,
        rng: np.random.Generator,
        sampler: _NegativeSampler,
        full_softmax: bool,
        device: Any,
    ) -> tuple[float, int]:
        """One pass over ``windows`` in a random order; returns (summed loss, trained positions).

        The unit of local training in federated rounds too (:mod:`llmrec.privacy.federated`).
        """
        import torch

        cfg = self.config
        pad, mask_token = model.pad, model.mask_token
        model.train()
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            batch = self._batch(windows[order[lo : lo + cfg.batch_size]], rng, pad, mask_token)
            rows, cols = np.nonzero(batch.targets >= 0)
            if not len(rows):
                continue
            tokens = torch.from_numpy(batch.tokens).to(device)
            targets = torch.from_numpy(batch.targets[rows, cols]).to(device)
            states = model(tokens)[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)]
            loss = self._loss(model, states, targets, rng, sampler, full_softmax)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        return total, count

    def _negative_sampler(self, seqs: Sequences, n_items: int, device: Any) -> _NegativeSampler:
        """The sampled softmax's negatives, weighted by the items' counts in ``seqs``."""
        return _NegativeSampler(np.bincount(seqs.items, minlength=n_items), self.negative_power, device)

    def _finish(self, model: Any, data: Dataset, device: Any, best_epoch: int) -> None:
        """Keep ``model`` (eval mode) as the fitted network and precompute every user's query tokens."""
        model.eval()
        self.model = model
        self.best_epoch = best_epoch
        self._device = device
        pad, mask_token = data.n_items, data.n_items + 1
        self._query_tokens = self._queries(user_sequences(data), np.arange(data.n_users), pad, mask_token)

    def _train_dp(self, data: Dataset, options: TrainOptions) -> None:
        """DP-SGD: Poisson-sampled users, per-user gradients clipped and noised by Opacus, budget accounted.

        See the module docstring (**DP-SGD**) and :class:`~llmrec.models.base.DPOptions` for what is protected.
        """
        import torch
        from opacus.accountants.utils import create_accountant, get_noise_multiplier
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler
        from torch.func import functional_call, grad_and_value, vmap

        dp = options.dp
        if dp is None:  # _fit only calls this with dp set; keeps type checkers honest
            raise RuntimeError("_train_dp needs options.dp")
        cfg = self.config
        start = time.perf_counter()
        rng = np.random.default_rng(options.seed)
        n_items = data.n_items
        pad, mask_token = n_items, n_items + 1
        users, examples = self._user_windows(user_sequences(data), pad)
        n = len(users)
        if n == 0:
            raise ConfigError(f"{self.name}: no user has 2+ training items, nothing to train on with DP")
        sample_rate = min(1.0, cfg.batch_size / n)
        steps_per_epoch = math.ceil(1.0 / sample_rate)  # an epoch: every user drawn once, in expectation
        steps = cfg.max_epochs * steps_per_epoch
        orders: dict[str, Any] = {"alphas": list(RDP_ORDERS)} if dp.accountant == "rdp" else {}
        if dp.noise_multiplier is not None:
            sigma = dp.noise_multiplier
        else:
            assert dp.epsilon is not None  # the DPOptions validator guarantees one of the two
            sigma = get_noise_multiplier(
                target_epsilon=dp.epsilon,
                target_delta=dp.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=dp.accountant,
                **orders,
            )
        model = self._build(data, options)
        device = torch.device(options.device)
        noise_gen = torch.Generator(device=device).manual_seed(options.seed)
        optimizer = DPOptimizer(
            self._optimizer(model),
            noise_multiplier=sigma,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=max(1, round(sample_rate * n)),
            generator=noise_gen,
        )
        accountant = create_accountant(dp.accountant)
        optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        sampler = UniformWithReplacementSampler(
            num_samples=n,
            sample_rate=sample_rate,
            generator=torch.Generator().manual_seed(options.seed + 1),
            steps=steps_per_epoch,
        )
        per_user = torch_modules().PerUserLoss(model, self._dp_loss_kind(n_items))
        params = dict(per_user.named_parameters())

        def loss_of(p: dict[str, torch.Tensor], *batch: torch.Tensor) -> torch.Tensor:
            return functional_call(per_user, p, batch)

        per_sample = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0, None, 0), randomness="different")
        log.info(
            "%s DP-SGD: %d users, sample rate %.4f, %d steps, noise multiplier %.3f, clip %.2f",
            self.name,
            n,
            sample_rate,
            steps,
            sigma,
            dp.max_grad_norm,
        )
        self.history = []
        bar = progress(options.show_progress, f"{self.name} (DP) epochs", cfg.max_epochs)
        with bar as advance, warnings.catch_warnings():
            # torch.func has no batching rule for CPU flash attention yet and loops over the batch (correct, slower).
            warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
            for epoch in range(1, cfg.max_epochs + 1):
                epoch_start = time.perf_counter()
                model.train()
                total, count = 0.0, 0
                for picked in sampler:
                    if picked:
                        batch = self._batch(examples[np.asarray(picked)], rng, pad, mask_token)
                        tokens = torch.from_numpy(batch.tokens).to(device)
                        targets = torch.from_numpy(batch.targets).to(device)
                        negatives = torch.from_numpy(rng.integers(0, n_items, cfg.negatives)).to(device)
                        pairs = torch.from_numpy(rng.integers(0, n_items, batch.targets.shape)).to(device)
                        detached = {k: v.detach() for k, v in params.items()}
                        grads, losses = per_sample(detached, tokens, targets, negatives, pairs)
                        for name, param in params.items():
                            param.grad_sample = grads[name]
                        total += float(losses.sum())
                        count += len(picked)
                    else:  # Poisson sampling may draw nobody: the step still counts and still adds noise
                        for param in params.values():
                            param.grad_sample = torch.zeros((0, *param.shape), device=device)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                entry = EpochLog(epoch, total / max(count, 1), math.nan, math.nan, time.perf_counter() - epoch_start)
                self.history.append(entry)
                advance(status=epoch_status(entry.loss, entry.ndcg, math.nan))
        epsilon = math.inf if sigma == 0 else float(accountant.get_epsilon(delta=dp.delta, **orders))
        self.stopped_early = False
        self._finish(model, data, device, cfg.max_epochs)
        self.privacy = PrivacyReport(
            mechanism="dp-sgd",
            unit="user",
            epsilon=epsilon,
            delta=dp.delta,
            target_epsilon=dp.epsilon,
            noise_multiplier=float(sigma),
            max_grad_norm=dp.max_grad_norm,
            sample_rate=sample_rate,
            steps=steps,
            epochs=cfg.max_epochs,
            accountant=dp.accountant,
        )
        log.info(
            "%s DP-SGD: epsilon %.3f (delta %g) in %.1f s", self.name, epsilon, dp.delta, time.perf_counter() - start
        )

    def _dp_loss_kind(self, n_items: int) -> str:
        """The per-user loss DP-SGD trains: ``"ce"``, ``"sampled"`` (uniform negatives) or ``"bce"``."""
        return "ce" if self._full_softmax(n_items) else self.config.loss

    def _loss(
        self,
        model: Any,
        states: torch.Tensor,
        targets: torch.Tensor,
        rng: np.random.Generator,
        sampler: _NegativeSampler,
        full_softmax: bool,
    ) -> torch.Tensor:
        """Training loss of hidden states ``(N, H)`` predicting ``targets`` ``(N,)``."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        if full_softmax:
            return F.cross_entropy(model.logits(states), targets)
        if cfg.loss == "sampled":
            negatives = sampler.draw(rng, cfg.negatives)
            log_count = sampler.log_q + math.log(cfg.negatives)  # log of each item's expected number of draws
            out = model.head(states)
            positive = (out * model.items(targets)).sum(-1) + model.bias[targets] - log_count[targets]
            negative = out @ model.items(negatives).T + (model.bias[negatives] - log_count[negatives])
            negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
            logits = torch.cat([positive[:, None], negative], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))
        negatives = torch.from_numpy(rng.integers(0, model.n_items, size=len(targets))).to(targets.device)
        pair = model.pair_logits(states, torch.stack([targets, negatives], dim=1))
        labels = torch.zeros_like(pair)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(pair, labels)

    @staticmethod
    def _early_stopping_metrics(
        model: Any,
        tokens: np.ndarray,
        seqs: Sequences,
        users: np.ndarray,
        targets: np.ndarray,
        device: Any,
    ) -> tuple[float, float]:
        """HR@10 and NDCG@10 of the held-out last items, full ranking, items already in the history excluded.

        Users whose held-out item already occurs in their history are skipped (the evaluation harness drops
        such targets too: with seen items excluded they cannot be recommended).
        """
        import torch

        if not len(users):
            return 0.0, 0.0
        model.eval()
        hits, gains, n = 0.0, 0.0, 0
        with torch.no_grad():
            for lo in range(0, len(users), 512):
                sel = slice(lo, lo + 512)
                scores = model.logits(model(torch.from_numpy(tokens[sel]).to(device))[:, -1]).cpu().numpy()
                rows, cols = [], []
                for r, u in enumerate(users[sel]):
                    history = seqs.of(u)
                    rows.append(np.full(len(history), r))
                    cols.append(history)
                row_idx, col_idx = np.concatenate(rows), np.concatenate(cols)
                target = targets[sel]
                fresh = np.ones(len(target), dtype=bool)
                fresh[row_idx[col_idx == target[row_idx]]] = False
                scores[row_idx, col_idx] = -np.inf
                target_score = scores[np.arange(len(target)), target]
                rank = (scores > target_score[:, None]).sum(axis=1)[fresh]
                hits += float((rank < EVAL_K).sum())
                gains += float((1.0 / np.log2(rank[rank < EVAL_K] + 2.0)).sum())
                n += int(fresh.sum())
        return hits / max(n, 1), gains / max(n, 1)

    # -- saving and loading ------------------------------------------------------------------------------
    WEIGHTS_FILE: ClassVar[str] = "model.safetensors"
    _HISTORY_FIELDS: ClassVar[tuple[str, ...]] = ("epoch", "loss", "hr", "ndcg", "seconds")

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"history_{f}": np.array([getattr(e, f) for e in self.history], dtype=np.float64)
                 for f in self._HISTORY_FIELDS}  # fmt: skip
        state["best_epoch"] = np.array(self.best_epoch, dtype=np.int64)
        state["stopped_early"] = np.array(self.stopped_early, dtype=bool)
        return state

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        columns = [self._array(state, f"history_{f}", (None,)) for f in self._HISTORY_FIELDS]
        self.history = [
            EpochLog(int(epoch), float(loss), float(hr), float(ndcg), float(seconds))
            for epoch, loss, hr, ndcg, seconds in zip(*columns, strict=True)
        ]
        self.best_epoch = int(self._array(state, "best_epoch", ()))
        self.stopped_early = bool(self._array(state, "stopped_early", ()))

    def _save_extra(self, folder: Path) -> None:
        """The network's weights as safetensors (the module is rebuilt from the config on load)."""
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, str(folder / self.WEIGHTS_FILE), metadata={"scorer": self.name})

    def _load_extra(self, folder: Path) -> None:
        """Rebuild the network from the config and the catalogue size, load its weights, recompute the queries."""
        import torch

        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ConfigError(f"loading {self.name} needs safetensors: pip install 'llmrec[text]'") from exc
        path = folder / self.WEIGHTS_FILE
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the folder {folder} is incomplete. Fix: save the model again")
        try:
            weights = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{path} is corrupt ({exc}). Fix: save the model again") from exc
        cfg, data = self.config, self.data
        with torch.random.fork_rng(devices=[]):  # building the module draws its random init: keep the caller's RNG
            model = torch_modules().SequenceModel(
                data.n_items, cfg.max_len, cfg.hidden, cfg.blocks, cfg.heads, cfg.dropout, self.causal, self.output_head
            )
        model.load_state_dict(weights, strict=True)  # RuntimeError on missing keys or wrong shapes
        model.eval()
        self.model = model
        self._device = torch.device("cpu")
        pad, mask_token = data.n_items, data.n_items + 1
        self._query_tokens = self._queries(user_sequences(data), np.arange(data.n_users), pad, mask_token)

    # -- inference -------------------------------------------------------------------------------------
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self._score_tokens(self._query_tokens[user_idx])

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        n_items = self.data.n_items
        indptr = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
        seqs = Sequences(indptr, np.concatenate(histories).astype(np.int64))
        return self._score_tokens(self._queries(seqs, np.arange(len(histories)), n_items, n_items + 1))

    def _score_tokens(self, tokens: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model.logits(self.model(torch.from_numpy(tokens).to(self._device))[:, -1])
        return out.cpu().numpy().astype(np.float64)


class _NegativeSampler:
    """Shared negatives for the sampled softmax, with the log-Q correction that keeps it close to the full one.

    Negatives are drawn with replacement from ``q_i ∝ (count_i + 1) ** power`` (``power = 0``: uniform). Every
    logit, the positive's included, is reduced by ``log(S q_i)``, the log of the item's expected number of draws
    among ``S`` (Bengio & Senécal 2008; Yi et al. 2019), so popular items are not over-penalised for being drawn
    often; accidental hits (a negative equal to the target) are masked.

    Attributes:
        log_q: ``(n_items,)`` float tensor, ``log q_i``.

    """

    def __init__(self, counts: np.ndarray, power: float, device: Any) -> None:
        import torch

        weights = (counts.astype(np.float64) + 1.0) ** power
        prob = weights / weights.sum()
        self._cumulative = np.cumsum(prob)
        self.log_q = torch.from_numpy(np.log(prob)).float().to(device)
        self._device = device

    def draw(self, rng: np.random.Generator, size: int) -> torch.Tensor:
        """``size`` negative item indices (with replacement)."""
        import torch

        idx = np.searchsorted(self._cumulative, rng.random(size), side="right")
        return torch.from_numpy(np.minimum(idx, len(self._cumulative) - 1)).to(self._device)


def epoch_status(loss: float, ndcg: float, best: float) -> str:
    """The status an epochs bar shows after one epoch: its loss and early-stopping NDCG@10, and the best so far.

    Shared by every torch scorer with an epochs bar (the sequential ones, ``tiger``), so their bars read alike.
    """
    return f"loss {loss:.4f} ndcg@10 {ndcg:.4f} (best {best:.4f})"
