"""Progress of long work: the one progress bar of the library.

Embedding a catalogue, fine-tuning, downloads and batch jobs report through :func:`progress`: a context manager
that yields ``advance(n=1, status=None)``. It draws a rich bar on stderr (description, bar, done/total or bytes,
time left, and an optional status such as the running loss) when ``show`` is true, and costs nothing otherwise,
so library code calls it unconditionally and the caller (the CLI, ``TrainOptions.show_progress``) decides.
Work with several parts shown at once (a store ingest: items, users, interactions) opens a
:func:`progress_group` and adds one bar per part.

Evaluations report to their caller instead of drawing: they take an ``on_progress`` :class:`ProgressCallback`,
called as ``on_progress(done, total, message)``, and the caller draws a bar, prints or logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal, Protocol

__all__ = ["AddBar", "Advance", "ProgressCallback", "progress", "progress_group"]


class Advance(Protocol):
    """Advance a bar by ``n`` steps (items or bytes), optionally replacing its status text."""

    def __call__(self, n: float = 1, /, status: str | None = None) -> None:
        """Advance by ``n``; show ``status`` after the bar when given."""
        ...


class AddBar(Protocol):
    """Add a bar to a :func:`progress_group`; returns the :class:`Advance` of the new bar."""

    def __call__(self, description: str, total: float | None, *, completed: float = 0) -> Advance:
        """A bar of ``total`` steps (``None``: unknown), ``completed`` of them already done."""
        ...


class ProgressCallback(Protocol):
    """The ``on_progress`` of long evaluations: how far they got, and what they do now.

    Called as ``on_progress(done, total, message)``: ``done`` steps of ``total`` are finished (``total`` is
    ``None`` when not known in advance) and ``message`` says, in a few words, what the work is doing now.
    :func:`llmrec.eval.runner.evaluate_models` and :func:`~llmrec.eval.runner.evaluate_pipeline` call it before
    each fit or tuning trial ("ease: tuning {'l2_reg': 50.0}"); :func:`llmrec.eval.crs.evaluate_ranker` after each
    sample scored ("excluded: 12/340 samples").
    """

    def __call__(self, done: int, total: int | None, message: str, /) -> None:
        """``done`` of ``total`` steps are finished; ``message`` says what happens now."""
        ...


def _nothing(n: float = 1, /, status: str | None = None) -> None:
    return None


def _no_bar(description: str, total: float | None, *, completed: float = 0) -> Advance:
    return _nothing


@contextlib.contextmanager
def progress_group(
    show: bool, *, unit: Literal["items", "bytes"] = "items", transient: bool = False
) -> Iterator[AddBar]:
    """Yield an :class:`AddBar` that adds bars, drawn together, to one display; nothing is drawn unless ``show``.

    Args:
        show: Draw the bars (on stderr).
        unit: ``"bytes"`` shows sizes and the transfer speed instead of counts, for every bar.
        transient: Remove the bars when done (for steps inside a larger job).
    """
    if not show:
        yield _no_bar
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns.append(MofNCompleteColumn())
    columns += [TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:

        def add(description: str, total: float | None, *, completed: float = 0) -> Advance:
            task = bar.add_task(description, total=total, completed=int(completed), status="")

            def advance(n: float = 1, /, status: str | None = None) -> None:
                fields: dict[str, Any] = {} if status is None else {"status": status}
                bar.update(task, advance=n, **fields)

            return advance

        yield add


@contextlib.contextmanager
def progress(
    show: bool,
    description: str,
    total: float | None,
    *,
    unit: Literal["items", "bytes"] = "items",
    completed: float = 0,
    transient: bool = False,
) -> Iterator[Advance]:
    """Yield an :class:`Advance` for a bar of ``total`` steps (``None``: unknown); nothing is drawn unless ``show``.

    Args:
        show: Draw the bar (on stderr).
        description: What is being done ("embedding 512 new texts").
        total: Steps in all (items, or bytes with ``unit="bytes"``); ``None`` when unknown.
        unit: ``"bytes"`` shows sizes and the transfer speed instead of counts.
        completed: Steps already done (a resumed run).
        transient: Remove the bar when done (for steps inside a larger job).
    """
    with progress_group(show, unit=unit, transient=transient) as add:
        yield add(description, total, completed=completed)
