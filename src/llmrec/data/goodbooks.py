"""goodbooks-10k: a catalogue of 10,000 popular Goodreads books (CC BY-SA 4.0), with optional ratings.

Upstream: https://github.com/zygmuntz/goodbooks-10k. The shared data folder holds its metadata (``books.csv``,
``tags.csv``) and upstream's 100-line ``samples/``, but not the full ``ratings.csv`` (6M ratings, 69 MB), which
must be fetched from upstream by hand. So :func:`load_goodbooks_items` works offline and :func:`load_goodbooks`
needs a ratings file: the full one, or ``samples/ratings.csv`` for schema tests.

Licence: CC BY-SA 4.0; anything derived from these files (including exported item tables) must carry the same
licence and the attribution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.download import external_data_dir
from llmrec.data.schema import validate_interactions, validate_items
from llmrec.errors import DataProblem, DataValidationError

__all__ = ["BOOK_COLUMNS", "RATING_COLUMNS", "load_goodbooks", "load_goodbooks_items"]

logger = logging.getLogger(__name__)

DATASET_DIR = "goodbooks-10k"

BOOK_COLUMNS = ("book_id", "goodreads_book_id", "isbn", "authors", "original_publication_year", "title")
"""Columns ``books.csv`` must have (it has 23; the others used are optional)."""

RATING_COLUMNS = ("user_id", "book_id", "rating")
"""Columns a goodbooks ratings file must have (upstream order; no timestamp)."""

_OPTIONAL_KEPT = ("original_title", "language_code", "average_rating", "ratings_count", "image_url")


def _folder(path: str | Path | None) -> Path:
    """The goodbooks folder: ``path`` itself, the folder of a ``books.csv`` path, or the configured one."""
    if path is None:
        return external_data_dir(DATASET_DIR)
    path = Path(path)
    return path.parent if path.suffix.lower() == ".csv" else path


def _read_csv(path: Path, required: tuple[str, ...], dtype: dict[str, type] | None = None) -> pd.DataFrame:
    """Read a CSV, turning a missing file or missing columns into a :class:`DataValidationError`."""
    if not path.is_file():
        raise DataValidationError(
            [
                DataProblem(
                    str(path),
                    None,
                    None,
                    "file not found",
                    "point to the goodbooks-10k folder (or set LLMREC_DATA_DIR to the folder that contains it)",
                )
            ]
        )
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(
            [
                DataProblem(
                    str(path), None, None, f"not a readable CSV file ({exc})", "check the file is the upstream CSV"
                )
            ]
        ) from exc
    missing = [
        DataProblem(
            str(path),
            None,
            col,
            f"required column '{col}' is missing (have: {list(frame.columns)})",
            "use the upstream file",
        )
        for col in required
        if col not in frame.columns
    ]
    if missing:
        raise DataValidationError(missing)
    return frame


def _publication_year(raw: pd.Series, source: str, problems: list[DataProblem]) -> pd.Series:
    """``original_publication_year`` as nullable Int64 (negative years are BC, e.g. -750 for the Iliad)."""
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = (raw.notna() & numeric.isna()) | (numeric.notna() & (numeric != np.floor(numeric)))
    for pos in np.flatnonzero(bad.to_numpy())[:50]:
        problems.append(
            DataProblem(
                source,
                int(pos) + 2,
                "original_publication_year",
                f"{raw.iloc[pos]!r} is not a year",
                "write a whole number (negative for BC) or leave it empty",
            )
        )
    return numeric.where(~bad).round().astype("Int64")


def _describe(authors: str, year: int | None) -> str:
    """Short item text: who wrote the book and when it first came out (what a text encoder can use)."""
    parts = [f"By {authors}."] if authors else []
    if year is not None:
        parts.append(f"First published in {-year} BC." if year < 0 else f"First published in {year}.")
    return " ".join(parts)


def load_goodbooks_items(path: str | Path | None = None) -> pd.DataFrame:
    """Load the goodbooks-10k catalogue (``books.csv``) as a validated items frame.

    Columns: ``item_id`` (the dataset's ``book_id``, "1".."10000", the id ratings use), ``title`` (as published,
    with the series, e.g. "The Hunger Games (The Hunger Games, #1)"), ``text`` (a short description built from the
    authors and year, e.g. "By Suzanne Collins. First published in 2008."; upstream has no blurbs), and the
    attributes ``authors`` (comma-separated), ``year`` (``original_publication_year``, Int64, negative for BC),
    ``isbn`` (ISBN-10 as a string; leading zeros that upstream lost are restored), ``goodreads_book_id``,
    ``original_title``, ``language_code``, ``average_rating``, ``ratings_count`` and ``image_url``. Upstream's
    ``isbn13`` is dropped: it was written in float notation and lost digits.

    Args:
        path: The goodbooks-10k folder or its ``books.csv``; ``<LLMREC_DATA_DIR>/goodbooks-10k`` when ``None``.

    Returns:
        One row per book, in file order.

    Raises:
        DataValidationError: The data folder is not configured, the file or a required column is missing, or a row
            is invalid (empty or duplicate id, non-numeric year); problems name the file, line and field.

    """
    folder = _folder(path)
    books_file = Path(path) if path is not None and Path(path).suffix.lower() == ".csv" else folder / "books.csv"
    source = str(books_file)
    raw = _read_csv(
        books_file,
        BOOK_COLUMNS,
        dtype={"isbn": str, "authors": str, "title": str, "original_title": str, "language_code": str},
    )
    problems: list[DataProblem] = []
    year = _publication_year(raw["original_publication_year"], source, problems)
    if problems:
        raise DataValidationError(problems)
    authors = raw["authors"].fillna("").astype(str).str.strip().astype(object)
    isbn = raw["isbn"].astype("string").str.strip()
    short_digits = isbn.str.fullmatch(r"\d{1,9}").fillna(False).astype(bool)
    isbn = isbn.where(~short_digits, isbn.str.zfill(10)).fillna("").astype(object)
    items = pd.DataFrame(
        {
            "item_id": raw["book_id"],
            "title": raw["title"].fillna("").astype(str).str.strip(),
            "text": [_describe(a, None if pd.isna(y) else int(y)) for a, y in zip(authors, year.tolist(), strict=True)],
            "authors": authors,
            "year": year,
            "isbn": isbn,
            "goodreads_book_id": raw["goodreads_book_id"].astype("string").fillna("").astype(object),
        }
    )
    for col in _OPTIONAL_KEPT:
        if col in raw.columns:
            items[col] = raw[col]
    for col in ("original_title", "language_code", "image_url"):
        if col in items.columns:
            items[col] = items[col].astype("string").fillna("").astype(object)
    return validate_items(items, source)


def load_goodbooks(
    path: str | Path | None = None,
    ratings_path: str | Path | None = None,
    *,
    with_items: bool = True,
) -> Dataset:
    """Load goodbooks-10k ratings (and the catalogue) as a :class:`Dataset`.

    Upstream ratings have **no timestamps**. Upstream documents ``ratings.csv`` as "sorted by time", so the row
    order is used as a synthetic timestamp: the rating on data line ``k`` (1-based, header excluded) gets
    ``timestamp = k``. That keeps the order that temporal and leave-last-out splits need, but the values are
    ranks, not dates: time-window cutoffs in days mean nothing on this dataset. A warning is logged to say so.
    Each rating is an interaction with ``event="rating"`` and ``value`` the 1-5 stars; a repeated (user, book)
    pair keeps its first rating (with a warning).

    Args:
        path: The goodbooks-10k folder (or its ``books.csv``); ``<LLMREC_DATA_DIR>/goodbooks-10k`` when ``None``.
        ratings_path: Ratings CSV (``user_id,book_id,rating``); ``<folder>/ratings.csv`` when ``None``. The full file
            is not in the shared data folder: fetch it from upstream, or pass ``<folder>/samples/ratings.csv`` (the
            first 99 ratings, for schema tests only).
        with_items: Attach the catalogue from ``books.csv`` (titles and text for every book, rated or not).

    Raises:
        DataValidationError: A file or column is missing, or a row is invalid (empty id, rating outside 1-5);
            problems name the file, line and field, and a missing ratings file says where to get it.

    """
    folder = _folder(path)
    ratings_file = Path(ratings_path) if ratings_path is not None else folder / "ratings.csv"
    if not ratings_file.is_file():
        raise DataValidationError(
            [
                DataProblem(
                    str(ratings_file),
                    None,
                    None,
                    "ratings file not found (the full goodbooks-10k ratings.csv is not in the shared data folder)",
                    "download ratings.csv from https://github.com/zygmuntz/goodbooks-10k (git hash-object must give "
                    "0d245a10acfe3c89b2e4004cdbc805b99771ac5d) into the goodbooks-10k folder, or pass ratings_path= "
                    "(samples/ratings.csv has 99 ratings for quick tests)",
                )
            ]
        )
    ratings = _read_csv(ratings_file, RATING_COLUMNS)
    logger.warning(
        "goodbooks-10k ratings have no timestamps: using the row order of %s as a synthetic timestamp "
        "(1, 2, 3, ...); temporal splits follow file order, and time windows in days are meaningless",
        ratings_file,
    )
    frame = pd.DataFrame(
        {
            "user_id": ratings["user_id"],
            "item_id": ratings["book_id"],
            "timestamp": np.arange(1, len(ratings) + 1, dtype=np.int64),
            "value": ratings["rating"],
            "event": "rating",
        }
    )
    interactions = validate_interactions(frame, str(ratings_file), value_range=(1.0, 5.0))
    dup = interactions.duplicated(["user_id", "item_id"], keep="first")
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0]) + 2
        logger.warning(
            "%s: %d repeated (user, book) ratings, the first on line %d; keeping the first rating of each pair",
            ratings_file,
            int(dup.sum()),
            first,
        )
        interactions = interactions[~dup].reset_index(drop=True)
    items = load_goodbooks_items(path if path is not None else folder) if with_items else None
    if items is not None:
        unknown = ~interactions["item_id"].isin(set(items["item_id"]))
        if unknown.any():
            logger.warning("%d ratings refer to books not in books.csv; they get empty titles", int(unknown.sum()))
    return Dataset(interactions, items, name="goodbooks-10k", validate=False)
