import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from llmrec.config import get_settings
from llmrec.data.dataset import Dataset
from llmrec.data.store import IngestReport, Store
from llmrec.data.store.core import _migrations_dir
from llmrec.data.store.models import Base
from llmrec.errors import ConfigError, DataValidationError, StoreError

NameFactory = Callable[[], str]
GOOD_RATINGS = "user,item,ts,stars\nu1,i1,100,4\nu1,i2,200,5\nu2,i1,150,3\n"
GOOD_MOVIES = "item,name,year\ni1,Alien,1979\ni2,Heat,1995\n"
MAP = {"user_id": "user", "item_id": "item", "timestamp": "ts", "value": "stars", "title": "name"}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def assert_same_dataset(loaded: Dataset, original: Dataset) -> None:
    pd.testing.assert_frame_equal(loaded.interactions, original.interactions)
    # String columns may come back as object rather than pandas' "str" dtype; values and number types match.
    pd.testing.assert_frame_equal(loaded.items, original.items, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.users, original.users, check_dtype=False)
    for col in original.items.columns:
        if pd.api.types.is_numeric_dtype(original.items[col]):
            assert loaded.items[col].dtype == original.items[col].dtype, col
    assert (loaded.user_vocab.ids == original.user_vocab.ids).all()
    assert (loaded.item_vocab.ids == original.item_vocab.ids).all()
    assert (loaded.matrix("value") != original.matrix("value")).nnz == 0


def sabotage_insert(store: Store, table: str, on_call: int) -> Callable[[], None]:
    """Make the ``on_call``-th INSERT into ``table`` fail inside the database; returns the undo function."""
    calls = {"n": 0}

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> Any:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
            calls["n"] += 1
            if calls["n"] == on_call:
                statement = statement.replace(f"INSERT INTO {table}", "INSERT INTO no_such_table", 1)
        return statement, params

    sa.event.listen(store.engine, "before_cursor_execute", before, retval=True)
    return lambda: sa.event.remove(store.engine, "before_cursor_execute", before)


# -- migrations ---------------------------------------------------------------------------------------------
def test_migrations_are_idempotent_and_match_the_models(store: Store) -> None:
    store.migrate()
    store.migrate()
    head = ScriptDirectory(str(_migrations_dir())).get_current_head()
    ours = set(Base.metadata.tables)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, kind, reflected, other: kind != "table" or name in ours,
            },
        )
        assert context.get_current_revision() == head
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_downgrade_and_upgrade_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = Store(url)
    store.migrate()
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    config.set_main_option("sqlalchemy.url", url)
    command.downgrade(config, "base")
    assert set(sa.inspect(store.engine).get_table_names()) == {"alembic_version"}
    store2 = Store(url)
    assert store2.datasets() == []  # migrates on first use
    assert set(Base.metadata.tables) <= set(sa.inspect(store2.engine).get_table_names())


