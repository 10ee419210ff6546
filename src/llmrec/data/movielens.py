"""The MovieLens ml-latest-small dataset, bundled with llmrec (GroupLens licence: non-commercial research).

The files ship unchanged inside the package, beside their ``README.txt`` (the licence requires it), so
``load_movielens()`` works offline on a fresh install. Any other copy with the same layout (e.g. a newer
"latest-small" release) loads through ``load_movielens(path)``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.schema import validate_interactions, validate_items
from llmrec.errors import DataProblem, DataValidationError

__all__ = ["bundled_movielens_path", "load_movielens"]


def bundled_movielens_path() -> Path:
    """Folder of the bundled ml-latest-small files (ratings.csv, movies.csv, tags.csv, links.csv, README.txt)."""
    return Path(str(resources.files("llmrec.data") / "bundled" / "ml-latest-small"))


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataValidationError(
            [DataProblem(str(path), None, None, "file not found", "point to a folder with MovieLens CSV files")]
        )
    return pd.read_csv(path, dtype={"title": str, "genres": str, "tag": str})


def load_movielens(path: str | Path | None = None, *, with_tags: bool = True) -> Dataset:
    """Load MovieLens latest-small as a :class:`Dataset` (every rating is an interaction).

    Items get ``title`` (as published, with the year), ``year`` and ``genres`` ("|"-separated), and, with
    ``with_tags``, ``tags``: the distinct user tags of the movie, "|"-separated. Tags carry timestamps that can
    lie after a split's cutoff; models that read them as item text should know that.

    Args:
        path: Folder with ``ratings.csv`` and ``movies.csv``; the bundled copy when ``None``.
        with_tags: Attach tags (from ``tags.csv``, when present) to the items.
    """
    folder = Path(path) if path is not None else bundled_movielens_path()
    ratings = _read(folder / "ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "item_id", "rating": "value"}
    )
    ratings["event"] = "rating"
    interactions = validate_interactions(ratings, str(folder / "ratings.csv"), value_range=(0.5, 5.0))
    movies = _read(folder / "movies.csv").rename(columns={"movieId": "item_id"})
    movies["year"] = pd.to_numeric(movies["title"].str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce").astype("Int64")
    movies["genres"] = movies["genres"].replace("(no genres listed)", "").fillna("")
    tags_file = folder / "tags.csv"
    if with_tags and tags_file.is_file():
        tags = _read(tags_file)
        tags["tag"] = tags["tag"].astype(str).str.strip()
        joined = tags.drop_duplicates(["movieId", "tag"]).groupby("movieId")["tag"].agg("|".join)
        movies["tags"] = movies["item_id"].map(joined).fillna("")
    items = validate_items(movies, str(folder / "movies.csv"))
    return Dataset(interactions, items, name="movielens-small", validate=False)
