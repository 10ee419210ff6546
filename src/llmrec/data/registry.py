"""Datasets by name: the bundled MovieLens, datasets under ``LLMREC_DATA_DIR``, and anything in the store."""

from __future__ import annotations

from collections.abc import Callable

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "load_named"]


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


def load_named(name: str, db_url: str | None = None) -> Dataset:
    """Load a dataset by name: a built-in one, else one ingested into the store at ``db_url``.

    Raises:
        ConfigError: The name is neither built in nor in the store (the message lists what is).

    """
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]()
    from llmrec.data.store import Store

    store = Store(db_url)
    stored = store.datasets()
    if name in stored:
        return store.load(name)
    known = sorted({*BUILTIN_DATASETS, *stored})
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(known)}. Ingest it first with `llmrec ingest`")
