"""The Pipeline: retrieve -> LM rerank (packaged SmolLM2) -> blend, and its evaluation path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmrec.data.dataset import Dataset
from llmrec.errors import ConfigError, NotFittedError
from llmrec.eval.runner import evaluate_pipeline
from llmrec.llm.fewshot import FewShotConfig
from llmrec.llm.rerank import RerankConfig
from llmrec.models.registry import get_scorer
from llmrec.pipeline import LMSpec, Pipeline, PipelineConfig, RetrieverSpec
from llmrec.query import ANONYMOUS, Query

SMALL = PipelineConfig(retriever=RetrieverSpec(name="itemknn"), candidates=8)


@pytest.fixture(scope="module")
def pipe(ml_sample: Dataset, lm: Any) -> Pipeline:
    return Pipeline(SMALL, lm=lm).fit(ml_sample)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_rerank_is_a_permutation_of_the_retrieved_candidates(pipe: Pipeline, ml_sample: Dataset) -> None:
    users = ["1", "7"]
    retriever = get_scorer("itemknn").fit(ml_sample)
    top = retriever.recommend(users, k=8)
    recs = pipe.recommend(users, k=5)
    assert recs.items.shape == (2, 5)
    for row in range(2):
        assert set(recs.item_idx[row]) <= set(top.item_idx[row])  # nothing from outside the candidates
        assert len(set(recs.item_idx[row])) == 5
        assert np.all(np.diff(recs.scores[row]) <= 0)
    seen = ml_sample.matrix("binary")
    uidx = ml_sample.user_vocab.index(np.array(users))
    assert all(seen[u, i] == 0 for u, row in zip(uidx, recs.item_idx, strict=True) for i in row)


def test_without_rerank_or_with_weight_zero_the_retriever_decides(pipe: Pipeline, ml_sample: Dataset) -> None:
    top = get_scorer("itemknn").fit(ml_sample).recommend(["3"], k=5)
    plain = pipe.recommend(["3"], k=5, rerank=False)
    np.testing.assert_array_equal(plain.item_idx, top.item_idx)
    batch = pipe.rerank_scores(["3"])
    assert np.isfinite(batch.lm_scores).all()
    np.testing.assert_array_equal(batch.final(5, 0.0).item_idx, top.item_idx)
    by_lm = batch.final(8, 1.0).item_idx[0]
    expected = batch.retrieved.item_idx[0][np.argsort(-batch.lm_scores[0], kind="stable")]
    np.testing.assert_array_equal(by_lm, expected)


def test_candidates_and_unknown_users(pipe: Pipeline, ml_sample: Dataset) -> None:
    allowed = tuple(ml_sample.item_vocab.ids[:50])
    recs = pipe.recommend([Query(user="1", candidates=allowed), Query(user="no-such-user", candidates=allowed)], k=3)
    assert set(recs.items.ravel()) <= set(allowed)
    assert (recs.item_idx[1] >= 0).all()  # a stranger gets popular items, reranked on an empty history


def test_history_is_liked_items_in_time_order(pipe: Pipeline, ml_sample: Dataset) -> None:
    u = 0
    mine = (ml_sample.user_idx == u) & (ml_sample.values >= 4.0)
    np.testing.assert_array_equal(pipe.history(u), ml_sample.item_idx[mine])
    assert pipe.history(10_000).size == 0


class _PromptRecorder:
    """The real language model, with every prompt it is asked to score recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prompts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def loglik(self, prompt: Any, continuations: Any) -> Any:
        self.prompts.append(prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt))
        return self.inner.loglik(prompt, continuations)


def test_the_language_model_sees_the_users_recent_liked_history(ml_sample: Dataset, lm: Any) -> None:
    from llmrec.pipeline import item_titles

    recorder = _PromptRecorder(lm)
    config = SMALL.model_copy(update={"rerank": RerankConfig(method="loglik", history=5, calibrate=False)})
    pipe = Pipeline(config, lm=recorder).fit(ml_sample)
    pipe.rerank_scores(["1"])
    titles = item_titles(ml_sample)
    history = pipe.history(int(ml_sample.user_vocab.index(np.array(["1"]))[0]))
    assert len(history) > 10
    recent = [titles[i] for i in history[-5:]]
    asked = "\n".join(recorder.prompts)
    assert all(title in asked for title in recent), (recent, asked[:500])
    older = [titles[i] for i in history[:-5] if titles[i] not in recent]
    assert older and not any(f"- {title}\n" in asked for title in older[:3])  # only the last five are shown


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_warm_computes_a_users_prompt_ahead_and_changes_no_score(pipe: Pipeline) -> None:
    from llmrec.llm.local import clear_prompt_caches

    clear_prompt_caches()
    cold = pipe.rerank_scores(["4"]).lm_scores
    clear_prompt_caches()
    assert pipe.warm(["4"]) > 0
    assert pipe.lm is not None and len(pipe.lm._state().prompt_cache) == 1  # type: ignore[attr-defined]
    np.testing.assert_allclose(pipe.rerank_scores(["4"]).lm_scores, cold, atol=1e-4)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_few_shot_pipeline_runs(ml_sample: Dataset, lm: Any) -> None:
    config = SMALL.model_copy(update={"fewshot": FewShotConfig(shots=1, history=3)})
    pipe = Pipeline(config, lm=lm).fit(ml_sample)
    assert pipe.fewshot is not None
    recs = pipe.recommend(["2"], k=4)
    assert (recs.item_idx >= 0).all()


