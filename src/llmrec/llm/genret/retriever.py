"""The generative retriever: a language model names a user's next items, constrained to the catalogue.

:class:`GenerativeRetriever` names every item (:mod:`~llmrec.llm.genret.identifiers`, or
:mod:`~llmrec.llm.genret.semantic` codes), builds the prefix trie (:mod:`~llmrec.llm.genret.trie`) and, per user,
prompts with the recent history and runs the constrained beam search. Validity is not assumed: every generated
sequence is decoded back to text and looked up among the identifiers, and :class:`GenerationStats` keeps the
counts (:attr:`GenerativeRetriever.valid_ratio`), so a broken constraint would show up as a ratio below 1.

The OpenAI-compatible HTTP backend cannot restrict tokens step by step, so generative retrieval needs a local
model (:class:`~llmrec.llm.local.LocalLM`); other backends raise :class:`~llmrec.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.config import config_from
from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, NotFittedError
from llmrec.llm.base import Message
from llmrec.llm.genret.identifiers import IdentifierKind, ItemIdentifiers, title_identifiers
from llmrec.llm.genret.semantic import SemanticIdConfig, SemanticIds
from llmrec.llm.genret.trie import IdTrie, SupportsBeamSearch
from llmrec.llm.prompts import DATA_NOTICE, data_block
from llmrec.models.base import Recommendations, TrainOptions, top_k
from llmrec.text.build import ItemTextConfig, item_texts

if TYPE_CHECKING:
    from llmrec.encode.cache import SupportsEncode

__all__ = ["GenerationStats", "GenerativeRetriever", "GenerativeRetrieverConfig"]


class GenerativeRetrieverConfig(BaseModel):
    """Settings of :class:`GenerativeRetriever`.

    Attributes:
        identifier: ``title`` (zero-shot: the model knows titles) or ``semantic`` (residual k-means codes over
            item text embeddings; useful zero-shot only as far as the history's codes hint at the next one, and
            the form a fine-tuned model learns).
        semantic: Shape of the semantic ids.
        item_text: How item texts are built for the semantic ids' embeddings (``None`` = the default).
        num_beams: Beams of the search; at least ``k`` are used, since each beam yields at most one item.
        history: Most recent items of the user shown in the prompt.
        max_title_chars: Longest title (as identifier and in the prompt).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    identifier: IdentifierKind = "title"
    semantic: SemanticIdConfig = SemanticIdConfig()
    item_text: ItemTextConfig | None = None
    num_beams: int = Field(default=10, ge=1, le=256)
    history: int = Field(default=10, ge=1, le=200)
    max_title_chars: int = Field(default=60, ge=8, le=300)


@dataclass
class GenerationStats:
    """Counts of what the beam search produced, checked by decoding each sequence to text.

    Attributes:
        generated: Finished sequences the search returned.
        valid: Sequences whose decoded text is exactly some catalogue item's identifier (and ended properly).
        excluded: Valid sequences naming an item the request excluded (the trie should make this 0).
    """

    generated: int = 0
    valid: int = 0
    excluded: int = 0

    @property
    def valid_ratio(self) -> float:
        """``valid / generated`` (NaN before anything was generated)."""
        return self.valid / self.generated if self.generated else float("nan")


_SYSTEM = f"You are a recommender system. {DATA_NOTICE}"


