"""A rich progress bar for the encode layer's long loops (a no-op unless asked for)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["progress"]


@contextlib.contextmanager
def progress(show: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` for a rich progress bar of ``total`` steps; nothing is drawn when ``show`` is false."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
