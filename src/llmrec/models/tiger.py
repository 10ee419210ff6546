"""TIGER-style trained generative retrieval: items as semantic-id code tuples, a transformer that writes the next one.

The zero-shot :class:`~llmrec.models.genret.GenRet` asks a general language model for item ids and scores NDCG@10
0.0. This scorer trains the generator on the train split instead, as the generative-retrieval papers do (TIGER,
Rajput et al. 2023):

* **Semantic ids.** Every item is a vector [normalised MiniLM text embedding ‖ normalised collaborative vector
  (truncated SVD of the train item-user matrix)], quantised by residual k-means
  (:class:`~llmrec.llm.genret.SemanticIds`, ``levels`` x ``codebook_size`` codes) plus a last level that numbers
  items sharing every code, so ids are collision-free. An item without training interactions (a cold item) is coded
  from its text half alone (nearest centroid on the text dimensions at every level), so it can still be generated.
* **The model.** A small causal transformer reads the last ``history`` items (each the sum of its code-token
  embeddings) and gives a user state; a decoder writes the next item's code tuple level by level,
  ``p(c1|s) p(c2|s,c1) ...``, each level a softmax over the codes that continue the prefix to a catalogue item
  (the trie's children), conditioned on the state and the embedded prefix, with a learned bias per child. It is
  trained with teacher forcing on every position of the train sequences, with early stopping on the last train
  item of every user with three or more; the codes' collaborative half is fitted without those items, so the
  stopping signal is not read off the codes. Items sharing every code are numbered by popularity, so the last
  code means the same in every cell.
* **Scoring.** Because the decoder conditions on a prefix through a vector, the exact log-probability of every
  catalogue item is one batched pass per level over the distinct prefixes of that level (a few thousand for
  MovieLens), so the scorer returns a full score row like every other scorer (masking, top-k, fusion, the
  evaluation harness all work unchanged).
* **Generation.** :meth:`Tiger.generate` is a beam search constrained to the catalogue trie
  (:class:`~llmrec.llm.genret.IdTrie`), skipping seen items: Next-K lists without repeats.
* **Dense head** (``dense``, LIGER: Yang et al. 2024, "Unifying Generative and Dense Retrieval for Sequential
  Recommendation"). ``benchmarks/genret_diagnose.py`` found that tiger's most probable items hold the ones SASRec
  would pick but in a worse order. So the same transformer also scores items densely (user state · item vector +
  bias, SASRec's sampled softmax, the item vectors also read as history input), and the ranking is: the
  ``candidates`` items the code decoder finds most probable, in the dense head's order, then every other item by
  its code log-probability. :meth:`Tiger.log_probs` gives the code decoder's distribution alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec.data.dataset import Dataset
from llmrec.encode.cache import SupportsEncode
from llmrec.encode.encoder import TextEncoderConfig
from llmrec.errors import ConfigError, NotFittedError
from llmrec.models.base import Scorer, ScorerConfig, TrainOptions
from llmrec.progress import progress

__all__ = ["Tiger", "TigerConfig", "assign_codes", "item_vectors"]

log = logging.getLogger(__name__)

NEGATIVE_POWER = 0.75
"""The dense head draws negatives with probability proportional to ``(count + 1) ** NEGATIVE_POWER`` (SASRec's)."""


class TigerConfig(ScorerConfig):
    """Settings of the trained generative retriever.

    Attributes:
        levels: Residual k-means levels of the semantic ids (a disambiguation level is added).
        codebook_size: Codes per level.
        text_weight: Share of the text half in the item vector (0 = collaborative only, 1 = text only).
        svd_dim: Dimensions of the collaborative vector (truncated SVD of the train item-user matrix).
        history: Most recent items the model reads.
        hidden: Width of the transformer.
        blocks: Transformer layers.
        heads: Attention heads.
        dropout: Dropout in the transformer.
        lr: Adam learning rate.
        weight_decay: Decoupled weight decay (AdamW); 0 = plain Adam.
        batch_size: Training sequences per step. The defaults (history 50, one head, batch 64, patience 10) are
            SASRec's; with the previous ones (history 30, two heads, batch 128, patience 8) the training loss
            stalled at 8.1 nats per item, the unigram entropy of MovieLens' items, where these reach 7.0, and seed
            42's test NDCG@10 rose from 0.033 to 0.039; over three seeds the change is within noise
            (``benchmarks/genret_trained.py``).
        max_epochs: Most training epochs.
        patience: Epochs without a better validation NDCG@10 before stopping.
        holdout: Share of the train users with three or more items whose last item is the early-stopping target
            (at most 10,000 users; the rest of each such sequence still trains). All of them by default, as
            SASRec does: with a tenth (61 MovieLens users) the stopping epoch was noise and seeds scored
            NDCG@10 0.039, 0.026 and 0.024.
        beam: Beams of :meth:`Tiger.generate` (at least ``k`` are used).
        trie_softmax: Each level's softmax runs over the codes that continue the prefix to a catalogue item only,
            plus a learned bias per (prefix, code); the item scores are then a distribution over the catalogue.
            Off, the codes of no item take probability mass, unevenly across branches (the previous behaviour,
            kept to load models saved before it).
        ema: Decay of the exponential moving average of the weights, updated every step; validation, early
            stopping and the kept model use the average (0 = the raw weights). The raw weights' validation NDCG@10
            swings by about 0.005 from epoch to epoch, as much as the effects measured, so the stopping epoch was
            picked by noise; the average's curve is smooth (seed 42: test NDCG@10 0.040 over epochs 37-40, where
            the raw weights' read 0.033-0.043).
        dense: LIGER's hybrid (Yang et al. 2024): a dense head on the same transformer scores every item by a dot
            product of the user state with the item's vector (a learned vector per item, also added to the history
            input as SASRec's item table is, plus a projection of its text vector so a cold item has one) and a
            per-item bias, trained with SASRec's sampled softmax beside the code loss. Generation names the
            ``candidates`` most probable items by their codes and the dense head orders them; early stopping
            reads that order. Off: items are ranked by their code log-probability alone (as models saved before
            the head load). Why: ``benchmarks/genret_diagnose.py`` found tiger's lists hold SASRec's items and
            lose their order.
        candidates: Items the code decoder names for the dense head to order (``dense`` only).
        negatives: Negatives of the dense head's sampled softmax (drawn by popularity ** 0.75, log-Q corrected).
        encoder: The text encoder of the item texts (the packaged MiniLM).
    """

    levels: int = Field(default=3, ge=1, le=6)
    codebook_size: int = Field(default=64, ge=2, le=4096)
    text_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    svd_dim: int = Field(default=64, ge=2, le=512)
    history: int = Field(default=50, ge=1, le=200)
    hidden: int = Field(default=64, ge=8, le=1024)
    blocks: int = Field(default=2, ge=1, le=12)
    heads: int = Field(default=1, ge=1, le=16)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=64, ge=1)
    max_epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=10, ge=1)
    holdout: float = Field(default=1.0, ge=0.0, le=1.0)
    beam: int = Field(default=20, ge=1, le=1024)
    trie_softmax: bool = True
    ema: float = Field(default=0.99, ge=0.0, lt=1.0)
    dense: bool = True
    candidates: int = Field(default=50, ge=1)
    negatives: int = Field(default=1024, ge=1)
    encoder: TextEncoderConfig = TextEncoderConfig()


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0)


