"""A logging filter that scrubs personal data from every record before a handler writes it.

Library code logs ids and counts, not what people typed, but an error message can quote a row, a query or a
chat message, and a server's access log quotes URLs. :class:`PiiLogFilter` renders each record's message (and its
traceback) once, scrubs it with :func:`llmrec.text.pii.scrub`, and hands the handler the scrubbed text.
:func:`install_log_scrubbing` attaches it to the handlers of the root logger and of uvicorn's loggers; the CLI
calls it after setting up logging, and ``llmrec serve`` again once uvicorn has configured its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from llmrec.text.pii import ScrubPolicy, scrub

__all__ = ["PiiLogFilter", "install_log_scrubbing"]

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
        """Scrub ``record`` in place; always keep it."""
        if getattr(record, "_pii_scrubbed", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as logging does
            return True
        record.msg = scrub(message, self.policy).text
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.policy).text
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.policy).text
        setattr(record, "_pii_scrubbed", True)  # noqa: B010 - LogRecord has no such declared attribute
        return True


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
