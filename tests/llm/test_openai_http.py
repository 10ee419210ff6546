"""The OpenAI-compatible client against real servers on loopback: llmrec's own server (over the packaged model)
and a scripted one for failures. No mocks: every request crosses a socket."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import numpy as np
import pytest
from llm_support import API_KEY, ScriptedServer
from pydantic import SecretStr

from llmrec.errors import LlmrecError
from llmrec.llm.base import LanguageModel
from llmrec.llm.errors import LMCapabilityError, LMHTTPError, LMUnavailableError
from llmrec.llm.openai_http import OpenAIChatLM, OpenAIConfig
from required import require

require("httpx")

PROMPT = "I enjoyed Heat (1995) and Casino (1995). Name one more movie I would like."
TITLES = ["Goodfellas (1990)", "Toy Story (1995)", "Babe (1995)", "Up"]


@pytest.fixture(scope="module")
def client(lm: Any, openai_server: Any) -> Any:
    config = OpenAIConfig(
        base_url=openai_server.url + "/v1",
        api_key=SecretStr(API_KEY),
        model=lm.model_id,
        chat_template=lm.chat_template,
        end_of_turn=lm.end_of_turn_text,
        max_retries=0,
    )
    with OpenAIChatLM(config) as http_lm:
        yield http_lm


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_protocol(client: OpenAIChatLM) -> None:
    assert isinstance(client, LanguageModel)
    assert client.model_id.startswith("openai:SmolLM2-135M-Instruct.Q4_1@http://127.0.0.1:")


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_generate_matches_the_local_model(client: OpenAIChatLM, lm: Any) -> None:
    text = client.generate("Name three colors.", max_new_tokens=8)
    assert text == lm.generate("Name three colors.", max_new_tokens=8)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_stream_pieces_join_to_generate(client: OpenAIChatLM, lm: Any) -> None:
    pieces = list(client.stream("Name three colors.", max_new_tokens=8))
    assert len(pieces) > 1
    assert "".join(pieces) == lm.generate("Name three colors.", max_new_tokens=8)


def test_stop_strings_over_http(client: OpenAIChatLM, lm: Any) -> None:
    full = lm.generate("Name three colors.", max_new_tokens=8)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert client.generate("Name three colors.", max_new_tokens=8, stop=[stop]) == full[: full.index(stop)]


def test_loglik_ranks_like_the_local_model(client: OpenAIChatLM, lm: Any) -> None:
    remote = client.loglik(PROMPT, TITLES)
    local = lm.loglik(PROMPT, TITLES)
    np.testing.assert_allclose(remote.total, local.total, atol=1e-3)
    assert remote.n_tokens.tolist() == local.n_tokens.tolist()
    assert np.argsort(-remote.mean).tolist() == np.argsort(-local.mean).tolist()


def test_server_down_is_a_typed_error_fast() -> None:
    port = _closed_port()
    down = OpenAIChatLM(OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.05))
    started = time.perf_counter()
    expected = rf"could not reach http://127.0.0.1:{port}/v1 .*Fix: check that the server is running"
    with pytest.raises(LMUnavailableError, match=expected):
        down.generate("hi")
    with pytest.raises(LMUnavailableError):
        list(down.stream("hi"))
    assert time.perf_counter() - started < 3.0
    assert issubclass(LMUnavailableError, LlmrecError)


def test_retries_on_503_then_succeeds(scripted: ScriptedServer) -> None:
    scripted.script.fail = 2
    lm = OpenAIChatLM(OpenAIConfig(base_url=scripted.url + "/v1", api_key=None, max_retries=3, backoff_s=0.01))
    assert lm.generate("hi") == "ok after retry"
    assert len(scripted.script.requests) == 3
    assert all(r["path"] == "/v1/chat/completions" for r in scripted.script.requests)


def test_gives_up_after_max_retries_and_honours_retry_after(scripted: ScriptedServer) -> None:
    scripted.script.fail, scripted.script.status, scripted.script.retry_after = 10, 429, "0"
    lm = OpenAIChatLM(OpenAIConfig(base_url=scripted.url + "/v1", max_retries=2, backoff_s=5.0))
    started = time.perf_counter()
    with pytest.raises(LMHTTPError) as err:
        lm.generate("hi")
    assert err.value.status_code == 429 and "busy, try later" in str(err.value)
    assert isinstance(err.value, LMUnavailableError) and err.value.retry_after == 0.0  # the API answers 503
    assert len(scripted.script.requests) == 3
    assert time.perf_counter() - started < 2.0  # Retry-After: 0 overrides the 5 s backoff


def test_client_errors_are_not_retried_and_cannot_rank_is_typed(scripted: ScriptedServer) -> None:
    scripted.script.final_status = 404
    lm = OpenAIChatLM(OpenAIConfig(base_url=scripted.url + "/v1", max_retries=3, backoff_s=0.01))
    with pytest.raises(LMHTTPError) as err:
        lm.generate("hi")
    assert err.value.status_code == 404 and len(scripted.script.requests) == 1
    with pytest.raises(LMCapabilityError, match="cannot rank.*echo"):
        lm.loglik("hi", ["a", "b"])


def test_api_key_is_sent_as_bearer_and_never_logged(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-do-not-leak-1234"
    monkeypatch.setenv("LLMREC_OPENAI_API_KEY", secret)
    config = OpenAIConfig(base_url=scripted.url + "/v1", max_retries=2, backoff_s=0.01)
    assert config.api_key is not None and config.api_key.get_secret_value() == secret
    scripted.script.fail = 1
    lm = OpenAIChatLM(config)
    with caplog.at_level(logging.DEBUG):
        assert lm.generate("hi") == "ok after retry"
    assert scripted.script.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert any("retry" in r.getMessage() for r in caplog.records)  # the retry was logged ...
    assert secret not in caplog.text  # ... without the key
    assert secret not in repr(config) and secret not in repr(lm)
    scripted.script.final_status = 401
    with pytest.raises(LMHTTPError) as err:
        OpenAIChatLM(config).generate("hi")
    assert "LLMREC_OPENAI_API_KEY" in str(err.value) and secret not in str(err.value)


def test_wrong_key_is_refused_by_the_server(openai_server: Any) -> None:
    bad = OpenAIChatLM(OpenAIConfig(base_url=openai_server.url + "/v1", api_key=SecretStr("wrong"), max_retries=0))
    with pytest.raises(LMHTTPError) as err:
        bad.generate("hi", max_new_tokens=2)
    assert err.value.status_code == 401 and "wrong" not in str(err.value)


def test_render_uses_chatml_or_the_given_template(lm: Any) -> None:
    plain = OpenAIChatLM(OpenAIConfig(api_key=None))
    assert plain.render("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    same = OpenAIChatLM(OpenAIConfig(api_key=None, chat_template=lm.chat_template))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert same.render(messages) == lm.render(messages)  # type: ignore[arg-type]
    assert same.render("hi") == lm.render("hi")


def test_sse_parsing_skips_comments_and_stops_at_done() -> None:
    from llmrec.llm.openai_http import _sse_events

    lines = [": keep-alive", "event: message", 'data: {"a": 1}', "", "id: 3", 'data:{"a": 2}', "data: [DONE]", "x"]
    assert list(_sse_events(iter(lines), "u")) == [{"a": 1}, {"a": 2}]
    with pytest.raises(LlmrecError, match="mid-stream"):
        list(_sse_events(iter(['data: {"error": {"message": "boom"}}']), "u"))
