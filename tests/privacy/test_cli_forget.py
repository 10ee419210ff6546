"""`llmrec forget USER` and `llmrec export USER`: the same deletion and export as the API, from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from typer.testing import CliRunner

from llmrec.cli import app
from llmrec.data.store import Store

runner = CliRunner()


def test_export_then_forget_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store(db)
    frame = pd.DataFrame({"user_id": ["u-cli", "u-cli", "other"], "item_id": ["a", "b", "a"], "timestamp": [1, 2, 3]})
    store.ingest_interactions("shop", frame)
    store.add_user("shop", "u-cli", "call me on +44 20 7946 0958")

    out = tmp_path / "export.json"
    exported = runner.invoke(app, ["export", "u-cli", "--dataset", "shop", "--db", db, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    data = json.loads(out.read_text())
    assert data["profile"]["profile"] == "call me on [PHONE]" and len(data["interactions"]) == 2

    asked = runner.invoke(app, ["forget", "u-cli", "--dataset", "shop", "--db", db], input="n\n")
    assert asked.exit_code == 1 and store.get_user("shop", "u-cli") is not None  # declined: nothing deleted
    done = runner.invoke(app, ["forget", "u-cli", "--dataset", "shop", "--db", db, "--yes"])
    assert done.exit_code == 0, done.output
    assert "interactions: 2" in done.output and "users: 1" in done.output
    assert store.get_user("shop", "u-cli") is None and store.user_interactions("shop", "u-cli").empty
    assert len(store.user_interactions("shop", "other")) == 1
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for column in sa.Table(table, sa.MetaData(), autoload_with=conn).columns:
                hits = conn.execute(sa.select(sa.func.count()).where(sa.cast(column, sa.Text).contains("u-cli")))
                assert hits.scalar_one() == 0, (table, column.name)
    actions = [(r.action, r.actor) for r in store.audit_log("shop", user_id="u-cli").records]
    assert actions == [("delete_user", "cli"), ("export_user", "cli")]

    again = runner.invoke(app, ["forget", "u-cli", "--dataset", "shop", "--db", db, "--yes"])
    assert again.exit_code == 2 and "nothing stored about user 'u-cli'" in again.output
