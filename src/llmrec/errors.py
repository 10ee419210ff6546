"""The one error family of llmrec.

Every error a user can cause derives from :class:`LlmrecError`, so callers (CLI, HTTP API) can catch one type
and show its message instead of a traceback. Data errors name the file, line, field and a fix.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ArtifactError",
    "CapacityError",
    "ConfigError",
    "ConflictError",
    "DataProblem",
    "DataValidationError",
    "DownloadError",
    "LeakageError",
    "LlmrecError",
    "NotFittedError",
    "PrivacyError",
    "StoreError",
    "UnknownIdError",
]


class LlmrecError(Exception):
    """Base class of every error llmrec raises on purpose.

    Args:
        message: What is wrong, in the caller's terms.
        field: The setting or argument at fault (``"seeds"``, ``"retriever.config.l2_reg"``), when one is.
        fix: What to do about it; the CLI and the HTTP API render it after the message. Lower layers say it in
            terms of their own arguments, never of a CLI flag or an HTTP route.

    """

    def __init__(self, message: str = "", *args: object, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message, *args)
        self.field = field
        self.fix = fix

    @property
    def reason(self) -> str:
        """The message without the fix."""
        return super().__str__()

    def __str__(self) -> str:
        text = self.reason
        return f"{text}. Fix: {self.fix}" if self.fix and "Fix:" not in text else text


class ConfigError(LlmrecError):
    """A setting or a component configuration is invalid."""


class ArtifactError(ConfigError):
    """A saved model folder is missing, incomplete, corrupt, or written by a newer llmrec.

    The message names the folder (or file) and the fix: usually to save the model again (``llmrec train``).
    """


class CapacityError(ConfigError):
    """A model or job would need more memory than its bound allows (the message says how much, and the fix)."""


class PrivacyError(ConfigError):
    """A privacy option is invalid or cannot be honoured (DP asked of a scorer that cannot train with it, say).

    Raised instead of training without the guarantee: a model fitted without the privacy it was asked for must
    never be reported as private.
    """


class NotFittedError(LlmrecError):
    """A model was asked to score or recommend before ``fit``."""


class UnknownIdError(LlmrecError, KeyError):
    """An external user or item id is not in the vocabulary."""

    @property
    def reason(self) -> str:
        """The message without the fix (unquoted: KeyError would quote it)."""
        return str(self.args[0]) if self.args else ""


class ConflictError(LlmrecError):
    """A record with that id is already stored (create it under another id, or update the stored one)."""


class LeakageError(LlmrecError):
    """Training data would contain interactions from the evaluation period (training on the future)."""


class StoreError(LlmrecError):
    """The database could not be reached, migrated, or written."""


class DownloadError(LlmrecError):
    """A dataset download failed or its checksum did not match the pinned one."""


@dataclass(frozen=True)
class DataProblem:
    """One problem found in input data.

    Attributes:
        source: File name (or a label such as ``"<dataframe>"``) the data came from.
        line: 1-based line number in the file (header is line 1 for CSV), or ``None`` when not row-specific.
        field: Column or field name the problem is in, or ``None`` for whole-file problems.
        message: What is wrong.
        fix: What the user should do about it.

    """

    source: str
    line: int | None
    field: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f", line {self.line}"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}. Fix: {self.fix}"


class DataValidationError(LlmrecError):
    """Input data failed validation; nothing was stored.

    The message lists the first problems (file, line, field, fix); ``problems`` holds all of them.
    """

    max_listed = 10

    def __init__(self, problems: list[DataProblem]) -> None:
        if not problems:
            raise ValueError("DataValidationError needs at least one problem")
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[: self.max_listed])
        more = len(self.problems) - self.max_listed
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(f"{len(self.problems)} problem(s) in input data:\n{shown}{tail}")

    @property
    def first(self) -> DataProblem:
        """The first problem found (files are read top to bottom)."""
        return self.problems[0]
