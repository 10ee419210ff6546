"""llmrec's OpenAI-compatible server, spoken to with plain httpx (the wire format other tools rely on)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llm_support import API_KEY

from required import require

httpx = require("httpx")


@pytest.fixture(scope="module")
def http(openai_server: Any) -> Any:
    with httpx.Client(base_url=openai_server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def test_models_and_auth(http: Any, openai_server: Any, lm: Any) -> None:
    answer = http.get("/v1/models").json()
    assert answer["data"][0]["id"] == lm.model_id
    refused = httpx.get(openai_server.url + "/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_chat_completion_shape(http: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0}
    answer = http.post("/v1/chat/completions", json=body).json()
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] and choice["finish_reason"] in ("stop", "length")
    assert answer["usage"]["completion_tokens"] <= 3 and answer["usage"]["prompt_tokens"] > 5


def test_chat_stream_is_server_sent_events(http: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events)


def test_completions_echo_logprobs(http: Any, lm: Any) -> None:
    texts = ["The capital of France is Paris", "The capital of France is Rome"]
    body = {"prompt": texts, "echo": True, "logprobs": 1, "max_tokens": 0}
    choices = http.post("/v1/completions", json=body).json()["choices"]
    assert [c["text"] for c in choices] == texts
    for choice in choices:
        lp = choice["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert all(v < 0 for v in lp["token_logprobs"][1:])
        assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0
        assert "".join(lp["tokens"]) == choice["text"]
    paris, rome = (sum(c["logprobs"]["token_logprobs"][1:]) for c in choices)
    assert paris > rome


def test_completions_continue_raw_text(http: Any, lm: Any) -> None:
    body = {"prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0, "logprobs": 1}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == lm.complete("1, 2, 3,", max_new_tokens=4)
    assert all(off >= len("1, 2, 3,") for off in choice["logprobs"]["text_offset"])


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
        ("/v1/completions", {"prompt": "x", "n": 9}, "n: "),
        ("/v1/completions", {"prompt": "x", "stream": True, "logprobs": 1}, "stream"),
    ],
)
def test_bad_requests_get_openai_style_errors(http: Any, path: str, body: dict[str, Any], needle: str) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]
