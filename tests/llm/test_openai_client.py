"""llmrec's OpenAI-compatible server, spoken to with the official ``openai`` client (what other tools use).

Everything the server offers works through the client (models, chat and completions, plain and streamed, ``n``
choices, usage on a stream, chat log-probabilities), and what it does not offer is refused with an error the
client raises, never silently ignored.
"""

from __future__ import annotations

from typing import Any

import pytest
from llm_support import API_KEY

from required import require

openai = require("openai")

CHAT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(openai_server: Any) -> Any:
    with openai.OpenAI(base_url=openai_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def model(client: Any) -> str:
    return str(client.models.list().data[0].id)


def test_models_and_unknown_model(client: Any, model: str, lm: Any) -> None:
    assert model == lm.model_id
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-nope", messages=CHAT, max_tokens=2)
    # "default" (what llmrec's own client sends unless configured) names the served model.
    answer = client.chat.completions.create(model="default", messages=CHAT, max_tokens=2, temperature=0)
    assert answer.model == model


def test_chat_plain_and_streamed_agree_with_usage_on_the_stream(client: Any, model: str) -> None:
    plain = client.chat.completions.create(model=model, messages=CHAT, max_tokens=4, temperature=0)
    text = plain.choices[0].message.content
    assert text and plain.usage.completion_tokens <= 4
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=CHAT,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_n_choices_are_numbered_and_seeded(client: Any, model: str) -> None:
    kwargs = {"model": model, "messages": CHAT, "max_tokens": 4, "temperature": 1.0, "seed": 3, "n": 2}
    first = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    done = client.completions.create(model=model, prompt=["Red, green,", "One, two,"], max_tokens=2, n=2)
    assert [c.index for c in done.choices] == [0, 1, 2, 3]


def test_chat_logprobs_are_the_generated_tokens(client: Any, model: str) -> None:
    answer = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=1
    )
    content = answer.choices[0].logprobs.content
    assert content and all(t.logprob <= 0 for t in content)
    # Greedy decoding took the most likely token at every step.
    assert all(t.top_logprobs[0].token == t.token for t in content)


def test_completions_stream_equals_the_plain_completion(client: Any, model: str) -> None:
    plain = client.completions.create(model=model, prompt="Red, green,", max_tokens=4, temperature=0)
    pieces = client.completions.create(model=model, prompt="Red, green,", max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in pieces if c.choices) == plain.choices[0].text


def test_echo_logprobs_match_the_in_process_scores(client: Any, model: str, lm: Any) -> None:
    text = "The capital of France is Paris"
    answer = client.completions.create(model=model, prompt=text, echo=True, logprobs=1, max_tokens=0)
    served = answer.choices[0].logprobs.token_logprobs
    local = lm.score_texts([text])[0].logprobs
    assert served[0] is None
    assert served[1:] == pytest.approx(list(local[1:]), abs=1e-4)


@pytest.mark.parametrize(
    ("kind", "kwargs", "needle"),
    [
        ("chat", {"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
        ("chat", {"logprobs": True, "stream": True}, "stream"),
        ("chat", {"logit_bias": {"42": 5}}, "logit_bias"),
        ("completions", {"stream": True, "echo": True}, "stream"),
        ("completions", {"logprobs": 3}, "logprobs"),
        ("completions", {"best_of": 3}, "best_of"),
    ],
)
def test_what_is_not_supported_is_refused(client: Any, model: str, kind: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(openai.BadRequestError, match=needle):
        if kind == "chat":
            client.chat.completions.create(model=model, messages=CHAT, max_tokens=2, **kwargs)
        else:
            client.completions.create(model=model, prompt="Hi", max_tokens=2, **kwargs)
