import gzip
from pathlib import Path

import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.files import detect_format, read_dataset, read_interactions, read_items, read_tables, read_users
from llmrec.data.movielens import bundled_movielens_path
from llmrec.errors import ConfigError, DataProblem, DataValidationError

ML_MAP = {"user_id": "userId", "item_id": "movieId", "value": "rating"}
GOOD_CSV = "user,item,ts,stars\nu1,i1,100,4\nu1,i2,200,5\nu2,i1,150,3\n"
GOOD_MAP = {"user_id": "user", "item_id": "item", "timestamp": "ts", "value": "stars"}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def problem(exc: pytest.ExceptionInfo[DataValidationError]) -> DataProblem:
    return exc.value.first


# -- reading what is right ----------------------------------------------------------------------------------
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_movielens_ratings_read_through_a_mapping_match_the_bundled_loader(ml: Dataset) -> None:
    folder = bundled_movielens_path()
    data = read_dataset(
        folder / "ratings.csv", folder / "movies.csv", mapping=ML_MAP, default_event="rating", name="ml"
    )
    assert (data.name, len(data), data.n_users, data.n_items) == ("ml", 100_836, 610, 9_742)
    pd.testing.assert_frame_equal(data.interactions, ml.interactions, check_dtype=False)
    assert data.items.set_index("item_id").loc["1", "title"] == "Toy Story (1995)"
    assert (data.item_vocab.ids == ml.item_vocab.ids).all()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz", ".jsonl.gz", ".ndjson"])
def test_every_format_gives_the_same_canonical_frame(tmp_path: Path, suffix: str) -> None:
    expected = read_interactions(write(tmp_path / "ref.csv", GOOD_CSV), GOOD_MAP)
    raw = pd.read_csv(tmp_path / "ref.csv")
    path = tmp_path / f"data{suffix}"
    if suffix.startswith((".csv", ".tsv")):
        text = raw.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        raw.to_parquet(path)
        text = None
    else:
        text = raw.to_json(orient="records", lines=True)
    if text is not None:
        path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    pd.testing.assert_frame_equal(read_interactions(path, GOOD_MAP), expected)


def test_format_argument_overrides_the_suffix_and_gzip_is_told_by_content(tmp_path: Path) -> None:
    path = tmp_path / "ratings.txt"
    path.write_bytes(gzip.compress(GOOD_CSV.encode()))
    assert len(read_interactions(path, GOOD_MAP, format="csv")) == 3
    assert detect_format("x.JSONL.gz") == "jsonl"
    with pytest.raises(ConfigError, match="unknown file format"):
        detect_format("x.csv", "xlsx")


def test_ids_keep_leading_zeros_and_titles_like_na_stay_text(tmp_path: Path) -> None:
    items = read_items(write(tmp_path / "items.csv", "item_id,title,year\n007,NA,1962\n010,,\n"))
    assert items["item_id"].tolist() == ["007", "010"]
    assert items["title"].tolist() == ["NA", ""]
    assert items["year"].isna().tolist() == [False, True]


def test_dataset_wide_mapping_applies_where_columns_exist(tmp_path: Path) -> None:
    inter = write(tmp_path / "r.csv", "userId,movieId,timestamp\n1,10,5\n")
    items = write(tmp_path / "m.csv", "movieId,name\n10,Alien\n")
    users = write(tmp_path / "u.jsonl", '{"userId": 1, "bio": "likes sci-fi"}\n')
    tables = read_tables(
        inter,
        items,
        users,
        {"user_id": "userId", "item_id": "movieId"},
        item_mapping={"item_id": "movieId", "title": "name"},
        user_mapping={"user_id": "userId", "profile": "bio"},
    )
    assert tables.items is not None and tables.items["title"].tolist() == ["Alien"]
    assert tables.users is not None and tables.users["profile"].tolist() == ["likes sci-fi"]
    data = read_dataset(inter, items, mapping={"user_id": "userId", "item_id": "movieId"})
    assert data.name == "r" and data.items["name"].tolist() == ["Alien"]


def test_jsonl_keeps_nested_attributes(tmp_path: Path) -> None:
    path = write(tmp_path / "items.jsonl", '{"item_id": 1, "tags": ["a", "b"], "meta": {"k": 1}}\n\n{"item_id": 2}\n')
    items = read_items(path)
    assert items["tags"].iloc[0] == ["a", "b"] and items["meta"].iloc[0] == {"k": 1}
    assert items["item_id"].tolist() == ["1", "2"]


def test_users_file(tmp_path: Path) -> None:
    users = read_users(write(tmp_path / "users.csv", "uid,profile,age\n1,reads a lot,31\n"), {"user_id": "uid"})
    assert users.columns.tolist() == ["user_id", "profile", "age"]


