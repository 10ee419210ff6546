"""Rerank with the text encoder: how close each candidate reads to what the user watched last.

The bidirectional (BERT-like) language model of the discriminative path as a reranker
(``RerankConfig(method="encoder")``). Every catalogue item is embedded from its text (title, genres, tags) by the
packaged MiniLM, centred on the catalogue mean and normalised, exactly as the ``content`` scorer does (through the
same embedding cache, so the catalogue is embedded once). A user is the *recency-weighted* mean of the vectors of
their history, each interaction weighing ``0.5 ** (k / half_life)`` where ``k`` counts the later interactions;
a candidate's score is its cosine with that vector.

Why this signal: collaborative retrievers such as EASE ignore order, and SASRec reads item ids only, so neither
knows that the film a user just watched *reads like* the one they will watch next. With ``half_life=1`` (the last
item weighs half the user vector) the blend with the retriever beat both EASE and SASRec alone on MovieLens
leave-last-out in a scratch check; ``benchmarks/generative.py --methods encoder`` measures it with the harness.
With a longer half-life (3) the gain shrank and became noise.

The reranker reads the user's *whole* recent history (every interaction, in time order), not the liked-only
history the causal LM's prompt shows: the order of what was watched is the signal, whatever the rating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from llmrec.data.dataset import Dataset
    from llmrec.llm.rerank import RerankConfig
    from llmrec.models.base import TrainOptions
    from llmrec.models.content import Content

__all__ = ["EncoderReranker"]


class EncoderReranker:
    """Scores candidates by text similarity to the user's recency-weighted history (see the module docstring).

    Args:
        data: The fitted data; its catalogue is embedded (once per process, through the embedding cache).
        config: The rerank settings (``half_life`` is read; the prompt settings do not apply).
        options: Threads of the encoder.

    Example:
        >>> reranker = EncoderReranker(data, RerankConfig(method="encoder"))  # doctest: +SKIP
        >>> reranker.score(np.array([10, 42]), np.array([7, 99, 3]))  # doctest: +SKIP
        array([ 0.12, -0.03,  0.31])
    """

    def __init__(self, data: Dataset, config: RerankConfig, options: TrainOptions | None = None) -> None:
        from llmrec.models.content import Content

        self.config = config
        self.content: Content = Content(half_life=config.half_life).fit(data, options)

    @property
    def n_items(self) -> int:
        """Items in the embedded catalogue."""
        return int(self.content.item_vectors.shape[0])

    def score(self, history: Sequence[int] | np.ndarray, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        """Cosine of each candidate with the user's recency-weighted history vector (higher = closer).

        Args:
            history: The user's items (dense indices), oldest first; empty scores every candidate 0.
            candidates: Candidate items (dense indices).

        Returns:
            ``(len(candidates),)`` float64 scores.

        Raises:
            ConfigError: An index is outside the catalogue.
        """
        cand = np.asarray(candidates, dtype=np.int64).ravel()
        hist = np.asarray(history, dtype=np.int64).ravel()
        for name, idx in (("candidates", cand), ("history", hist)):
            if len(idx) and (idx.min() < 0 or idx.max() >= self.n_items):
                raise ConfigError(
                    f"{name} holds an item index outside the catalogue of {self.n_items} items",
                    field=name,
                    fix="map external ids with data.item_vocab.index first",
                )
        if not len(cand):
            return np.zeros(0)
        if not len(hist):
            return np.zeros(len(cand))
        return np.asarray(self.content.score_histories([hist])[0, cand], dtype=np.float64)
