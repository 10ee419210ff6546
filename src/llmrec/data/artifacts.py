"""Saved artifacts: folders of JSON metadata, numpy arrays and parquet tables, never pickle.

A fitted scorer or pipeline is saved as a folder (see :meth:`llmrec.models.base.Scorer.save` and
:meth:`llmrec.pipeline.Pipeline.save`). Every folder has one JSON file that says what it holds (``kind``), the
format version and the llmrec version that wrote it; readers check both and refuse a newer format with an
:class:`~llmrec.errors.ArtifactError` naming the folder and the fix. Arrays are written with :func:`numpy.savez`
and read with ``allow_pickle=False`` (object arrays are refused on both sides); tables are parquet.

This module also saves the fitted :class:`~llmrec.data.dataset.Dataset` a model needs to recommend: both
vocabularies (external id <-> dense index, in order), the training interactions (for ``exclude_seen`` and
histories) and the item and user tables (titles and text for the language model and explanations).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.vocab import Vocabulary
from llmrec.errors import ArtifactError, ConfigError

__all__ = [
    "FORMAT_VERSION",
    "load_arrays",
    "load_dataset",
    "new_header",
    "read_meta",
    "save_arrays",
    "save_dataset",
    "write_meta",
    "writing_folder",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the saved-folder layout; bump it when a reader of the old version could not read the new one."""

DATASET_FILE = "dataset.json"
DATASET_KIND = "llmrec-dataset"
_TABLES = ("interactions", "items", "users")
_RESAVE = "Fix: save the model again (llmrec train ... --out DIR, or .save(DIR) in Python)"


def _llmrec_version() -> str:
    from llmrec import __version__

    return __version__


