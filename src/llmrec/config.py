"""Process-wide settings, read from the environment (prefix ``LLMREC_``) or a ``.env`` file.

Only deployment facts live here (where the database is, where data and caches go). Model hyperparameters
live in each component's own pydantic config, never in globals.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_data_dir", "get_settings"]


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

    """

    model_config = SettingsConfigDict(env_prefix="LLMREC_", env_file=".env", extra="ignore")

    db_url: str = Field(default_factory=lambda: f"sqlite:///{Path.home() / '.llmrec' / 'llmrec.db'}")
    data_dir: Path | None = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "llmrec")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings()
