"""Datasets by name: the bundled MovieLens, datasets under ``LLMREC_DATA_DIR``, and anything in the store."""

from __future__ import annotations

import logging
from collections.abc import Callable

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "load_named"]

log = logging.getLogger(__name__)


def _movielens() -> Dataset:
    from llmrec.data.movielens import load_movielens

    return load_movielens()


def _goodbooks() -> Dataset:
    from llmrec.data.goodbooks import load_goodbooks

    return load_goodbooks()


BUILTIN_DATASETS: dict[str, Callable[[], Dataset]] = {
    "movielens-small": _movielens,
    "goodbooks-10k": _goodbooks,
}
"""Datasets llmrec knows how to load without ingesting them first."""


def load_named(name: str, db_url: str | None = None, *, prefer_store: bool = True) -> Dataset:
    """Load a dataset by name: the store's copy at ``db_url`` when it has one, else the built-in one.

    The store wins by default because it is what the server serves: users, items and interactions added through
    the API live there, and the CLI's recommend, chat and train must see the same data (a built-in name that was
    never ingested loads the bundled copy). Evaluation and benchmarks pass ``prefer_store=False``: a built-in
    name then always means the bundled copy, so published figures reproduce whatever the store holds.

    Raises:
        ConfigError: The name is neither built in nor in the store (the message lists what is).

    """
    if not prefer_store and name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]()
    from llmrec.data.store import Store

    store = Store(db_url)
    stored = store.datasets()
    if name in stored:
        log.info("loading %s from the store %s", name, store.display_url)
        return store.load(name)
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]()
    known = sorted({*BUILTIN_DATASETS, *stored})
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(known)}. Ingest it first with `llmrec ingest`")
