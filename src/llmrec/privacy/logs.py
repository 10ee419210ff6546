"""A logging filter that scrubs personal data from every record before a handler writes it.

Library code logs ids and counts, not what people typed, but an error message can quote a row, a query or a
chat message, and a server's access log quotes URLs and client addresses (IP addresses are personal data too: they
are logged as ``[IP]``). :class:`PiiLogFilter` renders each record's message (and its
traceback) once, scrubs it with :func:`llmrec.text.pii.scrub`, and hands the handler the scrubbed text.
:func:`install_log_scrubbing` attaches it to the handlers of the root logger and of uvicorn's loggers; the CLI
calls it after setting up logging, and ``llmrec serve`` hands uvicorn :func:`uvicorn_log_config`, its own logging
setup with the filter on every handler.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from llmrec.text.pii import ScrubPolicy, scrub

__all__ = ["PiiLogFilter", "install_log_scrubbing", "uvicorn_log_config"]

_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class PiiLogFilter(logging.Filter):
    """Replaces each record's message (arguments merged in) and traceback text with their scrubbed form.

    Never drops a record. A record already scrubbed by another handler's filter is left as it is.

    Args:
        policy: What to remove (everything the scrubber knows by default).

    """

    def __init__(self, policy: ScrubPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy or ScrubPolicy()

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; always keep it.

        The message and each argument are scrubbed separately, so formatters that read ``record.args`` (uvicorn's
        access log) still work; when personal data spans the message and its arguments, the record is rendered
        once and its arguments dropped.
        """
        if getattr(record, "_pii_scrubbed", False):
            return True
        try:
            if isinstance(record.msg, str):
                record.msg = self._text(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(self._arg(a) for a in record.args)
            elif isinstance(record.args, Mapping):
                record.args = {k: self._arg(v) for k, v in record.args.items()}
            message = record.getMessage()
            clean = self._text(message)
            if clean != message:
                record.msg, record.args = clean, None
        except Exception:  # a malformed record (wrong arguments): the handler reports it as logging does
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._text(record.exc_text)
        if record.stack_info:
            record.stack_info = self._text(record.stack_info)
        setattr(record, "_pii_scrubbed", True)  # noqa: B010 - LogRecord has no such declared attribute
        return True

    def _text(self, text: str) -> str:
        return scrub(text, self.policy).text

    def _arg(self, value: object) -> object:
        """An argument as it may be logged: a string scrubbed, another object kept unless its text held PII.

        Numbers stay numbers (a ``%d`` still formats them); PII in one shows up in the rendered message instead.
        """
        if isinstance(value, str):
            return self._text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)
        clean = self._text(text)
        return value if clean == text else clean


def install_log_scrubbing(loggers: Iterable[logging.Logger | str] | None = None) -> PiiLogFilter:
    """Attach one :class:`PiiLogFilter` to every handler of ``loggers`` (idempotent).

    Args:
        loggers: Loggers (or names) whose handlers get the filter; default: the root logger and uvicorn's.

    Returns:
        The filter (the one already installed on a handler is reused).

    """
    targets = [logging.getLogger()] + [logging.getLogger(n) for n in _SERVER_LOGGERS] if loggers is None else loggers
    chosen: PiiLogFilter | None = None
    for target in targets:
        logger = logging.getLogger(target) if isinstance(target, str) else target
        for handler in logger.handlers:
            found = next((f for f in handler.filters if isinstance(f, PiiLogFilter)), None)
            if found is None:
                found = chosen or PiiLogFilter()
                handler.addFilter(found)
            chosen = chosen or found
    return chosen or PiiLogFilter()


def uvicorn_log_config() -> dict[str, Any]:
    """The default logging setup of uvicorn (``LOGGING_CONFIG``) with :class:`PiiLogFilter` on every handler.

    Pass it as ``uvicorn.run(..., log_config=uvicorn_log_config())``: uvicorn builds its handlers from it, so the
    server's error and access logs are scrubbed from the first line on.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["pii"] = {"()": f"{__name__}.PiiLogFilter"}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "pii"]
    return config
