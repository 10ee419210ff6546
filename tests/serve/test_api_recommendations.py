"""Recommendations over HTTP: pipeline choice, filters, explanations, and feedback the very next list reflects."""

from __future__ import annotations

import numpy as np
import pytest
from api_support import ADMIN, Api

from llmrec.models.base import TrainOptions
from llmrec.pipeline import Pipeline, PipelineConfig, RetrieverSpec
from llmrec.query import Query


def _ids(response: object) -> list[str]:
    body = response.json()  # type: ignore[attr-defined]
    return [item["item_id"] for item in body["items"]]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_lists_come_from_the_pipeline_with_the_chosen_retriever(api: Api) -> None:
    user = str(api.data.user_vocab.ids[0])
    for retriever in ("popular", "ease"):
        response = api.client.get(
            f"/v1/users/{user}/recommendations", params={"k": 7, "retriever": retriever}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["retriever"] == retriever and body["known_user"] and not body["reranked"]
        config = PipelineConfig(retriever=RetrieverSpec(name=retriever), rerank=None, candidates=100)
        expected = Pipeline(config).fit(api.data, TrainOptions(seed=42)).recommend([user], k=7).for_user(user)
        assert _ids(response) == [item for item, _ in expected]
        assert [i["rank"] for i in body["items"]] == list(range(1, 8))
        titles = dict(zip(api.data.items["item_id"], api.data.items["title"], strict=True))
        assert all(i["title"] == titles[i["item_id"]] for i in body["items"])
    # POST takes the same options as a body.
    posted = api.client.post(f"/v1/users/{user}/recommendations", json={"k": 7, "retriever": "ease"}, headers=ADMIN)
    assert _ids(posted) == _ids(response)
    refused = api.client.get(f"/v1/users/{user}/recommendations", params={"retriever": "sasrec"}, headers=ADMIN)
    assert refused.status_code == 400 and refused.json()["error"]["fields"][0]["loc"] == ["retriever"]
    too_long = api.client.get(f"/v1/users/{user}/recommendations", params={"k": 101}, headers=ADMIN)
    assert too_long.status_code == 400 and "k" in too_long.json()["error"]["message"]


def test_filters_genres_years_and_excluded_items(api: Api) -> None:
    user = str(api.data.user_vocab.ids[1])
    items = api.data.items.set_index("item_id")
    url = f"/v1/users/{user}/recommendations"
    plain = _ids(api.client.get(url, params={"k": 20}, headers=ADMIN))
    params = {"k": 20, "genres": ["comedy", "Romance"], "exclude_genres": "Drama", "year_min": 1990, "year_max": 1999}
    filtered = api.client.get(url, params=params, headers=ADMIN)
    assert filtered.status_code == 200, filtered.text
    got = _ids(filtered)
    assert len(got) == 20 and got != plain
    for item in got:
        genres = set(items.loc[item, "genres"].split("|"))
        assert genres & {"Comedy", "Romance"} and "Drama" not in genres and 1990 <= items.loc[item, "year"] <= 1999
    without = api.client.get(url, params={"k": 20, "exclude_items": plain[:3]}, headers=ADMIN)
    assert _ids(without) == plain[3:] + _ids(api.client.get(url, params={"k": 23}, headers=ADMIN))[20:]
    unknown = api.client.get(url, params={"genres": "Comedie"}, headers=ADMIN)
    assert unknown.status_code == 400 and unknown.json()["error"]["fields"][0]["loc"] == ["genres"]
    typo = api.client.get(url, params={"kk": 3}, headers=ADMIN)
    assert typo.status_code == 422 and typo.json()["error"]["fields"][0]["loc"] == ["query", "kk"]


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_explanations_are_grounded_in_the_users_history(api: Api) -> None:
    user = str(api.data.user_vocab.ids[2])
    body = api.client.get(f"/v1/users/{user}/recommendations", params={"k": 3, "explain": True}, headers=ADMIN).json()
    history = set(api.data.interactions.loc[api.data.interactions["user_id"] == user, "item_id"])
    for item in body["items"]:
        explanation = item["explanation"]
        assert explanation["grounded"] and explanation["text"] and explanation["source"] == "template"
        cited = {c["item_id"] for c in explanation["citations"] if c["kind"] == "item"}
        assert cited <= history
    assert any(c["kind"] == "item" for item in body["items"] for c in item["explanation"]["citations"])


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_thumbs_down_removes_that_item_and_keeps_the_rest_of_the_list(api: Api) -> None:
    # The feedback path folds in the history the retriever was fitted on: nothing else moves.
    user = str(api.data.user_vocab.ids[7])
    url, params = f"/v1/users/{user}/recommendations", {"k": 10, "retriever": "ease"}
    before = _ids(api.client.get(url, params=params, headers=ADMIN))
    api.client.post("/v1/feedback", json={"user_id": user, "item_id": before[0], "kind": "thumbs_down"}, headers=ADMIN)
    after = _ids(api.client.get(url, params=params, headers=ADMIN))
    assert after[:9] == before[1:] and after[9] not in before


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_feedback_is_reflected_by_the_very_next_list(api: Api) -> None:
    client = api.client
    user = str(api.data.user_vocab.ids[3])
    key = api.user_key(user)
    url = f"/v1/users/{user}/recommendations"
    params = {"k": 10, "retriever": "ease"}
    before = _ids(client.get(url, params=params, headers=key))
    kinds = [("thumbs_down", None), ("seen", None), ("rating", 4.5), ("thumbs_up", None)]
    for item, (kind, value) in zip(before[:4], kinds, strict=True):
        given = client.post("/v1/feedback", json={"item_id": item, "kind": kind, "value": value}, headers=key)
        assert given.status_code == 201 and given.json()["stored"] and given.json()["user_id"] == user, given.text
    after = client.get(url, params=params, headers=key).json()
    assert set(before[:4]).isdisjoint(_ids_of(after)) and after["excluded_recent"] == before[:4]
    # The two liked items are folded into the user's history: the rest of the list re-ranks around them.
    pipe = api.service.pipeline("ease")
    news = Query(user=user, liked=tuple(before[2:4]), disliked=(before[0],), exclude=tuple(before[:4]))
    expected = pipe.recommend([news], 10).items[0].tolist()
    assert _ids_of(after) == expected and _ids_of(after) != before[4:] + _ids_of(after)[6:]
    stored = client.get(f"/v1/users/{user}/interactions", params={"since": 1_600_000_000}, headers=key).json()
    events = {(i["item_id"], i["event"], i["value"]) for i in stored["interactions"]}
    assert events == {(before[0], "thumbs_down", 1.0), (before[1], "seen", 3.0), (before[2], "rating", 4.5),
                      (before[3], "thumbs_up", 5.0)}  # fmt: skip
    # After a refit the feedback is part of the fitted data: still excluded (as seen), no longer "recent".
    assert client.post("/v1/admin/refit", headers=key).status_code == 403
    refit = client.post("/v1/admin/refit", headers=ADMIN)
    assert refit.status_code == 200 and refit.json()["interactions"] == len(api.data) + 4
    again = client.get(url, params=params, headers=key).json()
    assert again["excluded_recent"] == [] and set(before[:4]).isdisjoint(_ids_of(again))


def _ids_of(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        # The spec says a rating needs a value and a mark takes none (one schema per kind): validation errors.
        ({"user_id": "1", "item_id": "1", "kind": "rating"}, 422, ["body", "rating", "value"]),
        ({"user_id": "1", "item_id": "1", "kind": "seen", "value": 1}, 422, ["body", "seen", "value"]),
        ({"user_id": "1", "item_id": "1", "kind": "love"}, 422, ["body", "kind"]),
        # The scale is the served dataset's (in the spec as minimum/maximum), checked by the shared validator.
        ({"user_id": "1", "item_id": "1", "kind": "rating", "value": 9}, 400, ["value"]),
        ({"user_id": "1", "item_id": "no-such-item", "kind": "seen"}, 404, None),
        ({"item_id": "1", "kind": "seen"}, 403, ["body", "user_id"]),  # the admin key has no user: name one
    ],
)
@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_bad_feedback_is_refused_and_stores_nothing(api: Api, body: dict, status: int, loc: list | None) -> None:
    response = api.client.post("/v1/feedback", json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    if loc is not None:
        assert response.json()["error"]["fields"][0]["loc"] == loc
    assert api.service.store.counts(api.service.dataset)["interactions"] == len(api.data)


def test_feedback_for_another_user_is_forbidden(api: Api) -> None:
    me, other = (str(u) for u in api.data.user_vocab.ids[:2])
    key = api.user_key(me)
    response = api.client.post("/v1/feedback", json={"user_id": other, "item_id": "1", "kind": "seen"}, headers=key)
    assert response.status_code == 403 and response.json()["error"]["fields"][0]["loc"] == ["body", "user_id"]
    assert api.client.get(f"/v1/users/{other}/recommendations", headers=key).status_code == 403


def test_new_users_get_the_cold_start_list_and_deleted_items_vanish(api: Api) -> None:
    client = api.client
    assert client.get("/v1/users/ghost/recommendations", headers=ADMIN).status_code == 404
    client.post("/v1/users", json={"user_id": "fresh"}, headers=ADMIN)
    first = client.get("/v1/users/fresh/recommendations", params={"k": 5, "explain": True}, headers=ADMIN).json()
    popularity = api.data.item_popularity
    top = [str(i) for i in api.data.item_vocab.ids[np.argsort(-popularity, kind="stable")[:5]]]
    assert not first["known_user"] and _ids_of(first) == top
    # explain=true always explains: with no history, from each item's own facts.
    assert all(item["explanation"] and item["explanation"]["text"] for item in first["items"])
    client.delete(f"/v1/items/{top[0]}", headers=ADMIN)
    assert top[0] not in _ids_of(client.get("/v1/users/fresh/recommendations", params={"k": 5}, headers=ADMIN).json())


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_a_user_known_only_by_a_profile_gets_recommendations_from_it(api: Api) -> None:
    client = api.client
    client.post("/v1/users", json={"user_id": "scifi-fan", "profile": "I love sci-fi"}, headers=ADMIN)
    body = client.get("/v1/users/scifi-fan/recommendations", params={"k": 5, "explain": True}, headers=ADMIN).json()
    assert len(body["items"]) == 5
    assert all("Sci-Fi" in item["attributes"]["genres"] for item in body["items"]), body["items"]
    assert all(item["explanation"]["text"] for item in body["items"])
    # Titles in a profile are a history: the list follows them and never repeats them.
    client.post("/v1/users", json={"user_id": "toy-fan", "profile": "I loved Toy Story"}, headers=ADMIN)
    toy = client.get("/v1/users/toy-fan/recommendations", params={"k": 5, "explain": True}, headers=ADMIN).json()
    popular = client.get("/v1/users/scifi-fan/recommendations", params={"k": 5, "genres": "Comedy"}, headers=ADMIN)
    assert "1" not in _ids_of(toy) and _ids_of(toy) != _ids_of(popular.json())
    assert any("Toy Story" in item["explanation"]["text"] for item in toy["items"]), toy["items"]
