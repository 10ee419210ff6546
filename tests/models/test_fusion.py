import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.data.splits import leave_last_out
from llmrec.errors import ConfigError
from llmrec.eval.runner import evaluate_models
from llmrec.models import TrainOptions, get_scorer
from llmrec.models.fusion import Fusion, _normalise, weight_grid

COMPONENTS = [{"name": "itemknn", "config": {"k_neighbors": 20}}, {"name": "popular"}]


def test_weight_grid_covers_the_simplex() -> None:
    grid = weight_grid(2, 0.1)
    assert len(grid) == 11 and all(sum(w) == pytest.approx(1.0) for w in grid)
    assert len(weight_grid(3, 0.25)) == 15


def test_normalisation_keeps_each_components_order() -> None:
    scores = np.array([[3.0, 1.0, 2.0, -np.inf]])
    z = _normalise(scores, "weighted", 60)
    assert list(np.argsort(-z[0])[:3]) == [0, 2, 1]
    rrf = _normalise(scores, "rrf", 60)
    np.testing.assert_allclose(rrf[0], [1 / 61, 1 / 63, 1 / 62, 1 / 64])


@pytest.mark.parametrize("method", ["weighted", "rrf"])
def test_all_weight_on_one_component_reproduces_it(ml_sample: Dataset, method: str) -> None:
    comps = [{**COMPONENTS[0], "weight": 1.0}, {**COMPONENTS[1], "weight": 0.0}]
    fused = get_scorer("fusion", components=comps, method=method).fit(ml_sample, TrainOptions(seed=1))
    knn = get_scorer("itemknn", k_neighbors=20).fit(ml_sample)
    users = ml_sample.user_vocab.ids[:10]
    np.testing.assert_array_equal(fused.recommend(users, k=10).item_idx, knn.recommend(users, k=10).item_idx)


def test_mixed_weights_change_the_ranking(ml_sample: Dataset) -> None:
    users = ml_sample.user_vocab.ids[:20]
    a = get_scorer("fusion", components=[{**COMPONENTS[0], "weight": 1.0}, {**COMPONENTS[1], "weight": 0.0}])
    b = get_scorer("fusion", components=[{**COMPONENTS[0], "weight": 0.2}, {**COMPONENTS[1], "weight": 0.8}])
    ra = a.fit(ml_sample).recommend(users, k=10).item_idx
    rb = b.fit(ml_sample).recommend(users, k=10).item_idx
    assert (ra != rb).any()


def test_weights_are_searched_on_validation_without_refits(ml_sample: Dataset) -> None:
    split = leave_last_out(ml_sample)
    fit, targets = split.fit_data("valid"), split.valid
    users = np.unique(targets.user_idx)
    truth = targets.matrix("binary")[users]
    config, tried = Fusion.search_config(
        {"components": COMPONENTS}, fit, fit.user_vocab.ids[users], truth, k=10, options=TrainOptions()
    )
    assert len(tried) == len(weight_grid(2, 0.1))
    best = max(tried, key=lambda t: t["ndcg@10"])
    assert [c["weight"] for c in config["components"]] == best["config"]["weights"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_runner_reports_fusion_with_its_chosen_weights_and_label(ml_sample: Dataset) -> None:
    results = evaluate_models(ml_sample, [("fusion", {"components": COMPONENTS}, "knn+pop")], k=10)
    res = results.result("knn+pop")
    assert len(res.tuning) == 11 and sum(c["weight"] for c in res.config["components"]) == pytest.approx(1.0)
    assert res.valid_metrics["ndcg@10"] == pytest.approx(max(t["ndcg@10"] for t in res.tuning))


def test_bad_fusion_configs() -> None:
    with pytest.raises(ConfigError, match="at least two"):
        get_scorer("fusion", components=[{"name": "ease"}])
    with pytest.raises(ConfigError, match="another fusion"):
        get_scorer("fusion", components=[{"name": "fusion"}, {"name": "ease"}])