class GenerativeRetriever:
    """Next-K recommendation by constrained generation: the model writes item identifiers, best beams first.

    ``recommend`` takes and returns external ids, in the shape of :meth:`llmrec.models.base.Scorer.recommend`;
    scores are the sequence log-probabilities of the identifiers (higher is better). Users unknown to the
    training data, or without history, get the training popularity ranking (scored by the log of each item's
    popularity share), as scorers do.

    Args:
        lm: A model with token-level control (:class:`~llmrec.llm.local.LocalLM`).
        config: Settings; or pass its fields as keyword arguments.
        encoder: Text encoder for the semantic ids (``None`` = the default TextEncoder behind an in-memory cache).
        semantic_ids: Ready semantic ids (e.g. :meth:`SemanticIds.load`) to use instead of fitting new ones.

    Raises:
        ConfigError: ``lm`` cannot constrain generation (the OpenAI HTTP backend), or the config is invalid.
    """

    name = "genret"

    def __init__(
        self,
        lm: Any,
        config: GenerativeRetrieverConfig | None = None,
        *,
        encoder: SupportsEncode | None = None,
        semantic_ids: SemanticIds | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(lm, SupportsBeamSearch):
            raise ConfigError(
                f"generative retrieval needs a local model (LocalLM): {type(lm).__name__} gives no token-level "
                "control over generation, so replies cannot be restricted to catalogue items. Use LocalLM (any "
                "local transformers checkpoint or GGUF), or rank candidates by likelihood with the reranker"
            )
        self.lm = lm
        self.config = config_from(GenerativeRetrieverConfig, config, kwargs)
        self.encoder = encoder
        self._given_semantic = semantic_ids
        self.semantic_ids: SemanticIds | None = None
        self._data: Dataset | None = None
        self._identifiers: ItemIdentifiers | None = None
        self._trie: IdTrie | None = None
        self.stats = GenerationStats()

    def __repr__(self) -> str:
        return f"GenerativeRetriever({self.lm.model_id!r}, identifier={self.config.identifier!r})"

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, data: Dataset, options: TrainOptions | None = None) -> Self:
        """Name every item, build the trie, and keep each user's recent history (from ``data`` only)."""
        options = options or TrainOptions()
        if len(data) == 0:
            raise ConfigError("cannot fit genret on an empty dataset")
        if self.config.identifier == "semantic":
            self.semantic_ids = self._semantic(data, options)
            strings = self.semantic_ids.strings()
        else:
            strings = title_identifiers(data, max_chars=self.config.max_title_chars)
        self._identifiers = ItemIdentifiers.build(self.config.identifier, strings, self.lm)
        self._trie = IdTrie(self._identifiers.token_ids, self._identifiers.end_id)
        self._titles = title_identifiers(data, max_chars=self.config.max_title_chars)
        self._seen = data.matrix("binary")
        popularity = data.item_popularity.astype(np.float64) + 1.0
        self._fallback = np.log(popularity / popularity.sum())
        self._history = self._recent(data)
        self._data = data
        return self

    def _semantic(self, data: Dataset, options: TrainOptions) -> SemanticIds:
        if self._given_semantic is not None:
            if len(self._given_semantic) != data.n_items:
                raise ConfigError(
                    f"the given semantic ids cover {len(self._given_semantic)} items, the dataset has {data.n_items}"
                )
            return self._given_semantic
        encoder = self.encoder
        if encoder is None:
            from llmrec.encode.cache import CachedEncoder, memory_cache
            from llmrec.encode.encoder import TextEncoder

            encoder = self.encoder = CachedEncoder(TextEncoder(), memory_cache())
        texts = item_texts(data, self.config.item_text)
        vectors = encoder.encode(texts, show_progress=options.show_progress)
        return SemanticIds(self.config.semantic).fit(vectors, seed=options.seed)

    def _recent(self, data: Dataset) -> list[list[int]]:
        """Per user index: up to ``history`` most recent distinct items, oldest first (interactions are time-sorted)."""
        recent: list[list[int]] = [[] for _ in range(data.n_users)]
        for u, i in zip(data.user_idx[::-1].tolist(), data.item_idx[::-1].tolist(), strict=True):
            row = recent[u]
            if len(row) < self.config.history and i not in row:
                row.append(i)
        return [row[::-1] for row in recent]

    @property
    def data(self) -> Dataset:
        """The training dataset (raises :class:`NotFittedError` before ``fit``)."""
        if self._data is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._data

    @property
    def identifiers(self) -> ItemIdentifiers:
        """Every item's identifier (raises :class:`NotFittedError` before ``fit``)."""
        if self._identifiers is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._identifiers

    @property
    def trie(self) -> IdTrie:
        """The prefix trie over the identifiers (raises :class:`NotFittedError` before ``fit``)."""
        if self._trie is None:
            raise NotFittedError("genret is not fitted: call fit(dataset) first")
        return self._trie

    # -- inference --------------------------------------------------------------------------------------------

    def prompt(self, user: object) -> list[Message]:
        """The chat messages sent for ``user`` (their recent items inside a ``<history>`` data block)."""
        uidx = int(self.data.user_vocab.index([str(user)])[0])
        return self._prompt(self._history[uidx])

    def _prompt(self, history: Sequence[int]) -> list[Message]:
        if self.config.identifier == "semantic":
            lines = [f"{self.identifiers.strings[i]}: {self._titles[i]}" for i in history]
            example = self.identifiers.strings[history[-1]] if history else self.identifiers.strings[0]
            ask = (
                "Each line is an item this user chose (identifier: title), oldest first. Name the one item they "
                f"will choose next. Reply with its identifier only, written like {example}."
            )
        else:
            lines = [self._titles[i] for i in history]
            ask = "These are the items this user chose, oldest first. Name the one item they will choose next. "
            ask += "Reply with its title only."
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{data_block('history', lines)}\n{ask}"},
        ]

    def generate(self, history: Sequence[int], k: int, exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and their sequence log-probs for a history of item indices (best first).

        Every generated sequence is decoded and looked up, and :attr:`stats` counts the outcome; fewer than ``k``
        items come back only when fewer than ``k`` items are not excluded.
        """
        exclusion = self.trie.exclude(exclude)
        available = self.trie.available(exclusion)
        if available == 0 or k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        beams = min(max(self.config.num_beams, k), available)
        end = self.identifiers.end_id

        def allowed(prefix: list[int]) -> list[int]:
            return self.trie.allowed(prefix, exclusion) or [end]  # a dead beam (already -inf) just ends

        hypotheses = self.lm.beam_search(
            self._prompt(history), allowed, num_beams=beams, max_new_tokens=self.identifiers.max_tokens + 1
        )
        items: list[int] = []
        scores: list[float] = []
        for h in hypotheses:
            self.stats.generated += 1
            item = self.identifiers.index_of(self.lm.decode(h.token_ids)) if h.ended else None
            if item is None:
                continue
            self.stats.valid += 1
            if self.trie.is_excluded(item, exclusion):
                self.stats.excluded += 1
                continue
            if item not in items:
                items.append(item)
                scores.append(h.logprob)
        order = sorted(range(len(items)), key=lambda j: (-scores[j], items[j]))[:k]
        return np.array([items[j] for j in order], dtype=np.int64), np.array([scores[j] for j in order])

    def recommend(
        self,
        users: Sequence[object] | np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        *,
        show_progress: bool = False,
    ) -> Recommendations:
        """Top-``k`` items per user, generated by the model (see the class docstring for unknown users).

        Args:
            users: External user ids.
            k: List length (rows are padded with ``None`` / ``-inf`` when fewer items qualify).
            exclude_seen: Never generate items the user interacted with in the training data.
            show_progress: A progress bar over users.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        data = self.data
        users_arr = np.array([str(u) for u in users], dtype=object)
        uidx = data.user_vocab.index(users_arr, missing="negative")
        idx = np.full((len(users_arr), k), -1, dtype=np.int64)
        vals = np.full((len(users_arr), k), -np.inf, dtype=np.float64)
        from llmrec.progress import progress

        with progress(show_progress, "generating recommendations", len(users_arr)) as advance:
            for row, u in enumerate(uidx.tolist()):
                seen: np.ndarray | list[int] = (
                    self._seen.indices[self._seen.indptr[u] : self._seen.indptr[u + 1]] if u >= 0 else []
                )
                if u < 0 or not self._history[u]:
                    fallback = self._fallback.copy()[None, :]
                    if exclude_seen and len(seen):
                        fallback[0, seen] = -np.inf
                    top_idx, top_vals = top_k(fallback, k)
                    idx[row], vals[row] = top_idx[0], top_vals[0]
                else:
                    got_idx, got_vals = self.generate(self._history[u], k, seen if exclude_seen else ())
                    idx[row, : len(got_idx)], vals[row, : len(got_vals)] = got_idx, got_vals
                advance(1)
        return Recommendations(users_arr, data.item_vocab.ids_of(idx), vals, idx)

    @property
    def valid_ratio(self) -> float:
        """Share of generated sequences that decode to a catalogue item's identifier (NaN before any)."""
        return self.stats.valid_ratio

    def reset_stats(self) -> None:
        """Start counting :attr:`stats` afresh."""
        self.stats = GenerationStats()
