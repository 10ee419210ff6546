import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError
from llmrec.eval.report import render_html
from llmrec.eval.results import EvalResults
from llmrec.eval.runner import evaluate_models, popularity_curve


@pytest.fixture(scope="module")
def sample_results(ml_sample: Dataset) -> EvalResults:
    return evaluate_models(ml_sample, ["popular", "itemknn", ("ease", {"l2_reg": 50.0})], k=10, tune=True)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_results_follow_the_shared_shape_and_round_trip(sample_results: EvalResults, tmp_path: Path) -> None:
    assert (sample_results.dataset, sample_results.protocol, sample_results.k) == (
        "movielens-sample",
        "leave-last-out",
        10,
    )
    assert [r.model for r in sample_results.results] == ["popular", "itemknn", "ease"]
    for res in sample_results.results:
        for key in ("ndcg@10", "recall@10", "hr@10", "precision@10", "mrr@10", "map@10", "coverage@10", "novelty@10"):
            assert res.metrics[key] >= 0.0 or key == "novelty@10", key
        assert res.fit_s >= 0 and res.recommend_ms_per_user is not None
        assert sum(res.popularity_curve) == pytest.approx(1.0, abs=1e-5)  # ten shares, each rounded to 6 places
    path = sample_results.write_json(tmp_path / "r.json")
    raw = json.loads(path.read_text())
    assert {"dataset", "protocol", "k", "results"} <= set(raw)
    assert {"model", "metrics", "fit_s"} <= set(raw["results"][0])
    assert EvalResults.read_json(path) == sample_results


def test_tuning_searches_the_grid_on_validation_only(sample_results: EvalResults) -> None:
    from llmrec.models.registry import tuning_configs

    knn = sample_results.result("itemknn")
    assert [t["config"] for t in knn.tuning] == tuning_configs("itemknn")
    best = max(knn.tuning, key=lambda t: t["ndcg@10"])
    assert knn.config == best["config"]
    assert knn.valid_metrics["ndcg@10"] == pytest.approx(best["ndcg@10"])
    fixed = sample_results.result("ease")
    assert fixed.config == {"l2_reg": 50.0} and fixed.tuning == []  # a fixed config is not tuned


def test_personalised_models_beat_popularity_on_the_sample(sample_results: EvalResults) -> None:
    pop = sample_results.result("popular").metrics["hr@10"]
    assert sample_results.result("itemknn").metrics["hr@10"] > pop
    assert (
        sample_results.result("popular").metrics["coverage@10"]
        < sample_results.result("itemknn").metrics["coverage@10"]
    )


def test_unknown_model_and_bad_k_are_config_errors(ml_sample: Dataset) -> None:
    with pytest.raises(ConfigError, match="available"):
        evaluate_models(ml_sample, ["nope"])
    with pytest.raises(ConfigError, match="k must be"):
        evaluate_models(ml_sample, ["popular"], k=0)


def test_popularity_curve_puts_popular_recommendations_in_the_first_decile() -> None:
    popularity = np.arange(100)[::-1]  # item 0 most popular
    assert popularity_curve(np.array([[0, 1, 2]]), popularity)[0] == 1.0
    assert popularity_curve(np.array([[99, -1]]), popularity)[-1] == 1.0


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_html_report_has_table_and_plots(sample_results: EvalResults) -> None:
    html = render_html(sample_results)
    assert html.count("data:image/png;base64,") == 2
    for model in ("popular", "itemknn", "ease"):
        assert f"<td>{model}</td>" in html
    assert "ndcg@10" in html and "leave-last-out" in html


def test_cold_items_popularity_gets_no_credit_for_catalogue_order() -> None:
    # Every user had every low-index item and a few high-index ones: relevance follows the catalogue order. The
    # cold items have no training interactions, so popularity scores them all alike; issue 16: ties broken by the
    # lower index put the relevant low-index cold items first and gave popularity precision@5 = 1.
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        high = rng.choice(np.arange(100, 200), 10, replace=False)
        for t, item in enumerate([*range(100), *high]):
            rows.append((f"u{user}", f"i{item:03d}", t, 1.0))
    data = Dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "value"]), name="ordered")
    results = evaluate_models(data, ["popular"], k=5, protocol="cold-items", tune=False)
    # A random order of the ~20 cold test items finds ~55% relevant ones (the low half plus a few high ones).
    assert results.result("popular").metrics["precision@5"] < 0.8


@pytest.mark.slow  # 2.4 s in the clean-clone CI run: outside the fast lane
def test_on_progress_reports_finished_steps_before_each_next_one() -> None:
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"i{i:02d}", t, 1.0) for u in range(30) for t, i in enumerate(rng.choice(40, 8, replace=False))]
    data = Dataset(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "value"]), name="tiny")
    calls: list[tuple[int, int | None, str]] = []

    def on_progress(done: int, total: int | None, message: str) -> None:
        calls.append((done, total, message))

    evaluate_models(data, ["popular", ("ease", {"l2_reg": 50.0})], k=5, on_progress=on_progress)
    assert calls == [
        (0, None, "popular: tuning defaults"),  # a named model is tuned over its grid (popular: one config)
        (1, None, "popular: final fit defaults"),
        (2, None, "ease: final fit {'l2_reg': 50.0}"),  # a given config is not
    ]