def test_sqlite_folder_is_created_and_default_url_comes_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    monkeypatch.setenv("LLMREC_DB_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    try:
        store = Store()
        assert store.datasets() == []
        assert path.is_file() and store.display_url.endswith("store.db")
    finally:
        get_settings.cache_clear()


# -- round trips --------------------------------------------------------------------------------------------
def test_sample_round_trip(store: Store, ml_sample: Dataset, new_name: NameFactory) -> None:
    name = new_name()
    report = store.ingest(ml_sample, name=name)
    sizes = {"items": ml_sample.n_items, "users": ml_sample.n_users, "interactions": len(ml_sample)}
    assert report.by_table == {table: (n, 0) for table, n in sizes.items()}
    assert (report.inserted, report.skipped) == (sum(sizes.values()), 0)
    assert store.counts(name) == sizes
    loaded = store.load(name)
    assert loaded.name == name
    assert_same_dataset(loaded, ml_sample)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_full_movielens_round_trip(
    store: Store, ml: Dataset, new_name: NameFactory, record_property: Callable[[str, object], None]
) -> None:
    name = new_name()
    started = time.perf_counter()
    report = store.ingest(ml, name=name)
    ingested = time.perf_counter()
    loaded = store.load(name)
    done = time.perf_counter()
    record_property("ingest_s", round(ingested - started, 2))
    record_property("load_s", round(done - ingested, 2))
    assert report.by_table["interactions"] == (100_836, 0)
    assert_same_dataset(loaded, ml)


def test_reingest_changes_nothing_and_overlap_inserts_only_new_rows(
    store: Store, ml_sample: Dataset, new_name: NameFactory
) -> None:
    name = new_name()
    half = ml_sample.interactions.iloc[: len(ml_sample) // 2]
    first = store.ingest_interactions(name, half)
    assert (first.inserted, first.skipped) == (len(half), 0)
    full = store.ingest(ml_sample, name=name)
    assert full.by_table["interactions"] == (len(ml_sample) - len(half), len(half))
    before = store.counts(name)
    again = store.ingest(ml_sample, name=name, show_progress=True)
    assert again.inserted == 0 and again.skipped == again.total == sum(before.values())
    assert store.counts(name) == before
    assert_same_dataset(store.load(name), ml_sample)


def test_ingest_files_is_idempotent(store: Store, tmp_path: Path, new_name: NameFactory) -> None:
    name = new_name()
    ratings, movies = write(tmp_path / "r.csv", GOOD_RATINGS), write(tmp_path / "m.csv", GOOD_MOVIES)
    report = store.ingest_files(name, ratings, movies, mapping=MAP)
    assert report.by_table == {"items": (2, 0), "interactions": (3, 0)}
    again = store.ingest_files(name, ratings, movies, mapping=MAP)
    assert (again.inserted, again.skipped) == (0, 5)
    loaded = store.load(name)
    assert loaded.items["title"].tolist() == ["Alien", "Heat"] and loaded.items["year"].tolist() == [1979, 1995]
    assert "0 row(s) inserted" in str(again)


def test_attributes_survive_the_json_round_trip(store: Store, new_name: NameFactory) -> None:
    name = new_name()
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["A", None, "C"],
            "count": pd.array([1, None, 3], dtype="Int64"),
            "np_int": np.array([1, 2, 3], dtype=np.int64),
            "score": [0.1, float("nan"), 1 / 3],
            "flag": [True, False, None],
            "tags": [["x", "y"], [], np.array(["z"])],
            "meta": [{"k": np.int32(1)}, {"k": None}, {"k": 2.5}],
            "when": pd.to_datetime(["2020-01-01", None, "2021-06-01 12:00:00"], format="ISO8601"),
        }
    )
    interactions = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]})
    store.ingest_items(name, items)
    store.ingest_interactions(name, interactions)
    loaded = store.load(name).items.set_index("item_id")
    assert loaded["title"].tolist() == ["A", "", "C"]
    assert loaded["count"].dtype == "Int64" and loaded["count"].isna().tolist() == [False, True, False]
    assert loaded["np_int"].tolist() == [1, 2, 3]
    assert loaded.loc["a", "score"] == 0.1 and math.isnan(loaded.loc["b", "score"])
    assert loaded.loc["c", "score"] == 1 / 3  # exact, not rounded
    assert loaded["flag"].tolist()[:2] == [True, False] and pd.isna(loaded.loc["c", "flag"])
    assert loaded["tags"].tolist() == [["x", "y"], [], ["z"]]
    assert loaded["meta"].tolist() == [{"k": 1}, {"k": None}, {"k": 2.5}]
    assert loaded.loc["a", "when"] == "2020-01-01T00:00:00" and pd.isna(loaded.loc["b", "when"])


def test_users_round_trip(store: Store, new_name: NameFactory) -> None:
    name = new_name()
    users = pd.DataFrame({"user_id": [10, 2], "profile": ["likes jazz", None], "age": [31, None]})
    store.ingest_users(name, users)
    store.ingest_interactions(name, pd.DataFrame({"user_id": ["2", "3"], "item_id": ["i", "i"], "timestamp": [1, 2]}))
    loaded = store.load(name)
    assert loaded.user_vocab.ids.tolist() == ["10", "2", "3"]  # users table first (cold user 10 kept)
    by_id = loaded.users.set_index("user_id")
    assert by_id.loc["10", "profile"] == "likes jazz" and by_id.loc["2", "profile"] == ""
    assert by_id.loc["10", "age"] == 31 and pd.isna(by_id.loc["3", "age"])


def test_list_delete_and_unknown_dataset(store: Store, ml_sample: Dataset, new_name: NameFactory) -> None:
    name = new_name()
    store.ingest_interactions(name, ml_sample.interactions.head(10))
    assert name in store.datasets()
    assert store.delete_dataset(name) is True
    assert name not in store.datasets()
    assert store.counts(name) == {"items": 0, "users": 0, "interactions": 0}
    assert store.delete_dataset(name) is False
    with pytest.raises(StoreError, match="no dataset") as exc:
        store.load(name)
    assert "Fix:" in str(exc.value)
    with pytest.raises(ConfigError):
        store.ingest_interactions("  ", ml_sample.interactions)


# -- bad input stores nothing -------------------------------------------------------------------------------
BAD_FILES = [
    # (file written, which argument it is, line, field)
    ("r.csv", "interactions", GOOD_RATINGS + "u3,i1,300,lots\n", 5, "stars"),
    ("r.csv", "interactions", "user,item,stars\nu1,i1,4\n", 1, "ts"),
    ("r.csv", "interactions", GOOD_RATINGS.encode() + "u3,caf\xe9,300,4\n".encode("latin-1"), 5, "item"),
    ("r.csv", "interactions", GOOD_RATINGS + "u1,i2,200,5\n", 5, "user,item,ts"),
    ("r.csv", "interactions", GOOD_RATINGS + "u3,i1,300,11\n", 5, "stars"),
    ("r.jsonl", "interactions", '{"user": "u1", "item": "i1", "ts": 1, "stars": 4}\n{"user": "u2",\n', 2, None),
    ("m.csv", "items", GOOD_MOVIES + "i1,Alien again,1979\n", 4, "item"),
]


