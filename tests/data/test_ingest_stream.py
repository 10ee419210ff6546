"""Streaming ingest (issue 18 item 2): block-wise reading, every problem in one pass, sniffed delimiters, the
declared rating scale, items-only and users-only files, idempotence and atomicity (kill -9) on both databases."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import llmrec
from llmrec.data.files import read_interactions, sniff_delimiter
from llmrec.data.store import Store
from llmrec.data.stream import stream_interactions
from llmrec.errors import ConfigError, DataValidationError

NameFactory = Callable[[], str]
SRC = Path(llmrec.__file__).resolve().parents[1]
MAP = {"user_id": "user", "item_id": "item", "timestamp": "ts", "value": "stars"}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def big_csv(path: Path, rows: int, *, sep: str = ",", seed: int = 0) -> pd.DataFrame:
    """A canonical interactions file of ``rows`` distinct rows; returns its frame."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": np.char.add("u", rng.integers(0, rows // 10 + 1, rows).astype(str)),
            "item_id": np.char.add("i", rng.integers(0, 500, rows).astype(str)),
            "timestamp": np.arange(rows, dtype=np.int64) + 1_600_000_000,
            "value": rng.integers(1, 6, rows).astype(float),
            "event": "rating",
        }
    )
    frame.to_csv(path, index=False, sep=sep)
    return frame


def read_all(path: Path, **kwargs: object) -> tuple[pd.DataFrame, np.ndarray]:
    chunks = list(stream_interactions(path, **kwargs))  # type: ignore[arg-type]
    return (
        pd.concat([c[0] for c in chunks], ignore_index=True),
        np.concatenate([c[1] for c in chunks]),
    )


# -- reading in blocks ---------------------------------------------------------------------------------------
def test_blocks_give_the_whole_file_reader_s_frame_and_lines(tmp_path: Path) -> None:
    # Quoted values with delimiters and newlines, blank lines, CRLF endings and a BOM, cut into many tiny blocks.
    lines = ["user,item,ts,stars,event"]
    for i in range(400):
        item = f'"i{i % 7},x"' if i % 5 == 0 else (f'"i{i}\nsecond line"' if i % 11 == 0 else f"i{i % 13}")
        lines.append(f"u{i % 9},{item},{1000 + i},{1 + i % 5},click")
        if i % 50 == 0:
            lines.append("")
    text = "\ufeff" + "\r\n".join(lines) + "\r\n"
    path = write(tmp_path / "r.csv", text)
    frame, got_lines = read_all(path, mapping=MAP, block_bytes=1024)
    expected = read_interactions(path, MAP)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    body = text.lstrip("\ufeff")
    starts = [body.rfind("\r\n", 0, body.index(f",{1000 + i},")) for i in range(400)]  # record ends are CRLF
    want = [body[:start].count("\n") + 2 for start in starts]
    assert got_lines.tolist() == want  # header line 1; blank lines and lines inside quoted values counted
    bad = write(tmp_path / "bad.csv", text.replace(",1399,5,", ",1399,lots,"))
    with pytest.raises(DataValidationError) as exc:
        read_all(bad, mapping=MAP, block_bytes=1024)
    assert (exc.value.first.line, exc.value.first.field) == (want[399], "stars")