def item_vectors(
    data: Dataset,
    *,
    text: np.ndarray | None,
    text_weight: float,
    svd_dim: int,
    seed: int,
    interactions: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, int]:
    """Item vectors ``[sqrt(w) * text ‖ sqrt(1 - w) * collaborative]`` and the width of the text half.

    Both halves are row-normalised, so ``text_weight`` sets their share of every squared distance. The text
    half is centred on the catalogue mean first (MiniLM vectors share a large common direction). The
    collaborative half is the item side of a truncated SVD of the binary item-user matrix (``interactions``, a
    user x item matrix, when given: the fit passes its own without the early-stopping targets); items without
    interactions get zeros there.
    """
    import scipy.sparse.linalg as sla

    parts: list[np.ndarray] = []
    text_dim = 0
    if text is not None and text_weight > 0:
        t = np.asarray(text, dtype=np.float64)
        has = np.linalg.norm(t, axis=1) > 0
        if has.any():
            t = t - t[has].mean(axis=0)
            t[~has] = 0.0
        parts.append(math.sqrt(text_weight) * _normalized(t))
        text_dim = t.shape[1]
    if text_weight < 1:
        x = (data.matrix("binary") if interactions is None else interactions).T.tocsr().astype(np.float64)
        k = max(1, min(svd_dim, min(x.shape) - 1))
        rng = np.random.default_rng(seed)
        v0 = rng.standard_normal(min(x.shape))
        u, s, _ = sla.svds(x, k=k, v0=v0)
        parts.append(math.sqrt(1 - text_weight) * _normalized(u * np.sqrt(s)))
    return np.concatenate(parts, axis=1), text_dim


def assign_codes(vectors: np.ndarray, codebooks: Sequence[np.ndarray], dims: slice | None = None) -> np.ndarray:
    """Residual nearest-centroid codes ``(n, levels)`` of ``vectors`` (only the dimensions ``dims`` compared)."""
    residual = np.asarray(vectors, dtype=np.float64).copy()
    out = np.empty((len(residual), len(codebooks)), dtype=np.int64)
    for j, book in enumerate(codebooks):
        b = np.asarray(book, dtype=np.float64)
        r, c = (residual, b) if dims is None else (residual[:, dims], b[:, dims])
        dist = np.einsum("ij,ij->i", r, r)[:, None] - 2 * r @ c.T + np.einsum("ij,ij->i", c, c)[None, :]
        out[:, j] = np.argmin(dist, axis=1)
        residual -= b[out[:, j]]
    return out


