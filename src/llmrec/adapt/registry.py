"""The adapter registry: named adapter folders under one root, so ``--adapter NAME`` works anywhere.

An adapter is a folder written by PEFT's ``save_pretrained`` (``adapter_model.safetensors`` +
``adapter_config.json``; a CoLLM adapter has :data:`~llmrec.llm.collm.COLLM_CONFIG` and its files instead of, or
beside, PEFT's) plus :data:`METADATA_FILE`, a small JSON of how it was trained (kind, base model,
config, data, training cutoff, losses). The root is ``Settings.adapter_dir`` (``~/.llmrec/adapters``, or
``LLMREC_ADAPTER_DIR``). :func:`resolve_adapter` accepts a registered name or a path to any adapter folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmrec.config import get_settings
from llmrec.errors import ConfigError
from llmrec.llm.collm import COLLM_CONFIG

__all__ = [
    "METADATA_FILE",
    "adapter_root",
    "check_name",
    "list_adapters",
    "read_metadata",
    "resolve_adapter",
]

METADATA_FILE = "llmrec_adapter.json"
"""Training metadata written beside the adapter's weights (its presence marks a finished adapter)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def adapter_root(adapter_dir: str | Path | None = None) -> Path:
    """The registry folder: ``adapter_dir`` when given, else ``Settings.adapter_dir`` (``LLMREC_ADAPTER_DIR``)."""
    return Path(adapter_dir).expanduser() if adapter_dir is not None else get_settings().adapter_dir.expanduser()


def check_name(name: str) -> str:
    """``name`` if it can name an adapter folder (letters, digits, ``.``, ``_``, ``-``; at most 64 characters).

    Raises:
        ConfigError: It cannot (the message says what is allowed).
    """
    if not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"adapter name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. --name ml-yesno)"
        )
    return name


def _is_adapter(folder: Path) -> bool:
    """Whether ``folder`` holds adapter weights: PEFT's ``adapter_config.json`` or a CoLLM adapter's config."""
    return (folder / "adapter_config.json").is_file() or (folder / COLLM_CONFIG).is_file()


def list_adapters(adapter_dir: str | Path | None = None) -> list[str]:
    """Names of the finished adapters in the registry, sorted."""
    root = adapter_root(adapter_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _is_adapter(p) and (p / METADATA_FILE).is_file())


def resolve_adapter(name_or_path: str | Path, adapter_dir: str | Path | None = None) -> Path:
    """The folder of an adapter given by registered name or by path.

    A plain name (no path separator) is looked up in the registry first; anything else, or a name not registered,
    is taken as a path to a folder holding ``adapter_config.json`` (or a CoLLM adapter's config).

    Raises:
        ConfigError: Neither: the message lists the registered names and how to make one.
    """
    text = str(name_or_path)
    root = adapter_root(adapter_dir)
    if text and "/" not in text and "\\" not in text and _NAME.match(text):
        candidate = root / text
        if _is_adapter(candidate):
            return candidate
    path = Path(text).expanduser()
    if text and _is_adapter(path):
        return path.resolve()
    known = list_adapters(root)
    listed = f"known adapters in {root}: {', '.join(known)}" if known else f"no adapters in {root} yet"
    raise ConfigError(
        f"unknown adapter {text!r}: it is neither a name in the registry nor a folder with adapter_config.json "
        f"({listed}). Train one with `llmrec tune lora --name NAME`, or set LLMREC_ADAPTER_DIR"
    )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The training metadata of an adapter folder (``{}`` for a folder written by another tool).

    Raises:
        ConfigError: The metadata file exists but is not a JSON object.
    """
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file} is not valid JSON ({exc}): retrain the adapter or delete the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a JSON object: retrain the adapter or delete the file")
    return data
