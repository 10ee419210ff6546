"""Intervals and paired comparisons: coverage of the truth, pairing, determinism, the timeline protocol."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmrec.data.dataset import Dataset
from llmrec.data.splits import timeline_split
from llmrec.errors import ConfigError
from llmrec.eval.compare import compare_results, default_reference, merge_results
from llmrec.eval.metrics import metric_parts
from llmrec.eval.results import EvalResults
from llmrec.eval.runner import evaluate_models, timeline_queries
from llmrec.eval.stats import (
    clustered_interval,
    metric_intervals,
    paired_clustered_comparison,
    paired_comparison,
    verdict,
)


def test_paired_comparison_sees_a_small_shift_that_unpaired_noise_would_hide() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 500)  # large spread between users
    better = base + 0.02 + rng.normal(0, 0.01, 500)  # a small, consistent gain per user
    diff = paired_comparison(better, base)
    assert diff.ci95[0] > 0.015 and diff.ci95[1] < 0.025
    assert diff.p_value < 0.001 and diff.n_users == 500
    same = paired_comparison(base, base + rng.normal(0, 0.01, 500))
    assert same.ci95[0] < 0 < same.ci95[1] and same.p_value > 0.01


@pytest.mark.parametrize(
    ("ci95", "direction", "expected"),
    [
        ((-0.01, 0.02), "higher", "within noise"),
        ((0.0, 0.02), "higher", "within noise"),  # an interval that touches 0 holds it
        ((0.01, 0.02), "higher", "better"),
        ((-0.02, -0.01), "higher", "worse"),
        ((0.01, 0.02), "lower", "worse"),  # a higher gini is worse
        ((-0.02, -0.01), "lower", "better"),
        ((0.01, 0.02), "none", "higher"),  # no quality to judge: only which way a went
        ((-0.02, -0.01), "zero", "lower"),
    ],
)
def test_verdict_reads_the_interval_in_the_metrics_direction(
    ci95: tuple[float, float], direction: str, expected: str
) -> None:
    assert verdict(ci95, direction) == expected


def test_paired_comparison_drops_users_missing_on_either_side_and_is_seeded() -> None:
    a = np.array([0.1, np.nan, 0.5, 0.2, 0.9])
    b = np.array([0.0, 0.3, np.nan, 0.1, 0.4])
    diff = paired_comparison(a, b)
    assert diff.n_users == 3 and diff.diff == pytest.approx((0.1 + 0.1 + 0.5) / 3, abs=1e-6)
    assert paired_comparison(a, b) == diff  # same seed, same interval
    with pytest.raises(ConfigError, match="one length"):
        paired_comparison(a, b[:3])
    with pytest.raises(ConfigError, match="no user"):
        paired_comparison(np.array([np.nan]), np.array([1.0]))


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_intervals_cover_the_estimate_and_shrink_with_more_users(ml: Dataset) -> None:
    rng = np.random.default_rng(1)
    truth_items = rng.integers(50, ml.n_items, 600)
    ranked = np.argsort(rng.uniform(size=(600, 50)), axis=1)[:, :10]  # ten distinct items of the first 50
    ranked[:, 0] = np.where(rng.uniform(size=600) < 0.3, truth_items, ranked[:, 0])
    import scipy.sparse as sp

    truth = sp.csr_matrix((np.ones(600), (np.arange(600), truth_items)), shape=(600, ml.n_items))
    small = metric_parts(ranked[:60], truth[:60], k=10, train=ml, users=np.arange(60))
    large = metric_parts(ranked, truth, k=10, train=ml, users=np.arange(600))
    for parts in (small, large):
        ci = metric_intervals([parts])
        summary = parts.summary()
        for key in ("ndcg@10", "hr@10", "coverage@10", "gini@10"):
            assert ci[key][0] <= summary[key] <= ci[key][1], key
    width = lambda p: np.diff(metric_intervals([p])["hr@10"])[0]  # noqa: E731
    assert width(large) < width(small) / 2  # ~ 1/sqrt(n): 10x the users, ~3x narrower
    assert metric_intervals([large]) == metric_intervals([large])


def test_timeline_queries_use_only_the_past_and_skip_users_without_one(ml_sample: Dataset) -> None:
    split = timeline_split(ml_sample)
    fit = split.fit_data("test")
    split.check(fit, "test")  # nothing the model learns from is later than any target
    users, histories, items = timeline_queries(fit, split.test, max_per_user=1000)
    assert len(users) == len(histories) == len(items) > 0
    events = ml_sample.interactions.assign(u=ml_sample.user_idx, i=ml_sample.item_idx)
    for row in np.random.default_rng(0).choice(len(users), 30, replace=False):
        user_events = events[events.u == users[row]]
        target_time = user_events.loc[user_events.i == items[row], "timestamp"].iloc[0]
        before = set(user_events.loc[user_events.timestamp <= target_time, "i"])
        assert set(histories[row]) <= before and items[row] not in set(histories[row])
    # Users who appear only after the cut are targets too, from their second event on.
    cold = set(split.test.user_idx) - set(fit.user_idx)
    assert cold & set(users)
    capped, _, _ = timeline_queries(fit, split.test, max_per_user=3)
    assert np.bincount(capped).max() <= 3


@pytest.fixture(scope="module")
def seeded(ml_sample: Dataset) -> EvalResults:
    return evaluate_models(
        ml_sample, ["popular", ("als", {"factors": 16}), ("ease", {"l2_reg": 50.0})], tune=False, seeds=2
    )


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_every_metric_has_an_interval_and_stochastic_models_have_seeds(seeded: EvalResults) -> None:
    for res in seeded.results:
        defined = {m for m, v in res.metrics.items() if v is not None and m != "n_users"}
        assert defined <= set(res.ci95), defined - set(res.ci95)
        for metric, (low, high) in res.ci95.items():
            assert low <= res.metrics[metric] + 1e-9 and res.metrics[metric] <= high + 1e-9, (res.model, metric)
        assert len(res.per_user["users"]) == len(res.per_user["ndcg@10"]) == res.metrics["n_users"]
    als = seeded.result("als")
    assert als.seeds == [42, 43] and len(als.per_seed) == 2 and als.per_seed[0] != als.per_seed[1]
    assert als.metrics["ndcg@10"] == pytest.approx(np.mean([s["ndcg@10"] for s in als.per_seed]))
    assert als.metrics_sd["ndcg@10"] > 0
    assert seeded.result("ease").seeds == [42] and seeded.result("ease").per_seed == []  # deterministic


def test_comparisons_default_to_the_best_classical_baseline(seeded: EvalResults) -> None:
    best = max(seeded.results, key=lambda r: r.metrics["ndcg@10"]).model  # all three are classical
    assert seeded.reference == default_reference(seeded) == best
    rows = {(c.a, c.metric): c for c in seeded.comparisons}
    assert {a for a, _ in rows} == {"popular", "als", "ease"} - {best}
    pop = rows[("popular", "ndcg@10")]
    assert pop.b == best and pop.diff == pytest.approx(
        seeded.result("popular").metrics["ndcg@10"] - seeded.result(best).metrics["ndcg@10"], abs=1e-5
    )
    assert pop.ci95[0] <= pop.diff <= pop.ci95[1]
    assert pop.verdict == ("within noise" if pop.ci95[0] <= 0 <= pop.ci95[1] else "worse")
    again = compare_results(seeded, "popular")
    assert {c.b for c in again.comparisons} == {"popular"}
    with pytest.raises(ConfigError, match="not evaluated"):
        compare_results(seeded, "sasrec")


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_merging_runs_made_a_model_at_a_time(ml_sample: Dataset, seeded: EvalResults, tmp_path: Path) -> None:
    knn = evaluate_models(ml_sample, [("itemknn", {"k_neighbors": 20})], tune=False)
    assert knn.comparisons == []  # one model: nothing to compare
    merged = merge_results([seeded.write_json(tmp_path / "a.json"), knn.write_json(tmp_path / "b.json")], "ease")
    assert [r.model for r in merged.results] == ["popular", "als", "ease", "itemknn"]
    assert {c.a for c in merged.comparisons} == {"popular", "als", "itemknn"}
    assert len(merged.provenance["merged_from"]) == 2


def test_results_record_their_provenance(seeded: EvalResults, tmp_path: Path) -> None:
    raw = json.loads(seeded.write_json(tmp_path / "r.json").read_text())
    prov = raw["provenance"]
    assert {"git_commit", "command", "cores", "load_avg", "wall_s"} <= set(prov)
    assert prov["cores"] >= 1 and prov["wall_s"] >= 0


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_cli_evaluate_with_seeds_and_a_reference(ml_sample: Dataset, tmp_path: Path, monkeypatch) -> None:
    from llmrec import cli

    monkeypatch.setattr("llmrec.data.registry.load_named", lambda name, db=None, **_: ml_sample)
    out = tmp_path / "r.json"
    args = ["evaluate", "--models", "ease,als", "--seeds", "2", "--compare-to", "ease", "--no-tune", "--out", str(out)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    raw = EvalResults.read_json(out)
    assert raw.result("als").seeds == [42, 43] and raw.result("als").ci95["ndcg@10"]
    assert {(c.a, c.b) for c in raw.comparisons} == {("als", "ease")}
    assert "paired differences vs ease" in result.output
    bad = CliRunner().invoke(cli.app, ["evaluate", "--models", "ease", "--compare-to", "als", "--out", str(out)])
    assert bad.exit_code == 2 and "--compare-to" in bad.output


def test_cli_compare_merges_files_and_recomputes(seeded: EvalResults, tmp_path: Path) -> None:
    from llmrec import cli

    a = seeded.write_json(tmp_path / "a.json")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli.app, ["compare", str(a), "--compare-to", "popular", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {c.b for c in EvalResults.read_json(out).comparisons} == {"popular"}
    missing = CliRunner().invoke(cli.app, ["compare", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "not found" in missing.output


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_html_report_shows_intervals_and_the_comparison_table(seeded: EvalResults) -> None:
    from llmrec.eval.report import render_html

    html = render_html(seeded)
    assert f"Paired differences against {seeded.reference}" in html
    low, high = seeded.result("popular").ci95["ndcg@10"]
    assert f"[{low:.4f}, {high:.4f}]" in html
    assert "Error bars: 95% bootstrap interval" in html


def test_clustered_interval_resamples_whole_clusters() -> None:
    # 40 clusters of 5 identical samples: the cluster bootstrap sees 40 units, not 200, so its interval is
    # wider than an interval that (wrongly) treats the 200 samples as independent.
    rng = np.random.default_rng(0)
    per_cluster = rng.integers(0, 2, size=40).astype(float)
    values = np.repeat(per_cluster, 5)
    clusters = np.repeat(np.arange(40), 5)
    low, high = clustered_interval(values, clusters, seed=1)
    assert low <= values.mean() <= high
    naive_low, naive_high = clustered_interval(values, np.arange(200), seed=1)
    assert (high - low) > 1.5 * (naive_high - naive_low)
    assert clustered_interval(values, clusters, seed=1) == [low, high]  # seeded


def test_paired_clustered_comparison_sign_and_noise() -> None:
    clusters = np.repeat(np.arange(100), 3)
    b = np.zeros(300)
    a = np.ones(300)
    better = paired_clustered_comparison(a, b, clusters)
    assert better.diff == 1.0 and better.ci95 == [1.0, 1.0] and better.p_value < 0.001 and better.n_users == 300
    rng = np.random.default_rng(3)
    noise = rng.normal(size=300)
    same = paired_clustered_comparison(noise, noise[::-1].copy(), clusters)
    assert same.ci95[0] < 0 < same.ci95[1] and same.p_value > 0.05
    with pytest.raises(ConfigError):
        paired_clustered_comparison(a, b[:10], clusters)


def test_the_comparisons_table_names_each_baseline_when_they_differ(seeded: EvalResults) -> None:
    from rich.console import Console

    from llmrec.cli import comparisons_table
    from llmrec.eval.results import Comparison

    def render(results: EvalResults) -> str:
        console = Console(width=200, record=True)
        console.print(comparisons_table(results))
        return console.export_text()

    against = compare_results(seeded, "ease")
    one = render(against)
    assert "paired differences vs ease" in one and "als vs ease" not in one
    other = Comparison(a="tiger", b="sasrec", metric="ndcg@10", diff=-0.01, ci95=[-0.02, 0.0], p_value=0.01, n_users=9)
    mixed = render(against.model_copy(update={"comparisons": [*against.comparisons, other]}))
    assert "each model's named baseline" in mixed and "tiger vs sasrec" in mixed and "als vs ease" in mixed