def new_header(kind: str) -> dict[str, Any]:
    """The fields every saved folder's JSON starts with: what it is, the format, who wrote it and when."""
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "llmrec_version": _llmrec_version(),
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` as indented JSON (UTF-8)."""
    path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_meta(path: Path, kind: str) -> dict[str, Any]:
    """Read a saved folder's JSON file and check its kind and format version.

    Args:
        path: The JSON file (``scorer.json``, ``pipeline.json``, ``dataset.json``).
        kind: The ``kind`` it must hold.

    Raises:
        ArtifactError: The folder or file is missing, the JSON is unreadable, it holds something else, or it was
            written in a newer format than this llmrec reads.

    """
    folder = path.parent
    if not folder.exists():
        raise ArtifactError(f"{folder}: no such folder. {_RESAVE}")
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is a file, not a saved model folder. {_RESAVE}")
    if not path.is_file():
        raise ArtifactError(
            f"{folder} is not a saved llmrec {kind.removeprefix('llmrec-')}: {path.name} is missing. {_RESAVE}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable or corrupt ({exc}). {_RESAVE}") from exc
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{path} holds {found!r}, not {kind!r}. {_RESAVE}")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no valid format_version. {_RESAVE}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder} was saved in format version {version} by llmrec {meta.get('llmrec_version', '?')}; this llmrec "
            f"({_llmrec_version()}) reads up to version {FORMAT_VERSION}. Fix: upgrade llmrec, or save the model "
            "again with this version"
        )
    return meta


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays to an ``.npz`` file (no object arrays: they would need pickle to read back)."""
    out = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ConfigError(f"array {name!r} has dtype object, which cannot be saved without pickle")
        out[name] = array
    with path.open("wb") as handle:
        np.savez(handle, allow_pickle=False, **out)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file written by :func:`save_arrays` (``allow_pickle=False``).

    Raises:
        ArtifactError: The file is missing or not a readable npz without pickled objects.

    """
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the folder {path.parent} is incomplete. {_RESAVE}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path} is corrupt or not an npz file ({exc}). {_RESAVE}") from exc


@contextmanager
def writing_folder(path: Path, marker: str) -> Iterator[Path]:
    """Write a saved folder all at once: yield a temporary sibling, then swap it in for ``path`` on success.

    A crash half-way leaves ``path`` as it was. An existing ``path`` is replaced only when it is empty or is itself
    a saved folder (holds ``marker``), so a typo cannot delete unrelated files.

    Raises:
        ConfigError: ``path`` is a file, or a non-empty folder that is not a saved llmrec model.

    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{path} is a file: give a folder to save the model in")
        if any(path.iterdir()) and not (path / marker).is_file():
            raise ConfigError(
                f"{path} is a non-empty folder without {marker} (not a saved llmrec model); refusing to overwrite "
                "it. Fix: choose a new or empty folder"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()  # unlike tempfile.mkdtemp (mode 0700), this respects the umask, as the saved folder should
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- the fitted dataset -----------------------------------------------------------------------------------------
def save_dataset(data: Dataset, folder: Path) -> None:
    """Save what a fitted model needs of its dataset: vocabularies, training interactions, item and user tables.

    Raises:
        ConfigError: A table holds values parquet cannot store (e.g. arbitrary Python objects).

    """
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(
        folder / "vocab.npz",
        {
            "user_ids": np.asarray(data.user_vocab.ids.astype(str), dtype=str),
            "item_ids": np.asarray(data.item_vocab.ids.astype(str), dtype=str),
        },
    )
    dtypes = {}
    for table in _TABLES:
        frame: pd.DataFrame = getattr(data, table)
        dtypes[table] = {str(c): str(frame[c].dtype) for c in frame.columns}
        try:
            frame.reset_index(drop=True).to_parquet(folder / f"{table}.parquet", index=False)
        except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ArrowTypeError...) and TypeError
            raise ConfigError(
                f"cannot save the {table} table of {data.name!r} as parquet ({exc}). Fix: keep its columns to "
                "strings, numbers, booleans or lists of them"
            ) from exc
    meta = {
        **new_header(DATASET_KIND),
        "name": data.name,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_interactions": len(data),
        "dtypes": dtypes,
    }
    write_meta(folder / DATASET_FILE, meta)


def load_dataset(folder: Path) -> Dataset:
    """The dataset :func:`save_dataset` wrote, with the same vocabularies (same dense indices) and interactions.

    Raises:
        ArtifactError: A file is missing or corrupt, or the tables disagree with the vocabularies.

    """
    meta = read_meta(folder / DATASET_FILE, DATASET_KIND)
    vocab = load_arrays(folder / "vocab.npz")
    try:
        users = Vocabulary(vocab["user_ids"].tolist(), kind="user")
        items = Vocabulary(vocab["item_ids"].tolist(), kind="item")
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{folder / 'vocab.npz'} is corrupt ({exc}). {_RESAVE}") from exc
    frames = {}
    for table in _TABLES:
        path = folder / f"{table}.parquet"
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the folder {folder} is incomplete. {_RESAVE}")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow's own error types
            raise ArtifactError(f"{path} is corrupt ({exc}). {_RESAVE}") from exc
        for column, dtype in meta.get("dtypes", {}).get(table, {}).items():
            if dtype == "object" and column in frame:
                frame[column] = frame[column].astype(object)  # parquet reads strings back as str dtype
        frames[table] = frame
    try:
        data = Dataset(
            frames["interactions"],
            frames["items"],
            frames["users"],
            name=str(meta.get("name", "dataset")),
            validate=False,
            user_vocab=users,
            item_vocab=items,
        )
    except (KeyError, ValueError) as exc:  # unknown ids (UnknownIdError is a KeyError), missing columns
        raise ArtifactError(
            f"{folder}: the saved tables do not match the saved vocabularies ({exc}). {_RESAVE}"
        ) from exc
    expected = (meta.get("n_users"), meta.get("n_items"), meta.get("n_interactions"))
    if expected != (data.n_users, data.n_items, len(data)):
        raise ArtifactError(
            f"{folder}: expected {expected[0]} users, {expected[1]} items, {expected[2]} interactions; found "
            f"{data.n_users}, {data.n_items}, {len(data)}. {_RESAVE}"
        )
    return data
