"""goodbooks-10k loaders on the real shared files, and typed errors on broken copies."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from llmrec.config import get_settings
from llmrec.data.goodbooks import load_goodbooks, load_goodbooks_items
from llmrec.errors import DataValidationError
from required import skip_or_fail


def _shared_datasets() -> Path:
    """The shared data folder: ``LLMREC_DATA_DIR``, else ``shared/datasets`` beside the repository."""
    env = os.environ.get("LLMREC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.fixture(scope="module")
def goodbooks_dir() -> Path:
    folder = _shared_datasets() / "goodbooks-10k"
    if not (folder / "books.csv").is_file():
        message = f"goodbooks-10k not found at {folder}; set LLMREC_DATA_DIR to the shared datasets folder"
        skip_or_fail(message)
    return folder


@pytest.fixture(scope="module")
def books(goodbooks_dir: Path) -> pd.DataFrame:
    return load_goodbooks_items(goodbooks_dir)


@pytest.fixture
def data_env(goodbooks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``LLMREC_DATA_DIR`` pointing at the shared folder, with fresh settings."""
    monkeypatch.setenv("LLMREC_DATA_DIR", str(goodbooks_dir.parent))
    get_settings.cache_clear()
    yield goodbooks_dir.parent
    get_settings.cache_clear()


BOOKS_HEADER = "book_id,goodreads_book_id,isbn,authors,original_publication_year,title,language_code\n"


def test_catalogue_has_all_books_with_validated_columns(books: pd.DataFrame) -> None:
    assert len(books) == 10_000
    assert list(books.columns[:3]) == ["item_id", "title", "text"]
    assert books["item_id"].is_unique
    assert books["item_id"].iloc[0] == "1"
    assert books["item_id"].iloc[-1] == "10000"
    assert str(books["year"].dtype) == "Int64"
    for col in ("authors", "isbn", "goodreads_book_id", "language_code", "average_rating", "ratings_count"):
        assert col in books.columns
    assert "isbn13" not in books.columns  # lossy upstream (float notation)


def test_known_books(books: pd.DataFrame) -> None:
    by_id = books.set_index("item_id")
    hunger = by_id.loc["1"]
    assert hunger["title"] == "The Hunger Games (The Hunger Games, #1)"
    assert hunger["authors"] == "Suzanne Collins"
    assert hunger["year"] == 2008
    assert hunger["text"] == "By Suzanne Collins. First published in 2008."
    assert hunger["isbn"] == "0439023483"  # leading zero restored
    assert hunger["goodreads_book_id"] == "2767052"
    assert by_id.loc["2", "title"] == "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)"
    iliad = books[books["title"] == "The Iliad"].iloc[0]
    assert iliad["year"] == -750
    assert iliad["text"].endswith("First published in 750 BC.")


def test_books_without_a_year_get_null_and_no_year_in_text(books: pd.DataFrame) -> None:
    undated = books[books["year"].isna()]
    assert len(undated) == 21
    assert not undated["text"].str.contains("published").any()


def test_default_path_comes_from_llmrec_data_dir(data_env: Path) -> None:
    assert len(load_goodbooks_items()) == 10_000


def test_load_goodbooks_with_sample_ratings_uses_row_order_as_time(
    goodbooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmrec.data.goodbooks"):
        ds = load_goodbooks(goodbooks_dir, ratings_path=goodbooks_dir / "samples" / "ratings.csv")
    assert "synthetic timestamp" in caplog.text
    assert len(ds) == 99
    assert ds.n_items == 10_000  # the whole catalogue, rated or not
    raw = pd.read_csv(goodbooks_dir / "samples" / "ratings.csv")
    inter = ds.interactions
    assert inter["timestamp"].tolist() == list(range(1, 100))
    assert inter["user_id"].tolist() == raw["user_id"].astype(str).tolist()
    assert inter["item_id"].tolist() == raw["book_id"].astype(str).tolist()
    assert inter["value"].between(1, 5).all()
    assert (inter["event"] == "rating").all()
    assert ds.items.set_index("item_id").loc["258", "title"].startswith("The Shadow of the Wind (")


def test_missing_full_ratings_file_says_where_to_get_it(goodbooks_dir: Path) -> None:
    if (goodbooks_dir / "ratings.csv").exists():
        pytest.skip("the full ratings.csv is present here")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks(goodbooks_dir)
    problem = err.value.first
    assert problem.source == str(goodbooks_dir / "ratings.csv")
    assert "ratings_path" in problem.fix
    assert "zygmuntz/goodbooks-10k" in problem.fix


def test_unconfigured_data_dir_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMREC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets and no .env here
    get_settings.cache_clear()
    try:
        with pytest.raises(DataValidationError) as err:
            load_goodbooks_items()
    finally:
        get_settings.cache_clear()
    assert err.value.first.source == "LLMREC_DATA_DIR"
    assert "LLMREC_DATA_DIR" in err.value.first.fix


def test_data_dir_without_goodbooks_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(DataValidationError) as err:
            load_goodbooks_items()
    finally:
        get_settings.cache_clear()
    assert err.value.first.source == str(tmp_path / "goodbooks-10k")
    assert "LLMREC_DATA_DIR" in err.value.first.fix


def test_missing_column_is_named(tmp_path: Path) -> None:
    header = "book_id,goodreads_book_id,isbn,authors,original_publication_year\n"
    (tmp_path / "books.csv").write_text(header + "1,2,3,A,2000\n")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks_items(tmp_path)
    assert err.value.first.field == "title"
    assert err.value.first.source == str(tmp_path / "books.csv")


def test_bad_year_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    path.write_text(BOOKS_HEADER + "1,11,123,A,2001,One,eng\n2,12,124,B,last year,Two,eng\n")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks_items(path)
    problem = err.value.first
    assert (problem.source, problem.line, problem.field) == (str(path), 3, "original_publication_year")
    assert "last year" in problem.message


def test_duplicate_book_id_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    path.write_text(BOOKS_HEADER + "1,11,123,A,2001,One,eng\n2,12,124,B,,Two,\n1,13,125,C,1999,Three,eng\n")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks_items(path)
    assert (err.value.first.line, err.value.first.field) == (4, "item_id")


def test_bad_rating_names_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "books.csv").write_text(BOOKS_HEADER + "1,11,123,A,2001,One,eng\n2,12,124,B,,Two,\n")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user_id,book_id,rating\n1,1,5\n1,2,7\n2,1,four\n")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks(tmp_path)
    found = {(p.line, p.field) for p in err.value.problems}
    assert found == {(3, "value"), (4, "value")}
    assert all(p.source == str(ratings) for p in err.value.problems)


def test_ratings_without_rating_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "books.csv").write_text(BOOKS_HEADER + "1,11,123,A,2001,One,eng\n")
    (tmp_path / "ratings.csv").write_text("user_id,book_id\n1,1\n")
    with pytest.raises(DataValidationError) as err:
        load_goodbooks(tmp_path)
    assert err.value.first.field == "rating"


def test_repeated_rating_keeps_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "books.csv").write_text(BOOKS_HEADER + "1,11,123,A,2001,One,eng\n2,12,124,B,,Two,\n")
    (tmp_path / "ratings.csv").write_text("user_id,book_id,rating\n1,1,5\n1,2,3\n1,1,2\n")
    with caplog.at_level(logging.WARNING, logger="llmrec.data.goodbooks"):
        ds = load_goodbooks(tmp_path)
    assert len(ds) == 2
    assert ds.interactions["value"].tolist() == [5.0, 3.0]
    assert "line 4" in caplog.text