def test_gzip_jsonl_and_parquet_stream_like_csv(tmp_path: Path) -> None:
    import gzip

    frame = big_csv(tmp_path / "r.csv", 3000)
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress((tmp_path / "r.csv").read_bytes()))
    frame.to_json(tmp_path / "r.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "r.parquet")
    for name in ("r.csv", "r.csv.gz", "r.jsonl", "r.parquet"):
        got, lines = read_all(tmp_path / name, block_bytes=4096)
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
        assert lines[0] in (1, 2) and len(lines) == len(frame)


# -- every problem in one pass ---------------------------------------------------------------------------------
def test_every_problem_of_a_file_in_one_pass_with_line_field_and_fix(tmp_path: Path) -> None:
    rows = ["user;item;ts;stars"] + [f"u{i};i{i};{100 + i};4" for i in range(3000)]
    rows[10] = "u9;i9;109;9.5"  # out of the declared scale
    rows[500] = "u499;i499;599;x"  # not a number
    rows[1200] = "u1199;;1299;3"  # empty id
    rows[2000] = "u1999,i1999,2099"  # wrong delimiter in one row: one field
    rows[2900] = "u2899;i2899;yesterday;5"  # not a time
    path = write(tmp_path / "semicolons.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataValidationError) as exc:
        list(stream_interactions(path, MAP, value_range=(0.5, 5.0), block_bytes=2048))
    found = [(p.line, p.field) for p in exc.value.problems]
    assert found == [(11, "stars"), (501, "stars"), (1201, "item"), (2001, "item"), (2901, "ts")]
    assert all(p.fix for p in exc.value.problems)
    assert "outside [0.5, 5.0]" in exc.value.problems[0].message


def test_problems_stop_at_the_cap_with_a_note(tmp_path: Path) -> None:
    rows = ["user_id,item_id,timestamp,value"] + [f"u{i},i{i},{i},oops" for i in range(500)]
    path = write(tmp_path / "r.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataValidationError) as exc:
        list(stream_interactions(path, block_bytes=1024))
    assert len(exc.value.problems) == 51 and exc.value.problems[-1].line is None
    assert "stopped at 50" in exc.value.problems[-1].message


def test_delimiter_is_sniffed() -> None:
    assert sniff_delimiter(b"user;item;ts\nu1;i1;1\n") == ";"
    assert sniff_delimiter(b"user\titem\tts\nu1\ti1\t1\n") == "\t"
    assert sniff_delimiter(b"user|item|ts\n") == "|"
    assert sniff_delimiter(b'user,item,title\nu1,i1,"a; b; c"\n') == ","
    assert sniff_delimiter(b"user,item\n", "tsv") == ","
    assert sniff_delimiter(b"user_id\nu1\n") == ","


def test_a_semicolon_file_reads_as_meant_and_a_wrong_delimiter_names_the_right_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user;item;ts;stars\nu1;i1;100;4\nu2;i1;150;3\n")
    frame, _ = read_all(path, mapping=MAP)
    assert frame["user_id"].tolist() == ["u1", "u2"] and frame["value"].tolist() == [4.0, 3.0]
    assert read_interactions(path, MAP)["item_id"].tolist() == ["i1", "i1"]  # the whole-file reader sniffs too
    with pytest.raises(DataValidationError) as exc:
        stream_interactions(path, MAP, delimiter=",")
    assert "';'" in exc.value.first.fix and "delimiter" in exc.value.first.fix
    with pytest.raises(ConfigError):
        stream_interactions(path, MAP, delimiter=";;")


# -- the store, on SQLite and PostgreSQL --------------------------------------------------------------------------
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_ingest_files_streams_is_idempotent_and_finds_repeats_across_blocks(
    store: Store, tmp_path: Path, new_name: NameFactory
) -> None:
    name = new_name()
    path = tmp_path / "r.csv"
    frame = big_csv(path, 10_000)
    report = store.ingest_files(name, path, block_bytes=32 * 1024)
    assert report.by_table == {"interactions": (10_000, 0)}
    again = store.ingest_files(name, path, block_bytes=32 * 1024)
    assert (again.inserted, again.skipped) == (0, 10_000)
    loaded = store.load(name)
    pd.testing.assert_frame_equal(loaded.interactions, frame, check_dtype=False)
    # A row repeated far apart (different blocks): a problem naming both lines; nothing stored.
    repeat = pd.concat([frame.iloc[:7_500], frame.iloc[[3]], frame.iloc[7_500:]]).assign(
        timestamp=lambda f: f["timestamp"] + 10**6
    )
    repeat.to_csv(tmp_path / "rep.csv", index=False)
    with pytest.raises(DataValidationError) as exc:
        store.ingest_files(name, tmp_path / "rep.csv", block_bytes=32 * 1024)
    problem = exc.value.first
    assert (problem.line, problem.field) == (7_502, "user_id,item_id,timestamp")
    assert "first on line 5" in problem.message
    assert store.counts(name)["interactions"] == 10_000


def test_items_only_and_users_only_files(store: Store, tmp_path: Path, new_name: NameFactory) -> None:
    name = new_name()
    items = write(tmp_path / "items.csv", "sku;name;year\ni1;Alien;1979\ni2;Heat;1995\n")
    users = write(tmp_path / "users.tsv", "uid\tprofile\nu1\tlikes films\n")
    first = store.ingest_files(name, items_path=items, mapping={"item_id": "sku", "title": "name"})
    assert first.by_table == {"items": (2, 0)}
    second = store.ingest_files(name, users_path=users, mapping={"user_id": "uid"})
    assert second.by_table == {"users": (1, 0)}
    assert store.counts(name) == {"items": 2, "users": 1, "interactions": 0}
    with pytest.raises(ConfigError, match="nothing to ingest"):
        store.ingest_files(name)


def test_a_bad_interactions_file_stores_nothing_not_even_its_items(
    store: Store, tmp_path: Path, new_name: NameFactory
) -> None:
    name = new_name()
    items = write(tmp_path / "items.csv", "item_id,title\ni1,Alien\n")
    bad = write(tmp_path / "r.csv", "user_id,item_id,timestamp,value\nu1,i1,1,4\nu2,i1,2,9.5\n")
    with pytest.raises(DataValidationError) as exc:
        store.ingest_files(name, bad, items, value_range=(0.5, 5.0))
    assert (exc.value.first.line, exc.value.first.field) == (3, "value")
    assert name not in store.datasets()


# -- kill -9 at any moment leaves the store as it was -----------------------------------------------------------
def _reading(pid: int, path: Path) -> int | None:
    """The read offset of ``path`` in process ``pid`` (``None`` when the file is not open there)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    return int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return None
    return None


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
@pytest.mark.parametrize("moment", ["while reading", "after reading"])
def test_kill_9_during_ingest_leaves_the_store_as_it_was(
    store: Store, store_url: str, tmp_path: Path, new_name: NameFactory, moment: str
) -> None:
    name = new_name()
    path = tmp_path / "r.csv"
    big_csv(path, 20_000)
    store.ingest_files(name, write(tmp_path / "seed.csv", "user_id,item_id,timestamp\nu0,i0,1\n"))
    before = store.counts(name)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # What `llmrec ingest` runs, without the command line's imports (the test waits on the start of each run).
    code = "import sys; from llmrec.data.store import Store; Store(sys.argv[1]).ingest_files('%s', sys.argv[2], "
    code += "block_bytes=16384)"
    command = [sys.executable, "-c", code % name, store_url, str(path)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = False, time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        offset = _reading(proc.pid, path)
        seen = seen or offset is not None
        if (moment == "while reading" and offset) or (moment == "after reading" and seen and offset is None):
            break  # rows are being staged / the stream is done: the move into the table or the commit is under way
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    after = store.counts(name)
    # Killed before its commit: nothing of it; after: all of it. Never a part.
    assert after == before or after["interactions"] == before["interactions"] + 20_000
    if moment == "while reading":
        assert after == before and proc.returncode == -signal.SIGKILL
    # The store is usable at once (no leftover lock or staging table), and ingesting again completes the data.
    report = store.ingest_files(name, path)
    assert store.counts(name)["interactions"] == before["interactions"] + 20_000
    assert report.total == 20_000


def test_cli_lists_every_problem_and_ingests_items_alone(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmrec.cli import app

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    bad = write(tmp_path / "r.csv", "user;item;ts;stars\nu1;i1;100;4\nu1;i2;200;9.5\nu2;i1;150;x\nu3;;160;3\n")
    mapping = ["--map", "user_id=user", "--map", "item_id=item", "--map", "timestamp=ts", "--map", "value=stars"]
    runner = CliRunner()
    result = runner.invoke(
        app, ["ingest", "--name", "d", "--interactions", str(bad), *mapping, "--scale", "0.5,5", "--db", db]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    for words in ("line 3, field 'stars'", "outside [0.5, 5.0]", "line 4, field 'stars'", "line 5, field 'item'"):
        assert words in result.output
    assert "nothing was stored" in result.output
    items = write(tmp_path / "items.csv", "item_id,title\ni1,Alien\n")
    result = runner.invoke(app, ["ingest", "--name", "d", "--items", str(items), "--db", db])
    assert result.exit_code == 0, result.output
    assert Store(db).counts("d") == {"items": 1, "users": 0, "interactions": 0}
    assert runner.invoke(app, ["ingest", "--name", "d", "--db", db]).exit_code == 2
    assert (
        runner.invoke(app, ["ingest", "--name", "d", "--items", str(items), "--scale", "5,1", "--db", db]).exit_code
        == 2
    )
