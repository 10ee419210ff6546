"""The ``llmrec`` Typer app, its consoles, and what every command shares: friendly errors, logging, options."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from llmrec.errors import ConfigError, LlmrecError

app = typer.Typer(
    name="llmrec",
    help="Language models in recommendation, end to end. Start with `llmrec demo`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODELS = "popular,itemknn,ease,als,bpr"
ADAPTER_HELP = "A tuned adapter for the local language model: a name from `llmrec tune list`, or a folder."
F = TypeVar("F", bound=Callable[..., Any])
DatasetOpt = Annotated[str, typer.Option(help="movielens-small, goodbooks-10k, or a dataset ingested into the store.")]
DbOpt = Annotated[str | None, typer.Option(help="Store URL for ingested datasets (default: LLMREC_DB_URL).")]


def _friendly_errors(fn: F) -> F:
    """Turn an LlmrecError into a one-paragraph message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LlmrecError as exc:
            message = escape(f"{type(exc).__name__}: {exc}")
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    """Language models in recommendation, end to end."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from llmrec.privacy.logs import install_log_scrubbing

    install_log_scrubbing()  # no log line carries an e-mail address, a phone or card number, an address...


def _parse_map(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise ConfigError(f"--map takes FIELD=COLUMN (e.g. --map user_id=userId), got {pair!r}")
        out[field.strip()] = column.strip()
    return out
