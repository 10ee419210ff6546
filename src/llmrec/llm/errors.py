"""Errors of the language-model backends (all in the :class:`~llmrec.errors.LlmrecError` family).

Callers that only care whether "the language model failed" catch :class:`LMError`; the subclasses say why, so
the CLI and the HTTP API can tell a user to start a server, fix a key, or pick a server that can rank.
"""

from __future__ import annotations

from llmrec.errors import LlmrecError

__all__ = ["LMCapabilityError", "LMError", "LMHTTPError", "LMUnavailableError"]


class LMError(LlmrecError):
    """A language-model backend failed to answer."""


class LMUnavailableError(LMError):
    """The model server could not be reached (connection refused, DNS failure, timeout) after retries."""


class LMHTTPError(LMError):
    """The model server answered with an HTTP error status that retrying did not fix.

    Attributes:
        status_code: The HTTP status of the last answer.
    """

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class LMCapabilityError(LMError):
    """The backend cannot do what was asked (e.g. a server that returns no prompt log-probabilities, so no ranking)."""