def test_errors(ml_sample: Dataset, lm: Any) -> None:
    with pytest.raises(NotFittedError):
        Pipeline(SMALL, lm=lm).recommend(["1"])
    fitted = Pipeline(SMALL.model_copy(update={"rerank": None}), lm=lm).fit(ml_sample)
    with pytest.raises(ConfigError, match="candidates"):
        fitted.recommend(["1"], k=9)
    with pytest.raises(ConfigError, match="rerank stage"):
        fitted.recommend(["1"], k=3, rerank=True)
    with pytest.raises(ConfigError, match="no prompt to warm"):
        fitted.warm(["1"])
    with pytest.raises(NotFittedError):
        Pipeline(SMALL, lm=lm).warm(["1"])
    assert fitted.recommend(["1"], k=3).items.shape == (1, 3)


def test_nested_configs_fail_at_validation_with_the_field_named() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no_such_field"):
        LMSpec(backend="openai", openai={"no_such_field": 1})
    with pytest.raises(ValidationError, match="unknown scorer 'nope'"):
        PipelineConfig(retriever={"name": "nope", "config": {"bogus": 1}})
    with pytest.raises(ValidationError, match="bogus"):
        PipelineConfig.model_validate({"retriever": {"name": "ease", "config": {"bogus": 1}}})
    with pytest.raises(ValidationError, match="l2_reg"):
        RetrieverSpec(name="ease", config={"l2_reg": -1})
    assert RetrieverSpec(name="ease", config={"l2_reg": 10.0}).config == {"l2_reg": 10.0}


