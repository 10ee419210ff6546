"""Scorers: the discriminative and collaborative-filtering models behind one shape (see :mod:`.base`).

Look models up by name with :func:`get_scorer`; the classes are exported for typed, direct use.
"""

from llmrec.models.base import Recommendations, Scorer, ScorerConfig, TrainOptions, top_k
from llmrec.models.ease import EASE, EASEConfig
from llmrec.models.itemknn import ItemKNN, ItemKNNConfig
from llmrec.models.mf import ALS, BPR, ALSConfig, BPRConfig
from llmrec.models.popular import Popular, PopularConfig
from llmrec.models.registry import SCORERS, available_scorers, get_scorer, scorer_class, tuning_configs

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "SCORERS",
    "ALSConfig",
    "BPRConfig",
    "EASEConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "Popular",
    "PopularConfig",
    "Recommendations",
    "Scorer",
    "ScorerConfig",
    "TrainOptions",
    "available_scorers",
    "get_scorer",
    "scorer_class",
    "top_k",
    "tuning_configs",
]
