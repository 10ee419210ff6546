"""The web page end to end: Debian's Chromium, driven by Playwright, against `create_app` served by uvicorn.

A person signs in, opens a user, sees explained recommendations, gives a thumbs-down and watches the list change,
chats (the answer streams in under the stated constraints) and likes a chat item. A screenshot of the page is kept
in ``out/test-artifacts/`` (or ``$LLMREC_TEST_ARTIFACTS``). The browser is ``$LLMREC_TEST_CHROMIUM`` or
``chromium`` on PATH (``scripts/chromium.sh`` installs Debian's; ``scripts/test.sh`` runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from api_support import ADMIN, ADMIN_KEY, serve_config
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from llmrec.data.dataset import Dataset
from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app
from llmrec.serve.web import CONTENT_SECURITY_POLICY

ROOT = Path(__file__).resolve().parents[2]
# The first list waits for the retriever's fit and the first chat turn for the catalogue's mention index.
expect.set_options(timeout=60_000)
# Chromium on a machine with no network but loopback: no background requests, a fresh profile, no GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Site:
    """A served app: its address and its service."""

    url: str
    service: RecommenderService
    data: Dataset


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ml_sample: Dataset) -> Iterator[Site]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('web') / 'web.db'}")
    store.ingest(ml_sample, name="web")
    pipeline = {"retriever": {"name": "ease"}, "rerank": None, "explain_with_lm": False}  # template reasons: fast
    config = serve_config("web", chat_text_search=False, pipeline=pipeline)
    service = RecommenderService(store, config)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield Site(f"http://127.0.0.1:{port}", service, ml_sample)
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = os.environ.get("LLMREC_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        pytest.fail("the web page test needs Debian's Chromium. Fix: bash scripts/chromium.sh (scripts/test.sh does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context; fails the test on any script error or console error (a CSP violation too)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None)
    yield page
    context.close()
    # A failed request also shows as a console line; only the wrong-key test expects one (its 401).
    expected = [f for f in failed if f.startswith("401 GET") and f.endswith("/v1/me")]
    assert failed == expected, failed
    assert [p for p in problems if not (expected and "status of 401" in p)] == []


def _artifact(name: str) -> Path:
    folder = Path(os.environ.get("LLMREC_TEST_ARTIFACTS") or ROOT / "out" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _sign_in(page: Page, site: Site, key: str) -> None:
    page.goto(site.url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()


def _item_ids(page: Page) -> list[str]:
    return page.locator("#recs > li.item").evaluate_all("cards => cards.map(c => c.dataset.itemId)")


def test_the_page_is_served_with_a_strict_content_security_policy(site: Site) -> None:
    client = TestClient(create_app(site.service))
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "<script" in response.text and "<script>" not in response.text  # module script from /static, none inline
    assert 'data-api="/v1"' in response.text and "web" in response.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/missing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/v1/me", headers=ADMIN).json()["role"] == "admin"


@pytest.mark.slow  # a real Chromium session
def test_a_person_gets_recommendations_gives_feedback_watches_the_list_change_and_chats(site: Site, page: Page) -> None:
    items = site.data.items.set_index("item_id")
    user = str(site.data.user_vocab.ids[2])
    _sign_in(page, site, ADMIN_KEY)
    expect(page.get_by_test_id("whoami")).to_have_text("signed in as admin")
    page.get_by_label("Choose a user").fill(user)
    page.get_by_role("button", name="Open").click()

    # Ten explained recommendations, none the user has already rated.
    cards = page.locator("#recs > li.item")
    expect(cards).to_have_count(10)
    before = _item_ids(page)
    rated = set(site.data.interactions.loc[site.data.interactions["user_id"] == user, "item_id"])
    assert rated.isdisjoint(before)
    for why in page.locator("#recs .why").all_inner_texts():
        assert why.strip(), "every recommendation carries its explanation"
    assert page.locator("#recs li.new").count() == 0

    # A thumbs-down: stored as the user's interaction, the item leaves the list, a new one comes in, marked.
    disliked = before[0]
    cards.first.get_by_title("Not for me").click()
    expect(page.locator(f'#recs > li[data-item-id="{disliked}"]')).to_have_count(0)
    expect(cards).to_have_count(10)
    expect(page.get_by_test_id("recs-meta")).to_contain_text("updated: 1 left")
    after = _item_ids(page)
    fresh = [i for i in after if i not in before]
    assert len(fresh) == 1
    expect(page.locator("#recs > li.new")).to_have_count(1)
    assert page.locator("#recs > li.new").get_attribute("data-item-id") == fresh[0]
    stored = site.service.user_interactions(user, None)
    assert ("thumbs_down", disliked) in set(zip(stored["event"], stored["item_id"], strict=True))

    # Chat: the answer streams in, honours the constraints, and the state shows what was understood.
    page.get_by_placeholder("something funny").fill("something funny from the 90s, no horror")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#transcript > li.assistant").last
    expect(answer).to_have_attribute("aria-busy", "false")
    chat_items = answer.locator("li.item")
    expect(chat_items.first).to_be_visible()
    shown = chat_items.evaluate_all("cards => cards.map(c => c.dataset.itemId)")
    assert len(shown) >= 3 and disliked not in shown  # the list's thumbs-down holds in the chat too
    for item_id in shown:
        genres, year = items.loc[item_id, "genres"], items.loc[item_id, "year"]
        assert "Comedy" in genres and "Horror" not in genres and 1990 <= year <= 1999, (item_id, genres, year)
    assert answer.locator("p").first.inner_text() != "…"
    chips = page.get_by_test_id("chat-state")
    expect(chips.locator("[data-kind=genre]")).to_have_text(["Comedy"])
    expect(chips.locator("[data-kind=no-genre]")).to_have_text(["no Horror"])

    # Liking a chat item: the state shows it, the user's list drops it (it is now the user's interaction).
    liked_title = chat_items.first.locator(".title").inner_text().rsplit(" (", 1)[0]  # the card adds the year
    assert liked_title in items.loc[shown[0], "title"]
    chat_items.first.get_by_title("I like it").click()
    expect(chips.locator("[data-kind=liked]")).to_contain_text([liked_title])
    expect(page.get_by_test_id("notice")).to_contain_text(liked_title)
    expect(page.locator(f'#recs > li[data-item-id="{shown[0]}"]')).to_have_count(0)

    expect(page.get_by_role("alert")).to_be_hidden()
    shot = _artifact("web_page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.slow  # a real Chromium session
def test_a_user_key_opens_only_its_own_page_and_the_admin_creates_a_user(site: Site, page: Page) -> None:
    client = TestClient(create_app(site.service))
    user = str(site.data.user_vocab.ids[5])
    key = client.post("/v1/keys", json={"user_id": user}, headers=ADMIN).json()["key"]

    # A wrong key: a readable error, no app.
    _sign_in(page, site, "not-a-key")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()

    # A user key: straight to its own user; no user picker, no user creation.
    _sign_in(page, site, key)
    expect(page.get_by_test_id("whoami")).to_have_text(f"signed in as user {user}")
    expect(page.locator("#recs > li.item")).to_have_count(10)
    expect(page.get_by_label("Choose a user")).to_be_hidden()
    expect(page.locator("#new-user")).to_be_hidden()

    # The admin creates a user with a profile: they get the cold-start list at once.
    page.evaluate("sessionStorage.clear()")
    _sign_in(page, site, ADMIN_KEY)
    page.locator("#new-user summary").click()
    page.get_by_label("User id").fill("web-newcomer")
    page.get_by_label("What they like").fill("heist films and 90s comedies")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("user-card")).to_contain_text("heist films")
    expect(page.locator("#recs > li.item")).to_have_count(10)
    expect(page.get_by_test_id("recs-meta")).to_contain_text(re.compile("new user"))
    expect(page.get_by_role("alert")).to_be_hidden()
    assert site.service.get_user("web-newcomer").profile == "heist films and 90s comedies"
