"""The scorers llmrec knows by name, in one explicit table (no module scanning, no string evaluation).

Adding a scorer means importing its class here and adding one line to :data:`SCORERS`; the contract test in
``tests/models/test_contract.py`` then covers it automatically. Every module imported here keeps its heavy
dependencies (``implicit``, torch, ...) inside ``fit``, so importing the registry stays cheap.
"""

from __future__ import annotations

import difflib
import itertools
from typing import Any

from llmrec.errors import ConfigError
from llmrec.models.base import Scorer
from llmrec.models.bert4rec import BERT4Rec
from llmrec.models.content import Content
from llmrec.models.ease import EASE
from llmrec.models.fusion import Fusion
from llmrec.models.genret import GenRet
from llmrec.models.itemknn import ItemKNN
from llmrec.models.mf import ALS, BPR
from llmrec.models.popular import Popular
from llmrec.models.sasrec import SASRec
from llmrec.models.tiger import Tiger

__all__ = ["SCORERS", "available_scorers", "get_scorer", "scorer_class", "tuning_configs"]

#: Scorer classes by their short name (the ``name`` class attribute, also the model name in reports).
SCORERS: dict[str, type[Scorer]] = {
    "popular": Popular,
    "itemknn": ItemKNN,
    "ease": EASE,
    "als": ALS,
    "bpr": BPR,
    "content": Content,
    "sasrec": SASRec,
    "bert4rec": BERT4Rec,
    "fusion": Fusion,
    "genret": GenRet,
    "tiger": Tiger,
}


def available_scorers() -> list[str]:
    """Names accepted by :func:`get_scorer`, sorted."""
    return sorted(SCORERS)


def scorer_class(name: str) -> type[Scorer]:
    """The scorer class registered as ``name``.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the valid names and the closest match.

    """
    try:
        return SCORERS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), SCORERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown scorer {name!r}; valid names: {', '.join(available_scorers())}.{hint}") from None


def get_scorer(name: str, **config: Any) -> Scorer:
    """A new, unfitted scorer ``name`` configured with ``config`` (fields of its config class).

    Raises:
        ConfigError: Unknown name, or a config field that is unknown or invalid for this scorer.

    """
    return scorer_class(name)(**config)


def tuning_configs(name: str) -> list[dict[str, Any]]:
    """Every combination of the scorer's ``tuning_grid`` (one empty dict when it has nothing to tune).

    The evaluation harness fits one scorer per entry on the training split and keeps the best on validation.
    """
    grid = scorer_class(name).tuning_grid
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