@pytest.mark.parametrize(("file", "role", "content", "line", "field"), BAD_FILES, ids=lambda v: str(v)[:12])
def test_bad_files_store_nothing(
    store: Store,
    tmp_path: Path,
    new_name: NameFactory,
    file: str,
    role: str,
    content: str | bytes,
    line: int,
    field: str | None,
) -> None:
    existing, fresh = new_name(), new_name()
    good_r, good_m = write(tmp_path / "good_r.csv", GOOD_RATINGS), write(tmp_path / "good_m.csv", GOOD_MOVIES)
    store.ingest_files(existing, good_r, good_m, mapping=MAP)
    before = {n: store.counts(n) for n in (existing, fresh)}
    bad = write(tmp_path / file, content)
    paths = {"interactions": good_r, "items": good_m, role: bad}
    for target in (existing, fresh):
        with pytest.raises(DataValidationError) as exc:
            store.ingest_files(target, paths["interactions"], paths["items"], mapping=MAP, value_range=(1, 10))
        first = exc.value.first
        assert (first.source, first.line, first.field) == (str(bad), line, field)
        assert first.fix
    assert {n: store.counts(n) for n in (existing, fresh)} == before
    assert existing in store.datasets() and fresh not in store.datasets()


def test_bad_dataframe_stores_nothing(store: Store, ml_sample: Dataset, new_name: NameFactory) -> None:
    name = new_name()
    store.ingest_interactions(name, ml_sample.interactions.head(100))
    before = store.counts(name)
    bad = ml_sample.interactions.iloc[100:200].astype({"timestamp": object})
    bad.loc[bad.index[50], "timestamp"] = "not a time"
    with pytest.raises(DataValidationError) as exc:
        store.ingest_interactions(name, bad)
    assert (exc.value.first.source, exc.value.first.line, exc.value.first.field) == ("<dataframe>", 51, "timestamp")
    assert store.counts(name) == before


def test_dataframe_value_pandas_cannot_represent_stores_nothing(store: Store, new_name: NameFactory) -> None:
    name = new_name()
    frame = pd.DataFrame({"user_id": ["1", "1"], "item_id": ["a", "b"], "timestamp": [5, "3000-01-01T00:00+05:00"]})
    with pytest.raises(DataValidationError) as exc:
        store.ingest_interactions(name, frame)
    assert (exc.value.first.line, exc.value.first.field) == (2, "timestamp")
    assert name not in store.datasets()


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_database_failure_midway_rolls_back_the_whole_batch(
    store_url: str, ml_sample: Dataset, new_name: NameFactory
) -> None:
    store = Store(store_url, chunk_size=100)
    earlier, failing = new_name(), new_name()
    store.ingest(ml_sample, name=earlier)
    before = store.counts(earlier)
    # Every chunk is staged (88 chunks of 100 rows), then the one statement moving them into the table fails.
    undo = sabotage_insert(store, "interactions", on_call=1)
    try:
        with pytest.raises(StoreError, match="rolled back") as exc:
            store.ingest(ml_sample, name=failing)
        assert "no_such_table" in str(exc.value)
    finally:
        undo()
    assert failing not in store.datasets()
    assert store.counts(failing) == {"items": 0, "users": 0, "interactions": 0}
    assert store.counts(earlier) == before
    # The same failure while adding to an existing dataset leaves it as it was.
    more = ml_sample.interactions.assign(timestamp=ml_sample.interactions["timestamp"] + 1)
    undo = sabotage_insert(store, "interactions", on_call=1)
    try:
        with pytest.raises(StoreError):
            store.ingest_interactions(earlier, more)
    finally:
        undo()
    assert store.counts(earlier) == before
    assert_same_dataset(store.load(earlier), ml_sample)
    store.close()


# -- connection problems ------------------------------------------------------------------------------------
def test_unreachable_database_is_a_store_error_with_the_password_masked() -> None:
    store = Store("postgresql+psycopg://someone:s3cret-pw@127.0.0.1:9/llmrec?connect_timeout=3")
    with pytest.raises(StoreError) as exc:
        store.datasets()
    message = str(exc.value)
    assert "s3cret-pw" not in message and "someone:***@127.0.0.1:9" in message
    assert "cannot connect" in message and "Fix:" in message
    assert "s3cret-pw" not in repr(store)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u:pw@localhost/db", "supports SQLite and PostgreSQL"),
        ("sqlite:////proc/llmrec/store.db", "cannot create the folder"),
    ],
)
def test_bad_urls_are_store_errors(url: str, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        Store(url).datasets()


def test_ingest_report_adds_up() -> None:
    a = IngestReport("d", 2, 1, {"items": (2, 1)})
    b = IngestReport("d", 5, 0, {"interactions": (5, 0), "items": (0, 0)})
    total = a + b
    assert (total.inserted, total.skipped, total.total) == (7, 1, 8)
    assert total.by_table == {"items": (2, 1), "interactions": (5, 0)}
