"""Errors of the language-model backends (all in the :class:`~llmrec.errors.LlmrecError` family).

Callers that only care whether "the language model failed" catch :class:`LMError`; the subclasses say why, so
the CLI and the HTTP API can tell a user to start a server, fix a key, or pick a server that can rank. The HTTP
API answers :class:`LMUnavailableError` (down, timed out, overloaded) with 503 and ``Retry-After``, and every
other :class:`LMError` (the server answered, but with an error or with something unreadable) with 502.
"""

from __future__ import annotations

from llmrec.errors import LlmrecError

__all__ = ["LMCapabilityError", "LMError", "LMHTTPError", "LMOverloadedError", "LMUnavailableError"]


class LMError(LlmrecError):
    """A language-model backend failed to answer."""


class LMUnavailableError(LMError):
    """The model server could not be reached (connection refused, DNS failure, timeout) after retries.

    Attributes:
        retry_after: Seconds the server asked callers to wait (its ``Retry-After``), when it said.
    """

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, field: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(message, field=field, fix=fix)
        self.retry_after = retry_after


class LMHTTPError(LMError):
    """The model server answered with an HTTP error status that retrying did not fix.

    Attributes:
        status_code: The HTTP status of the last answer.
    """

    def __init__(self, message: str, status_code: int, *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message, field=field, fix=fix)
        self.status_code = status_code


class LMOverloadedError(LMHTTPError, LMUnavailableError):
    """The model server answered 429 or 503 (busy, or down for maintenance) on every attempt.

    Both an :class:`LMHTTPError` (``status_code``) and an :class:`LMUnavailableError` (``retry_after``: the
    server's last ``Retry-After``, when it sent one).
    """

    def __init__(
        self, message: str, status_code: int, *, retry_after: float | None = None, fix: str | None = None
    ) -> None:
        LlmrecError.__init__(self, message, fix=fix)
        self.status_code = status_code
        self.retry_after = retry_after


class LMCapabilityError(LMError):
    """The backend cannot do what was asked (e.g. a server that returns no prompt log-probabilities, so no ranking)."""
