"""Process-wide settings, read from the environment (prefix ``LLMREC_``) or a ``.env`` file.

Only deployment facts live here (where the database is, where data and caches go). Model hyperparameters
live in each component's own pydantic config, never in globals.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "config_from", "default_data_dir", "get_settings"]

C = TypeVar("C", bound=BaseModel)


def default_data_dir() -> Path | None:
    """``../shared/datasets`` relative to the working directory when it exists, else ``None``."""
    candidate = Path.cwd().parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


class Settings(BaseSettings):
    """Deployment settings.

    Attributes:
        db_url: SQLAlchemy URL of the store. SQLite file by default; ``postgresql+psycopg://...`` for PostgreSQL.
        data_dir: Folder holding non-bundled datasets (goodbooks-10k, ReDial, ...).
        cache_dir: Folder for downloads and derived artifacts.
        admin_key: The HTTP API's admin key (``LLMREC_ADMIN_KEY``): it may do everything, including creating the
            per-user keys. Without one, ``llmrec serve`` makes a random key for the run and shows it once.
        max_request_bytes: Largest request body the HTTP API accepts (``LLMREC_MAX_REQUEST_BYTES``); larger ones
            get 413 before they are read.

        adapter_dir: Folder of the named language-model adapters ``llmrec tune`` writes and ``--adapter NAME``
            reads (``LLMREC_ADAPTER_DIR``).
        keep_raw_text: Also store profiles and chat messages as typed, encrypted (``LLMREC_KEEP_RAW_TEXT``); only
            their scrubbed text is stored otherwise (see :mod:`llmrec.privacy`).
        pii_key: Fernet key(s) encrypting that raw text (``LLMREC_PII_KEY``, comma-separated: the first encrypts).

    """

    model_config = SettingsConfigDict(env_prefix="LLMREC_", env_file=".env", extra="ignore")

    db_url: str = Field(default_factory=lambda: f"sqlite:///{Path.home() / '.llmrec' / 'llmrec.db'}")
    data_dir: Path | None = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "llmrec")
    admin_key: SecretStr | None = None
    max_request_bytes: int = Field(default=1_048_576, ge=1)

    adapter_dir: Path = Field(default_factory=lambda: Path.home() / ".llmrec" / "adapters")
    keep_raw_text: bool = False
    pii_key: SecretStr | None = None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings()


def config_from(cls: type[C], config: C | None, kwargs: dict[str, Any]) -> C:
    """A component's config: the given object, or one built from keyword arguments (never both).

    Raises:
        ConfigError: Both were given, or the keyword arguments are invalid (the message names the fields).
    """
    from llmrec.errors import ConfigError

    if config is not None and kwargs:
        raise ConfigError(f"pass either a {cls.__name__} or keyword arguments, not both")
    if config is not None:
        return config
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc
