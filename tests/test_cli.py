import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmrec.cli import app
from llmrec.data.dataset import Dataset

runner = CliRunner()


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def _write_sample(ml_sample: Dataset, folder: Path) -> tuple[Path, Path]:
    ratings = ml_sample.interactions.rename(columns={"user_id": "userId", "item_id": "movieId", "value": "rating"})
    ratings[["userId", "movieId", "rating", "timestamp"]].to_csv(folder / "ratings.csv", index=False)
    items = ml_sample.items[["item_id", "title", "genres"]].rename(columns={"item_id": "movieId"})
    items.to_csv(folder / "movies.csv", index=False)
    return folder / "ratings.csv", folder / "movies.csv"


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_ingest_then_evaluate_from_the_store(ml_sample: Dataset, tmp_path: Path, db: str) -> None:
    ratings, movies = _write_sample(ml_sample, tmp_path)
    mapping = ["--map", "user_id=userId", "--map", "item_id=movieId", "--map", "value=rating"]
    args = ["ingest", "--name", "sample", "--interactions", str(ratings), "--items", str(movies), "--db", db]
    result = runner.invoke(app, [*args, *mapping, "--map", "title=title"])
    assert result.exit_code == 0, result.output
    # Items use their own id column name; a second ingest of the same files changes nothing.
    again = runner.invoke(app, [*args, *mapping])
    assert again.exit_code == 0, again.output
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    result = runner.invoke(
        app,
        ["evaluate", "--dataset", "sample", "--db", db, "--models", "popular,itemknn", "--no-tune",
         "--out", str(out), "--html", str(html)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    raw = json.loads(out.read_text())
    assert raw["dataset"] == "sample" and [r["model"] for r in raw["results"]] == ["popular", "itemknn"]
    assert "ndcg@10" in result.output and html.read_text().startswith("<!doctype html>")
    rebuilt = tmp_path / "again.html"
    assert runner.invoke(app, ["report", str(out), "--html", str(rebuilt)]).exit_code == 0
    assert rebuilt.is_file()


def test_bad_input_gets_a_message_not_a_traceback(tmp_path: Path, db: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\n1,10,100\n2,11,not-a-time\n")
    result = runner.invoke(app, ["ingest", "--name", "bad", "--interactions", str(bad), "--db", db])
    assert result.exit_code == 2
    assert "bad.csv, line 3, field 'timestamp'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", "--models", "popular,nope", "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "available" in result.output
    result = runner.invoke(app, ["evaluate", "--dataset", "missing", "--db", db])
    assert result.exit_code == 2 and "unknown dataset 'missing'" in result.output


@pytest.mark.slow  # the whole demo: every model on the full dataset
def test_demo_ingests_trains_evaluates_and_shows_a_top10(db: str) -> None:
    result = runner.invoke(app, ["demo", "--db", db, "--models", "popular,itemknn", "--user", "1"])
    assert result.exit_code == 0, result.output
    assert "top-10 for user 1" in result.output and "LM rerank" in result.output
    assert "ndcg@10" in result.output
    assert result.output.count("(rests on:") + result.output.count("(template)") >= 1  # explained
    assert "Toy Story (1995)" not in result.output.split("top-10 for user 1")[1]  # user 1 rated it: excluded


@pytest.mark.slow  # fits, reranks and explains with the language model
def test_recommend_reranks_and_explains_through_the_pipeline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["recommend", "--user", "1", "--k", "3", "--retriever", "itemknn", "--explain"])
    assert result.exit_code == 0, result.output
    assert "top-3 for user 1 (itemknn + LM rerank (loglik))" in result.output
    why = result.output.split("why")[1]
    assert [line.split(".")[0].strip() for line in why.splitlines() if line[:4].strip().rstrip(".").isdigit()] == [
        "1",
        "2",
        "3",
    ]
    plain = runner.invoke(
        app, ["recommend", "--user", "no-such-user", "--k", "3", "--retriever", "popular", "--no-rerank"]
    )
    assert plain.exit_code == 0 and "retriever only" in plain.output and "not in movielens-small" in plain.output
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({"retriever": {"name": "popular"}, "candidates": 0}))
    bad = runner.invoke(app, ["recommend", "--user", "1", "--config", str(config)])
    assert bad.exit_code == 2 and "candidates" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_chat_in_the_terminal_takes_feedback_and_constraints() -> None:
    script = "hello\nsomething funny from the 90s\n/down 1\n/down 9\nno comedy, westerns please\n/state\n/quit\n"
    result = runner.invoke(app, ["chat", "--retriever", "itemknn", "--k", "3"], input=script)
    assert result.exit_code == 0, result.output
    answers = result.output.split("llmrec>")
    assert "Tell me a movie you liked" in answers[1]
    assert "fit (comedy, from 1990 to 1999)" in answers[2]
    first_pick = answers[2].split("1. ")[1].split(":")[0]
    assert "noted: down on item 1" in result.output and "give the number of an item" in result.output
    assert "western" in answers[3].lower() and first_pick not in answers[3]
    assert '"disliked"' in result.output  # /state printed the state as JSON


def test_train_then_recommend_from_the_saved_model_without_fitting(
    ml_sample: Dataset, tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmrec.data.store import Store
    from llmrec.models.base import Scorer

    Store(db).ingest(ml_sample, name="sample")
    model = tmp_path / "model"
    fit_args = ["--dataset", "sample", "--db", db, "--retriever", "itemknn"]
    trained = runner.invoke(app, ["train", *fit_args, "--out", str(model)])
    assert trained.exit_code == 0, trained.output
    assert f"saved model to {model}" in trained.output and (model / "pipeline.json").is_file()
    refitted = runner.invoke(app, ["recommend", *fit_args, "--user", "1", "--no-rerank"])
    assert refitted.exit_code == 0, refitted.output

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("recommend --model must not fit")

    monkeypatch.setattr(Scorer, "fit", no_fit)
    loaded = runner.invoke(app, ["recommend", "--model", str(model), "--user", "1", "--no-rerank"])
    assert loaded.exit_code == 0, loaded.output
    first, _, table = loaded.output.partition("\n")
    assert first.startswith(f"loaded model from {model} (fitted ") and first.endswith(", no refit)")
    assert table == refitted.output  # the same list as a fresh fit, without the fit
    assert "top-10 for user 1 (retriever only)" in table
    # a bad folder and options that configure a new fit are refused with a message
    missing = runner.invoke(app, ["recommend", "--model", str(tmp_path / "nope"), "--user", "1"])
    assert missing.exit_code == 2 and "ArtifactError" in missing.output and "no such folder" in missing.output
    clash = runner.invoke(app, ["recommend", "--model", str(model), "--user", "1", "--config", "x.json"])
    assert clash.exit_code == 2 and "--config" in clash.output and "--model" in clash.output
    other = runner.invoke(app, ["recommend", "--model", str(model), "--user", "1", "--dataset", "movielens-small"])
    assert other.exit_code == 2 and "fitted on 'sample'" in other.output
