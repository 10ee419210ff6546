"""SASRec (Kang & McAuley, 2018, "Self-Attentive Sequential Recommendation").

A causal transformer reads a user's most recent ``max_len`` items; the hidden state at each position predicts
the next item through the shared item-embedding table. Training uses every user's whole training history,
cut into windows of ``max_len`` inputs (each item but a user's first is a target exactly once per epoch);
scoring reads the last ``max_len`` items of the user's full training sequence and ranks the whole catalogue
by the last position's hidden state. Everything shared with BERT4Rec (network, training loop, early stopping,
text init) is in :mod:`llmrec.models.sequential`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from llmrec.models.base import ScorerConfig
from llmrec.models.sequential import SequenceBatch, Sequences, SequentialConfig, SequentialScorer

__all__ = ["SASRec", "SASRecConfig"]


class SASRecConfig(SequentialConfig):
    """Configuration of :class:`SASRec` (all fields are those of :class:`SequentialConfig`)."""


class SASRec(SequentialScorer):
    """Self-attentive sequential recommendation: causal attention, next-item prediction at every position."""

    name: ClassVar[str] = "sasrec"
    config_class: ClassVar[type[ScorerConfig]] = SASRecConfig
    tuning_grid: ClassVar[dict[str, list]] = {"dropout": [0.2, 0.5], "max_len": [50, 200]}
    causal: ClassVar[bool] = True

    config: SASRecConfig

    def _train_windows(self, seqs: Sequences, pad: int) -> np.ndarray:
        length = self.config.max_len + 1  # max_len inputs plus the shifted-by-one targets
        return seqs.tiles(length, stride=length - 1, min_items=2, pad=pad)

    def _batch(self, windows: np.ndarray, rng: np.random.Generator, pad: int, mask: int) -> SequenceBatch:
        tokens = windows[:, :-1]
        targets = np.where(tokens != pad, windows[:, 1:], -1)
        return SequenceBatch(np.ascontiguousarray(tokens), targets)

    def _queries(self, seqs: Sequences, users: np.ndarray, pad: int, mask: int) -> np.ndarray:
        return seqs.last(users, self.config.max_len, pad)

    def _window_length(self) -> int:
        return self.config.max_len + 1