def test_the_json_schema_shows_each_retriever_and_backend_with_its_real_config() -> None:
    import jsonschema

    from llmrec.models.registry import SCORERS

    schema = PipelineConfig.model_json_schema()
    defs = schema["$defs"]
    variants = {v["properties"]["name"]["const"]: v for v in defs["RetrieverSpec"]["oneOf"]}
    assert set(variants) == set(SCORERS)

    def config_of(variant: dict[str, Any], field: str) -> dict[str, Any]:
        ref = variant["properties"][field]
        return defs[ref["$ref"].split("/")[-1]] if "$ref" in ref else ref

    assert "l2_reg" in config_of(variants["ease"], "config")["properties"]
    assert "components" in config_of(variants["fusion"], "config")["properties"]
    backends = {v["properties"]["backend"]["const"]: v for v in defs["LMSpec"]["oneOf"]}
    assert "base_url" in config_of(backends["openai"], "openai")["properties"]
    # What validates in Python validates against the schema, and a typo fails both.
    good = PipelineConfig(retriever=RetrieverSpec(name="ease", config={"l2_reg": 10.0})).model_dump(mode="json")
    jsonschema.validate(good, schema)
    bad = {**good, "retriever": {"name": "ease", "config": {"bogus": 1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_evaluate_pipeline_reports_retriever_and_rerank_on_the_same_users(ml_sample: Dataset, lm: Any) -> None:
    config = SMALL.model_copy(update={"rerank": RerankConfig(method="yesno")})
    results = evaluate_pipeline(ml_sample, config, k=5, weights=(0.0, 1.0), max_users=6, lm=lm)
    plain, reranked = results.results
    assert plain.model == "itemknn" and reranked.model == "itemknn+rerank:yesno"
    assert plain.metrics["n_users"] == reranked.metrics["n_users"] <= 6
    assert [t["config"]["weight"] for t in reranked.tuning] == [0.0, 1.0]
    assert reranked.config["weight"] in (0.0, 1.0)
    best = max(t["ndcg@5"] for t in reranked.tuning)
    assert reranked.valid_metrics["ndcg@5"] == best
    # The rerank's effect is reported as a paired difference over the same users, with its interval.
    row = next(c for c in results.comparisons if c.metric == "ndcg@5")
    assert (row.a, row.b, results.reference) == (reranked.model, plain.model, plain.model)
    assert row.diff == pytest.approx(reranked.metrics["ndcg@5"] - plain.metrics["ndcg@5"], abs=1e-6)
    assert row.ci95[0] <= row.diff <= row.ci95[1] and "ndcg@5" in reranked.ci95
    assert "sample" in results.split  # 6 of the test users: the report says so


def test_explanations_of_the_final_list_are_grounded(pipe: Pipeline, ml_sample: Dataset) -> None:
    from llmrec.llm.explain import grounding_rate

    recs = pipe.recommend(["1"], k=2)
    explanations = pipe.explain("1", list(recs.items[0]))
    assert [e.item_id for e in explanations] == list(recs.items[0])
    assert grounding_rate(explanations, pipe.explainer.catalogue) == 1.0
    assert all(e.citations for e in explanations)
    stream = pipe.stream_explanation("1", recs.items[0][0])
    assert "".join(stream) == stream.explanation.text
    template_only = Pipeline(SMALL.model_copy(update={"explain_with_lm": False, "rerank": None})).fit(ml_sample)
    assert template_only.explain("1", list(recs.items[0]))[0].source == "template"


def test_a_query_with_a_new_history_folds_it_in(pipe: Pipeline, ml_sample: Dataset) -> None:
    ids = ml_sample.item_vocab.ids
    user = "1"
    liked = list(ids[pipe.history(int(ml_sample.user_vocab.index([user])[0]))])
    # Without the LM: someone known only by a history gets the retriever's scores on that history.
    folded = pipe.recommend([Query(liked=tuple(liked))], k=5, rerank=False)
    direct = pipe.retriever.score_histories([ml_sample.item_vocab.index(liked)])[0]
    direct[ml_sample.item_vocab.index(liked)] = -np.inf
    np.testing.assert_array_equal(folded.item_idx[0], np.argsort(-direct, kind="stable")[:5])
    assert folded.users[0] == ANONYMOUS
    # A different history gives a different list, and nothing of the history, the exclusions or outside the
    # allowed set comes out, with or without the LM.
    other = tuple(ids[[0, 1, 2]])
    allowed = tuple(ids[:300])
    for rerank in (False, True):
        query = Query(liked=other, exclude=(ids[3], ids[4]), candidates=allowed)
        out = set(pipe.recommend([query], k=5, rerank=rerank).items[0])
        assert len(out) == 5
        assert out <= set(allowed)
        assert not out & {*other, ids[3], ids[4]}
    assert set(pipe.recommend([Query(liked=other)], k=5, rerank=False).items[0]) != set(folded.items[0])


def test_news_after_the_fit_changes_a_fitted_users_list_only_by_what_it_adds(ml_sample: Dataset) -> None:
    pipe = Pipeline(SMALL.model_copy(update={"rerank": None})).fit(ml_sample)
    for user in ("1", "7"):
        plain = pipe.recommend([user], k=8).items[0].tolist()
        # Folding in the fitted history alone (a dislike of an item the user never had) reproduces the list.
        unrelated = str(ml_sample.item_vocab.ids[-1])
        assert pipe.recommend([Query(user=user, disliked=(unrelated,))], k=8).items[0].tolist() == plain
        # A new like leaves the list (it is seen now), a dislike of an own item leaves the LM's history.
        liked = plain[0]
        after = pipe.recommend([Query(user=user, liked=(liked,))], k=8).items[0].tolist()
        assert liked not in after and after != plain
        own = pipe.liked_history(Query(user=user))
        assert own and own[0] not in pipe.liked_history(Query(user=user, disliked=(own[0],)))
        assert pipe.liked_history(Query(user=user, liked=(liked,)))[-1] == liked
        # exclude_seen=False lets the fitted items back in.
        assert set(pipe.recommend([Query(user=user, exclude_seen=False)], k=8).items[0]) & set(pipe.seen(user))


def test_a_query_mixes_in_text_scores(pipe: Pipeline, ml_sample: Dataset) -> None:
    wanted = 123
    text = np.zeros(ml_sample.n_items)
    text[wanted] = 100.0
    cold = pipe.recommend([Query(text_scores=text)], k=3, rerank=False)
    assert cold.item_idx[0][0] == wanted  # an empty history: the words decide
    with pytest.raises(ConfigError, match="text_scores"):
        pipe.recommend([Query(text_scores=np.zeros(3))], k=3, rerank=False)
    with pytest.raises(ConfigError, match="more than"):
        pipe.recommend([Query()], k=100, rerank=False)
    with pytest.raises(ConfigError, match="text_weight"):
        Query(text_weight=2.0)


def test_one_batch_mixes_fitted_users_and_folded_histories_row_by_row(pipe: Pipeline, ml_sample: Dataset) -> None:
    ids = ml_sample.item_vocab.ids
    queries = [Query(user="1"), Query(liked=tuple(ids[[5, 6]])), Query(user="no-such-user"), Query(user="3")]
    batch = pipe.recommend(queries, k=5, rerank=False)
    for row, query in enumerate(queries):
        alone = pipe.recommend([query], k=5, rerank=False)
        assert batch.items[row].tolist() == alone.items[0].tolist()
    assert batch.users.tolist() == ["1", ANONYMOUS, "no-such-user", "3"]
