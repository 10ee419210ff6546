"""Items over HTTP: CRUD (admin), pagination and search (any key), on SQLite and PostgreSQL."""

from __future__ import annotations

from api_support import ADMIN, Api


def test_item_crud_round_trip(api: Api) -> None:
    client = api.client
    new = {"item_id": "new-1", "title": "Quiet Lake (2031)", "text": "a calm film", "attributes": {"year": 2031}}
    created = client.post("/v1/items", json=new, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json() | {"score": None} == new | {"score": None}
    assert client.get("/v1/items/new-1", headers=ADMIN).json()["title"] == "Quiet Lake (2031)"

    again = client.post("/v1/items", json=new, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"

    patched = client.patch(
        "/v1/items/new-1", json={"title": "Quiet Lake", "attributes": {"year": None, "genres": "Drama"}}, headers=ADMIN
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "Quiet Lake" and patched.json()["text"] == "a calm film"
    assert client.get("/v1/items/new-1", headers=ADMIN).json()["attributes"] == {"genres": "Drama"}

    assert client.delete("/v1/items/new-1", headers=ADMIN).json() == {"deleted": "new-1"}
    gone = client.get("/v1/items/new-1", headers=ADMIN)
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
    assert client.delete("/v1/items/new-1", headers=ADMIN).status_code == 404
    assert client.patch("/v1/items/new-1", json={"title": "x"}, headers=ADMIN).status_code == 404


def test_item_list_pages_and_text_search(api: Api) -> None:
    client, items = api.client, api.data.items
    first = client.get("/v1/items", params={"limit": 10}, headers=ADMIN).json()
    assert first["total"] == len(items) and first["next_offset"] == 10
    assert [i["item_id"] for i in first["items"]] == items["item_id"].head(10).tolist()
    second = client.get("/v1/items", params={"limit": 10, "offset": 10}, headers=ADMIN).json()
    assert [i["item_id"] for i in second["items"]] == items["item_id"].iloc[10:20].tolist()

    found = client.get("/v1/items", params={"q": "toy story", "limit": 100}, headers=ADMIN).json()
    low = items["title"].str.lower()
    expected = items.loc[low.str.contains("toy") & low.str.contains("story"), "item_id"].tolist()
    assert expected and [i["item_id"] for i in found["items"]] == expected and found["total"] == len(expected)
    bad = client.get("/v1/items", params={"limit": 0}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["loc"] == ["query", "limit"]


def test_user_keys_read_items_but_cannot_change_them(api: Api) -> None:
    client = api.client
    user = api.user_key(str(api.data.interactions["user_id"].iloc[0]))
    item_id = str(api.data.items["item_id"].iloc[0])
    assert client.get(f"/v1/items/{item_id}", headers=user).status_code == 200
    assert client.get("/v1/items", params={"q": "the"}, headers=user).status_code == 200
    for method, path, body in [
        ("post", "/v1/items", {"item_id": "x"}),
        ("patch", f"/v1/items/{item_id}", {"title": "x"}),
        ("delete", f"/v1/items/{item_id}", None),
    ]:
        response = client.request(method, path, json=body, headers=user)
        assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden", (method, response.text)
    assert client.get(f"/v1/items/{item_id}").status_code == 401
    assert client.get(f"/v1/items/{item_id}", headers=ADMIN).json()["title"] == api.data.items["title"].iloc[0]