# -- every problem names file, line, field and fix ---------------------------------------------------------
BAD_INTERACTIONS = [
    # (name, content, line, field, words in the message or fix)
    ("wrong-type.csv", GOOD_CSV + "u3,i1,300,five\n", 5, "stars", "not a number"),
    ("bad-time.csv", GOOD_CSV + "u3,i1,yesterday,4\n", 5, "ts", "not a timestamp"),
    ("range.csv", GOOD_CSV + "u3,i1,300,9\n", 5, "stars", "outside [1.0, 5.0]"),
    ("dupe.csv", GOOD_CSV + "\nu1,i2,200,5\n", 6, "user,item,ts", "duplicate"),
    ("empty-id.csv", GOOD_CSV + ",i1,300,4\n", 5, "user", "empty"),
    ("missing-col.csv", "user,item,stars\nu1,i1,4\n", 1, "ts", "missing"),
    ("fields.csv", GOOD_CSV + "u3,i1,300\n", 5, "stars", "3 field"),
    ("extra.csv", GOOD_CSV + "u3,i1,300,4,x\n", 5, "stars", "extra values"),
    ("quote.csv", GOOD_CSV + 'u3,"i1,300,4\nu4,i2,5,5\n', 5, None, "malformed CSV"),
    ("latin1.csv", GOOD_CSV.encode() + "u3,caf\xe9,300,4\n".encode("latin-1"), 5, "item", "UTF-8"),
    ("broken.jsonl", '{"user": "u1", "item": "i1", "ts": 1}\n{"user": "u2", "item": "i1" "ts": 1}\n', 2, None, "JSON"),
    ("array.jsonl", '{"user": "u1", "item": "i1", "ts": 1}\n\n[1, 2]\n', 3, None, "JSON object"),
    ("nested.jsonl", '{"user": "u1", "item": {"id": 1}, "ts": 1, "stars": 4}\n', 1, "item", "single value"),
    ("latin1.jsonl", '{"user": "u1", "item": "caf\xe9", "ts": 1}\n'.encode("latin-1"), 1, "item", "UTF-8"),
]


@pytest.mark.parametrize(("name", "content", "line", "field", "words"), BAD_INTERACTIONS, ids=lambda v: str(v)[:14])
def test_bad_interactions_name_file_line_field_and_fix(
    tmp_path: Path, name: str, content: str | bytes, line: int, field: str | None, words: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataValidationError) as exc:
        read_interactions(path, GOOD_MAP, value_range=(1.0, 5.0))
    first = problem(exc)
    assert first.source == str(path)
    assert first.line == line
    assert first.field == field
    assert words in first.message + first.fix
    assert first.fix
    assert str(path) in str(exc.value) and f"line {line}" in str(exc.value)


def test_a_value_pandas_cannot_represent_is_located_not_a_traceback(tmp_path: Path) -> None:
    text = "user_id,item_id,timestamp\n1,2,3\n1,3,4\n1,4,3000-01-01T00:00:00+05:00\n1,5,6\n"
    with pytest.raises(DataValidationError) as exc:
        read_interactions(write(tmp_path / "r.csv", text))
    assert (problem(exc).line, problem(exc).field) == (4, "timestamp")
    assert "3000-01-01" in problem(exc).message


def test_line_numbers_count_blank_lines_and_multiline_quoted_fields(tmp_path: Path) -> None:
    text = 'item_id,title,text\n1,A,"first line\nsecond line"\n\n2,B,plain\n1,C,again\n'
    with pytest.raises(DataValidationError) as exc:
        read_items(write(tmp_path / "items.csv", text))
    assert (problem(exc).line, problem(exc).field) == (6, "item_id")
    assert "duplicate" in problem(exc).message


def test_bad_encoding_reports_every_bad_line_and_the_byte(tmp_path: Path) -> None:
    text = "item_id,title\n1,Caf\xe9\n2,ok\n3,Na\xefve\n"
    with pytest.raises(DataValidationError) as exc:
        read_items(write(tmp_path / "items.csv", text.encode("cp1252")))
    assert [(p.line, p.field) for p in exc.value.problems] == [(2, "title"), (4, "title")]
    assert "0xe9" in exc.value.first.message and "re-save the file as UTF-8" in exc.value.first.fix


def test_mapped_column_that_is_absent_names_the_users_column(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as exc:
        read_interactions(write(tmp_path / "r.csv", GOOD_CSV), {**GOOD_MAP, "value": "rating"})
    assert (problem(exc).line, problem(exc).field) == (1, "rating")
    assert "mapped to value" in problem(exc).message


def test_two_columns_for_one_field_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="both 'user_id' and 'user'"):
        read_interactions(write(tmp_path / "r.csv", "user_id,user,item_id,timestamp\n1,2,3,4\n"), {"user_id": "user"})


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.csv", None, "file not found"),
        ("empty.csv", "", "empty"),
        ("header-only.csv", "user_id,item_id,timestamp\n", "no data rows"),
        ("blank.jsonl", "\n\n", "empty"),
        ("bad.gz.csv", b"\x1f\x8b\x08garbage", "gzip"),
        ("bad.parquet", "not parquet", "Parquet"),
        ("data.xlsx", "x", "format"),
        ("dup-header.csv", "user_id,item_id,timestamp,user_id\n1,2,3,4\n", "more than once"),
    ],
)
def test_whole_file_problems(tmp_path: Path, name: str, content: str | bytes | None, words: str) -> None:
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(DataValidationError) as exc:
        read_interactions(path)
    assert problem(exc).source == str(path)
    assert words in problem(exc).message and problem(exc).fix


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataValidationError, match="not a file"):
        read_interactions(tmp_path / "dir.csv")


def test_mapping_to_an_unknown_field_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", GOOD_CSV)
    with pytest.raises(ConfigError, match="cannot map"):
        read_interactions(path, {"rating": "stars"})
    with pytest.raises(ConfigError, match="more than one field"):
        read_interactions(path, {"user_id": "user", "item_id": "user"})


def test_parquet_problem_lines_are_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"user_id": ["1", "2"], "item_id": ["a", "b"], "timestamp": [1, "soon"]}).astype(str).to_parquet(path)
    with pytest.raises(DataValidationError) as exc:
        read_interactions(path)
    assert (problem(exc).line, problem(exc).field) == (2, "timestamp")