def _disambiguate(codes: np.ndarray, popularity: np.ndarray | None = None) -> np.ndarray:
    """``codes`` with a last column numbering the items that share every code.

    Within a shared code tuple the most popular item gets 0, the next 1, ... (ties in item order): the last code
    then means the same thing in every cell ("the most popular of these"), which the decoder can learn, instead of
    an arbitrary number it would have to memorise per cell (a third of MovieLens' interactions fall in shared cells).
    """
    pop = np.zeros(len(codes)) if popularity is None else np.asarray(popularity, dtype=np.float64)
    seen: Counter[tuple[int, ...]] = Counter()
    last = np.empty(len(codes), dtype=np.int64)
    rows = codes.tolist()
    for i in np.lexsort((np.arange(len(codes)), -pop)):
        row = tuple(rows[i])
        last[i] = seen[row]
        seen[row] += 1
    return np.concatenate([codes, last[:, None]], axis=1)


def _prefixes(codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level ``j``: the distinct code prefixes ``codes[:, :j]`` (rows) and each item's prefix number."""
    out = []
    for j in range(codes.shape[1]):
        if j == 0:
            out.append((np.zeros((1, 0), dtype=np.int64), np.zeros(len(codes), dtype=np.int64)))
        else:
            uniq, inv = np.unique(codes[:, :j], axis=0, return_inverse=True)
            out.append((uniq, inv.reshape(-1)))
    return out


def _candidate_scores(dense: np.ndarray) -> np.ndarray:
    """A candidate's hybrid score from its dense score: ``1 + softplus``, in the dense order.

    Above every code log-probability (at most 0); one rule for :meth:`Tiger.score_histories` and
    :meth:`Tiger.generate`, whose scores must agree.
    """
    return 1.0 + np.logaddexp(0.0, dense)


def _copy_state(net: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class _WeightAverage:
    """Exponential moving average of a network's floating-point weights.

    The decay of step ``t`` is ``min(decay, (1 + t) / (10 + t))`` (as TensorFlow's ``ExponentialMovingAverage``
    with ``num_updates``): early on the average follows the weights closely, so a short fit (a few dozen steps) is
    not dragged back towards the initialisation.
    """

    def __init__(self, net: Any, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.state = _copy_state(net)

    def update(self, net: Any) -> None:
        import torch

        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        with torch.no_grad():
            for key, value in net.state_dict().items():
                if value.dtype.is_floating_point:
                    self.state[key].mul_(d).add_(value, alpha=1 - d)


def _make_net(sizes: list[int], config: TigerConfig, n_prefixes: list[int], n_items: int, text_dim: int) -> Any:
    """The torch module: history encoder (causal transformer), the level-by-level code decoder and the dense head."""
    import torch
    from torch import nn

    from llmrec.models.sequential import INIT_STD

    class TigerNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h = config.hidden
            self.sizes = sizes
            self.offsets = [int(o) for o in np.concatenate([[0], np.cumsum(sizes)[:-1]])]
            vocab = int(sum(sizes))
            self.pad = vocab
            self.tok = nn.Embedding(vocab + 1, h, padding_idx=vocab)
            self.pos = nn.Embedding(config.history, h)
            layer = nn.TransformerEncoderLayer(
                h, config.heads, 4 * h, config.dropout, batch_first=True, norm_first=True, activation="gelu"
            )
            self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(h)
            self.drop = nn.Dropout(config.dropout)
            self.dec = nn.Embedding(vocab, h)
            self.level = nn.Embedding(len(sizes), h)
            self.mlp = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))
            self.heads = nn.ModuleList([nn.Linear(h, s) for s in sizes])
            # Per trie node: a bias for each child code (the node's own popularity prior) and, set by the scorer, a
            # mask of the children that exist, so every level's softmax is over real continuations only.
            self.bias = (
                nn.ParameterList([nn.Parameter(torch.zeros(p, s)) for p, s in zip(n_prefixes, sizes, strict=True)])
                if config.trie_softmax
                else None
            )
            self.masks: list[torch.Tensor] | None = None
            # The dense head (config.dense): SASRec's item table (input and output, initialised as SASRec's), a
            # projection of the item text vectors added to the output side, a bias per item.
            self.n_items = n_items
            self.scale = math.sqrt(h)
            self.items = nn.Embedding(n_items + 1, h, padding_idx=n_items) if config.dense else None
            self.text = nn.Linear(text_dim, h) if config.dense and text_dim else None
            self.item_bias = nn.Parameter(torch.zeros(n_items)) if config.dense else None
            # SASRec's initialisation everywhere (truncated normal, std 0.02; zero biases). With torch's defaults
            # (N(0, 1) embeddings, so the summed code tokens dwarfed the item vectors) the hybrid ranking scored
            # NDCG@10 0.041 over three seeds, with this 0.052, the code decoder's own ranking unchanged (0.037;
            # issue 19's notes).
            weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear | nn.Embedding)]
            weights += [layer.self_attn.in_proj_weight for layer in self.encoder.layers]
            for weight in weights:
                nn.init.trunc_normal_(weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            with torch.no_grad():
                self.tok.weight[self.pad].zero_()
                if self.items is not None:
                    self.items.weight[n_items].zero_()

        def states(self, tokens: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            """``(B, T, levels)`` code tokens and ``(B, T)`` items (-1 = none) -> ``(B, T, H)`` causal states."""
            t = tokens.shape[1]
            x = self.tok(tokens).sum(dim=2) + self.pos.weight[-t:][None]
            if self.items is not None:
                x = x + self.items(torch.where(items < 0, self.n_items, items)) * self.scale
            mask = torch.triu(torch.full((t, t), float("-inf"), device=tokens.device), diagonal=1)
            return self.norm(self.encoder(self.drop(x), mask=mask, is_causal=True))

        def level_logp(self, state: torch.Tensor, prefix: torch.Tensor, j: int, ids: torch.Tensor) -> torch.Tensor:
            """Log-probabilities of level ``j``'s codes given states and embedded prefixes (broadcast together).

            ``ids`` numbers the prefixes (as the scorer's per-level prefix table); with ``trie_softmax`` the codes
            that continue no catalogue item get probability 0 and each node's bias is added.
            """
            z = state + prefix + self.level.weight[j]
            logits = self.heads[j](z + self.mlp(z))
            if self.bias is not None:
                assert self.masks is not None
                # An embedding lookup, not bias[ids]: its backward is deterministic on the CPU (index_put's
                # accumulation order is not, and the same seed must give the same scores).
                bias = nn.functional.embedding(ids, self.bias[j])
                logits = (logits + bias).masked_fill(~self.masks[j][ids], float("-inf"))
            return torch.log_softmax(logits, dim=-1)

        def item_vectors(self, text: torch.Tensor | None, items: torch.Tensor | None = None) -> torch.Tensor:
            """The dense head's vectors of ``items`` (all by default): learned vector + projected text vector."""
            assert self.items is not None
            if items is None:
                items = torch.arange(self.n_items)
            out = self.items(items)
            if self.text is not None and text is not None:
                out = out + self.text(text[items])
            return out

    return TigerNet()


class Tiger(Scorer):
    """TIGER-style trained generative retriever (see the module docstring).

    Args:
        config: A :class:`TigerConfig`; or pass its fields as keyword arguments.
        embedder: An encoder object to embed item texts with instead of ``config.encoder`` (tests pass a small one).
    """

    name = "tiger"
    config_class = TigerConfig
    config: TigerConfig
    stochastic: ClassVar[bool] = True
    tuning_grid: ClassVar[dict[str, list[Any]]] = {}
    batch_size: ClassVar[int] = 64
    memory_bound: ClassVar[str] = (
        "I x (levels + 1) int codes, levels x codebook_size x (384 + svd_dim) centroids, a transformer of "
        "O(hidden^2 x blocks + vocab x hidden) weights, with dense 2 x I x hidden item vectors, U x history recent "
        "items, the U x I train matrix's nonzeros; fit holds the I x (384 + svd_dim) item vectors; scoring a batch "
        "of B users holds B x (distinct prefixes of a level) x codebook_size floats and B x I scores"
    )

    def __init__(
        self, config: ScorerConfig | None = None, *, embedder: SupportsEncode | None = None, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        self._embedder = embedder
        self._net: Any = None
        self.codes: np.ndarray | None = None
        self.codebooks: list[np.ndarray] = []
        self.epochs: list[dict[str, float]] = []
        """Per epoch: loss, validation NDCG@10, seconds (filled by fit)."""
        self._text: Any = None  # item text vectors while fitting (the dense head's text side)
        self._dense_items: Any = None  # the dense head's item vectors once fitted

    # -- item codes ------------------------------------------------------------------------------------------
    def _text_vectors(self, data: Dataset, options: TrainOptions) -> np.ndarray | None:
        if self.config.text_weight == 0:
            return None
        from llmrec.text.build import item_texts

        texts = item_texts(data)
        if not any(t.strip() for t in texts):
            return None
        encoder = self._embedder
        if encoder is None:
            from llmrec.encode.cache import CachedEncoder, memory_cache
            from llmrec.encode.encoder import TextEncoder

            enc = self.config.encoder
            if options.threads and enc.threads is None:
                enc = enc.model_copy(update={"threads": options.threads})
            encoder = CachedEncoder(TextEncoder(enc), memory_cache())
        vectors = np.asarray(encoder.encode(texts), dtype=np.float64)
        vectors[[not t.strip() for t in texts]] = 0.0
        return vectors

    def _fit_codes(self, data: Dataset, options: TrainOptions, interactions: sp.csr_matrix | None = None) -> None:
        import torch

        from llmrec.llm.genret import SemanticIds

        c = self.config
        text = self._text_vectors(data, options)
        self._text = None if text is None else torch.from_numpy(text.astype(np.float32))
        x, text_dim = item_vectors(
            data, text=text, text_weight=c.text_weight, svd_dim=c.svd_dim, seed=options.seed, interactions=interactions
        )
        warm = data.item_popularity > 0
        ids = SemanticIds(levels=c.levels, codebook_size=c.codebook_size).fit(x[warm], seed=options.seed)
        self.codebooks = [b.astype(np.float64) for b in ids.codebooks]
        base = np.empty((data.n_items, c.levels), dtype=np.int64)
        base[warm] = ids.codes[:, :-1]
        if (~warm).any():
            dims = slice(0, text_dim) if text_dim else None
            base[~warm] = assign_codes(x[~warm], self.codebooks, dims)
        self.codes = _disambiguate(base, data.item_popularity)

    # -- training --------------------------------------------------------------------------------------------
    def _tokens(self, items: np.ndarray) -> np.ndarray:
        """Code tokens ``(..., levels + 1)`` of item indices (-1 = padding)."""
        codes = self.codes
        assert codes is not None
        offsets = np.asarray(self._net.offsets, dtype=np.int64)
        out = codes[np.maximum(items, 0)] + offsets
        out[items < 0] = self._net.pad
        return out

    def _windows(self, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Training windows: inputs ``(n, T)`` and next-item targets ``(n, T)`` (left padding, -1)."""
        t = self.config.history
        inputs, targets = [], []
        for s in seqs:
            if len(s) < 2:
                continue
            end = len(s)
            while end > 1:
                start = max(0, end - 1 - t)
                x = s[start : end - 1]
                y = s[start + 1 : end]
                pad = t - len(x)
                inputs.append(np.concatenate([np.full(pad, -1), x]))
                targets.append(np.concatenate([np.full(pad, -1), y]))
                end = start + 1 if start > 0 else 1
        if not inputs:
            raise ConfigError("tiger needs at least one user with two or more interactions")
        return np.stack(inputs).astype(np.int64), np.stack(targets).astype(np.int64)

    def _loss(self, inputs: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> Any:
        """Code loss (nats per item, summed over levels) plus, with ``dense``, the dense head's sampled softmax."""
        import torch

        net = self._net
        states = net.states(torch.from_numpy(self._tokens(inputs)), torch.from_numpy(inputs))
        keep = torch.from_numpy(targets >= 0)
        s = states[keep]
        items = targets[targets >= 0]
        tgt = torch.from_numpy(self._tokens(items))
        prefix = torch.zeros_like(s)
        loss = s.new_zeros(())
        for j in range(len(net.sizes)):
            logp = net.level_logp(s, prefix, j, torch.from_numpy(self._prefix_inv[j][items]))
            local = tgt[:, j] - net.offsets[j]
            loss = loss - logp.gather(1, local[:, None]).mean()
            prefix = prefix + net.dec(tgt[:, j])
        if net.items is not None:
            loss = loss + self._dense_loss(s, torch.from_numpy(items), rng)
        return loss

    def _dense_loss(self, states: Any, targets: Any, rng: np.random.Generator) -> Any:
        """SASRec's sampled softmax: shared negatives by popularity, log-Q corrected, accidental hits masked."""
        import torch
        import torch.nn.functional as F

        net = self._net
        negatives = self._sampler.draw(rng, self.config.negatives)
        log_count = self._sampler.log_q + math.log(self.config.negatives)
        positive = (states * net.item_vectors(self._text, targets)).sum(-1) + net.item_bias[targets]
        negative = states @ net.item_vectors(self._text, negatives).T + net.item_bias[negatives]
        positive = positive - log_count[targets]
        negative = (negative - log_count[negatives]).masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))

    def _fit(self, data: Dataset, options: TrainOptions) -> None:
        import torch

        from llmrec.models.sequential import _NegativeSampler, epoch_status, user_sequences

        c = self.config
        # One thread unless told otherwise: on a loaded 2-core machine two torch threads ran this small model
        # about 7x slower than one (measured), and the model is too small to gain from more.
        torch.set_num_threads(options.threads or 1)
        torch.manual_seed(options.seed)
        rng = np.random.default_rng(options.seed)
        seqs = user_sequences(data)
        users = [seqs.items[seqs.indptr[u] : seqs.indptr[u + 1]] for u in range(data.n_users)]
        eligible = np.flatnonzero([len(s) >= 3 for s in users])
        n_val = min(10_000, round(len(eligible) * c.holdout))
        val = rng.choice(eligible, n_val, replace=False) if n_val else np.zeros(0, dtype=np.int64)
        is_val = np.zeros(len(users), dtype=bool)
        is_val[val] = True
        train_seqs = [s[:-1] if is_val[u] else s for u, s in enumerate(users)]
        # The codes' collaborative half must not see the early-stopping targets either: with them the validation
        # NDCG read 0.06 where the test NDCG was 0.034 (text_weight 0.2), and the stopping epoch followed the leak.
        held = sp.csr_matrix(
            (np.ones(len(val)), (val, [int(users[u][-1]) for u in val])), shape=(data.n_users, data.n_items)
        )
        fit_matrix = (data.matrix("binary") - held).maximum(0).tocsr()
        self._fit_codes(data, options, fit_matrix)
        self._sampler = _NegativeSampler(np.asarray(fit_matrix.sum(axis=0)).ravel(), NEGATIVE_POWER, "cpu")
        self._dense_items = None
        self._net = self._new_net(0 if self._text is None else self._text.shape[1])
        self._prepare(data)
        inputs, targets = self._windows(train_seqs)
        opt = torch.optim.AdamW(self._net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        best, best_state, bad = -1.0, None, 0
        average = _WeightAverage(self._net, c.ema) if c.ema > 0 else None
        self.epochs = []
        with progress(options.show_progress, "tiger epochs", c.max_epochs) as advance:
            for epoch in range(c.max_epochs):
                start = time.perf_counter()
                loss = self._train_epoch(opt, average, inputs, targets, rng)
                raw = None
                if average is not None:  # validate (and keep) the average; train on from the raw weights
                    raw = _copy_state(self._net)
                    self._net.load_state_dict(average.state)
                ndcg = self._validate([train_seqs[u] for u in val], [int(users[u][-1]) for u in val]) if n_val else 0.0
                if not n_val or ndcg > best:  # without early stopping: the last epoch's (averaged) weights
                    best_state = _copy_state(self._net)
                if raw is not None:
                    self._net.load_state_dict(raw)
                seconds = time.perf_counter() - start
                self.epochs.append({"epoch": epoch + 1, "loss": loss, "ndcg": ndcg, "seconds": seconds})
                log.debug("tiger epoch %d: loss %.4f ndcg@10 %.4f, %.1f s", epoch + 1, loss, ndcg, seconds)
                advance(status=epoch_status(loss, ndcg, max(best, ndcg)))
                if not n_val:
                    continue
                if ndcg > best:
                    best, bad = ndcg, 0
                else:
                    bad += 1
                    if bad >= c.patience:
                        break
        if best_state is not None:
            self._net.load_state_dict(best_state)
        self._net.eval()
        if self._net.items is not None:
            with torch.no_grad():
                self._dense_items = self._net.item_vectors(self._text)
        self._text = None

    def _train_epoch(
        self, opt: Any, average: _WeightAverage | None, inputs: np.ndarray, targets: np.ndarray, rng: Any
    ) -> float:
        """One pass over the training windows in a random order; returns the mean loss per window."""
        import torch

        c = self.config
        self._net.train()
        order = rng.permutation(len(inputs))
        total = 0.0
        for b in range(0, len(order), c.batch_size):
            idx = order[b : b + c.batch_size]
            loss = self._loss(inputs[idx], targets[idx], rng)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self._net.parameters(), 1.0)
            opt.step()
            if average is not None:
                average.update(self._net)
            total += float(loss.detach()) * len(idx)
        self._net.eval()
        return total / len(order)

    def _validate(self, histories: list[np.ndarray], truth: list[int]) -> float:
        """NDCG@10 of the held-out last items (seen items masked), ranked as :meth:`score` ranks them."""
        scores = self._score_histories(histories)
        for r, h in enumerate(histories):
            scores[r, h] = -np.inf
        target = scores[np.arange(len(truth)), truth]
        rank = (scores > target[:, None]).sum(axis=1)
        return float(np.mean(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)))

    def _new_net(self, text_dim: int) -> Any:
        """An untrained network sized for ``self.codes`` (codes per level, prefixes per level for the biases)."""
        assert self.codes is not None
        sizes = [int(v) + 1 for v in self.codes.max(axis=0)]
        return _make_net(sizes, self.config, [len(u) for u, _ in _prefixes(self.codes)], len(self.codes), text_dim)

    def _prepare(self, data: Dataset) -> None:
        """Per-level distinct prefixes (for exact scoring) and the catalogue trie (for generation)."""
        import torch

        from llmrec.llm.genret import IdTrie

        tokens = self._tokens(np.arange(data.n_items))
        levels = _prefixes(tokens)
        self._prefix_tokens = [u for u, _ in levels]
        self._prefix_inv = [inv for _, inv in levels]
        self._prefix_index = [{tuple(row): i for i, row in enumerate(u.tolist())} for u in self._prefix_tokens]
        masks = []  # the trie softmax's: which codes continue each prefix to a catalogue item
        for j, (uniq, inv) in enumerate(levels):
            mask = np.zeros((len(uniq), self._net.sizes[j]), dtype=bool)
            mask[inv, tokens[:, j] - self._net.offsets[j]] = True
            masks.append(torch.from_numpy(mask))
        self._net.masks = masks
        # The prefixes whose level softmax must be computed: all of them without the trie softmax, otherwise
        # those with two or more children (see _exact).
        self._branching = [
            np.flatnonzero(m.numpy().sum(axis=1) > 1) if self.config.trie_softmax else np.arange(len(m)) for m in masks
        ]
        self._item_tokens = tokens
        self._trie = IdTrie(tokens.tolist(), end_id=int(sum(self._net.sizes)) + 1)
        from llmrec.models.sequential import user_sequences

        seqs = user_sequences(data)
        self._recent = [
            seqs.items[max(seqs.indptr[u], seqs.indptr[u + 1] - self.config.history) : seqs.indptr[u + 1]]
            for u in range(data.n_users)
        ]

    # -- scoring ---------------------------------------------------------------------------------------------
    def _user_states(self, histories: Sequence[np.ndarray]) -> Any:
        import torch

        t = self.config.history
        rows = np.full((len(histories), t), -1, dtype=np.int64)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-t:]
            if len(h):
                rows[r, t - len(h) :] = h
        with torch.no_grad():
            return self._net.states(torch.from_numpy(self._tokens(rows)), torch.from_numpy(rows))[:, -1]

    def _dense(self, states: Any) -> np.ndarray:
        """The dense head's score of every item for each state ``(B, H)`` -> ``(B, n_items)``."""
        import torch

        net = self._net
        with torch.no_grad():
            vectors = self._dense_items if self._dense_items is not None else net.item_vectors(self._text)
            return (states @ vectors.T + net.item_bias).double().numpy()

    def _ranked(self, states: Any, exclude: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of every item: code log-probabilities, or with ``dense`` LIGER's hybrid ranking.

        The hybrid takes each row's ``candidates`` most probable items by code, leaving out ``exclude`` (the items
        the user has), and scores them ``1 + softplus(dense score)``: above every other item, whose score stays its
        code log-probability (at most 0), and in the dense head's order.
        """
        code = self._exact(states)
        if self._net.items is None:
            return code
        masked = code.copy()
        for r, items in enumerate(exclude):
            masked[r, items] = -np.inf
        n = min(self.config.candidates, code.shape[1])
        top = np.argpartition(-masked, n - 1, axis=1)[:, :n]
        rows = np.arange(len(code))[:, None]
        keep = np.isfinite(masked[rows, top])
        dense = self._dense(states)
        code[rows, top] = np.where(keep, _candidate_scores(dense[rows, top]), code[rows, top])
        return code

    def _prefix_vectors(self, j: int) -> Any:
        import torch

        uniq = torch.from_numpy(self._prefix_tokens[j])
        if uniq.shape[1] == 0:
            return torch.zeros(1, self.config.hidden)
        return self._net.dec(uniq).sum(dim=1)

    def _exact(self, states: Any) -> np.ndarray:
        """Log-probability of every item's code tuple for each state ``(B, H)`` -> ``(B, n_items)``.

        With the trie softmax, a prefix with a single continuation gives its code probability 1 whatever the
        state, so only the prefixes with two or more children are computed (on MovieLens 3,036 of 9,653: most
        of the last levels' prefixes hold one item); the scores are the same, about three times faster.
        """
        import torch

        net = self._net
        out = torch.zeros(states.shape[0], len(self._item_tokens), dtype=torch.float64)
        with torch.no_grad():
            for j in range(len(net.sizes)):
                branching = self._branching[j]
                if len(branching) == 0:
                    continue
                ids = torch.from_numpy(branching)
                pv = self._prefix_vectors(j)[ids]
                # Items under a computed prefix, and that prefix's row among the computed ones.
                row = np.full(len(self._prefix_tokens[j]), -1, dtype=np.int64)
                row[branching] = np.arange(len(branching))
                item_row = row[self._prefix_inv[j]]
                items = torch.from_numpy(np.flatnonzero(item_row >= 0))
                rows = torch.from_numpy(item_row[item_row >= 0])
                local = torch.from_numpy(self._item_tokens[items.numpy(), j] - net.offsets[j])
                for b in range(0, states.shape[0], 16):
                    logp = net.level_logp(states[b : b + 16, None, :], pv[None], j, ids)  # (b, prefixes, size)
                    out[b : b + 16, items] += logp[:, rows, local].double()
        return out.numpy()

    def _check(self) -> None:
        if self._net is None or self.codes is None:
            raise NotFittedError("tiger is not fitted: call fit(dataset) first")

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        self._check()
        states = self._user_states([self._recent[int(u)] for u in user_idx])
        return self._ranked(
            states, [self._seen.indices[self._seen.indptr[u] : self._seen.indptr[u + 1]] for u in user_idx]
        )

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        self._check()
        return self._ranked(self._user_states(histories), histories)

    def log_probs(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """The code decoder's log-probability of every catalogue item after each history (dense indices).

        A distribution over the catalogue (with ``trie_softmax``); :meth:`score_histories` ranks by it alone when
        ``dense`` is off and takes its ``candidates`` best items from it when on.
        """
        self._check()
        return self._exact(self._user_states([np.asarray(h, dtype=np.int64) for h in histories]))

    # -- generation ------------------------------------------------------------------------------------------
    def generate(
        self, history: Sequence[int], k: int, exclude: Sequence[int] = (), *, beam: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Next-``k`` items of a history (dense indices) by beam search constrained to the catalogue trie.

        Every path is an existing item's code tuple, so the result holds only catalogue items, each once; items in
        ``exclude`` (and the history itself) are taken out of the trie for this request. Scores are the exact
        sequence log-probabilities; with ``dense`` the beam holds at least ``candidates`` paths and the best
        ``candidates`` of them are ordered by the dense head (scored ``1 + softplus(dense score)``). Either way
        they are the values :meth:`score_histories` gives those items when the beam finds the exact best paths.

        Returns:
            ``(items, scores)`` best first; fewer than ``k`` only when fewer items are left.
        """
        import torch

        self._check()
        hist = np.asarray(list(history), dtype=np.int64)
        exclusion = self._trie.exclude(set(hist.tolist()) | {int(i) for i in exclude})
        dense = self._net.items is not None
        width = max(beam or self.config.beam, k, self.config.candidates if dense else 0)
        state = self._user_states([hist])[0]
        net = self._net
        beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
        with torch.no_grad():
            for j in range(len(net.sizes)):
                pv = torch.stack(
                    [
                        net.dec(torch.tensor(p, dtype=torch.long)).sum(0) if p else torch.zeros_like(state)
                        for p, _ in beams
                    ]
                )
                ids = torch.tensor([self._prefix_index[j][p] for p, _ in beams], dtype=torch.long)
                logp = net.level_logp(state[None], pv, j, ids).double().numpy()
                cands: list[tuple[tuple[int, ...], float]] = []
                for (p, score), row in zip(beams, logp, strict=True):
                    for tok in self._trie.allowed(p, exclusion):
                        cands.append(((*p, tok), score + float(row[tok - net.offsets[j]])))
                cands.sort(key=lambda c: -c[1])
                beams = cands[:width]
        items, scores = [], []
        for path, score in beams:
            item = self._trie.item((*path, self._trie.end_id))
            if item is not None:
                items.append(item)
                scores.append(score)
        out, values = np.asarray(items, dtype=np.int64), np.asarray(scores, dtype=np.float64)
        if dense:
            n = min(self.config.candidates, len(out))
            values[:n] = _candidate_scores(self._dense(state[None])[0, out[:n]])
            order = np.concatenate([np.argsort(-values[:n], kind="stable"), np.arange(n, len(out))])
            out, values = out[order], values[order]
        return out[:k], values[:k]

    # -- saving and loading ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        self._check()
        assert self.codes is not None
        out = {"codes": self.codes.astype(np.int64)}
        if self._dense_items is not None:
            out["dense_items"] = self._dense_items.detach().cpu().numpy()
        out.update({f"codebook_{j}": b for j, b in enumerate(self.codebooks)})
        out.update({f"w:{k}": v.detach().cpu().numpy() for k, v in self._net.state_dict().items()})
        return out

    def _set_state(self, state: Any) -> None:
        import torch

        codes = self._array(state, "codes", (self.data.n_items, self.config.levels + 1))
        self.codes = codes.astype(np.int64)
        self.codebooks = [np.asarray(state[f"codebook_{j}"]) for j in range(self.config.levels)]
        if self.config.trie_softmax and "w:bias.0" not in state:  # saved before the trie softmax existed
            self.config = self.config.model_copy(update={"trie_softmax": False})
        if self.config.dense and "dense_items" not in state:  # saved before the dense head existed
            self.config = self.config.model_copy(update={"dense": False})
        self._net = self._new_net(int(np.asarray(state["w:text.weight"]).shape[1]) if "w:text.weight" in state else 0)
        weights = {k[2:]: torch.from_numpy(np.asarray(state[k])) for k in state if k.startswith("w:")}
        self._net.load_state_dict(weights)
        self._net.eval()
        if self.config.dense:
            self._dense_items = torch.from_numpy(np.asarray(state["dense_items"], dtype=np.float32))
        self._prepare(self.data)
