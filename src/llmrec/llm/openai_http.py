"""OpenAI-compatible HTTP backend: any server the user runs (llmrec's own, vLLM, llama.cpp, Ollama, a paid API).

Free text goes through ``POST {base_url}/chat/completions`` (``stream: true`` for server-sent events). Ranking
needs the log-probabilities of *given* text, which the chat API does not return; :meth:`OpenAIChatLM.loglik`
therefore renders the chat prompt itself (Jinja chat template, ChatML by default) and asks
``POST {base_url}/completions`` to echo prompt + continuation with per-token log-probabilities. Only servers that
support ``echo`` with ``logprobs`` can rank (vLLM, llmrec's :mod:`llmrec.llm.server`); others raise
:class:`~llmrec.llm.errors.LMCapabilityError`.

Requests are retried with exponential backoff on 429, 5xx, connection errors and timeouts (``Retry-After`` is
honoured). The API key is sent as ``Authorization: Bearer ...`` and is never logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from llmrec.errors import ConfigError
from llmrec.llm.base import LogLik, Prompt, as_messages
from llmrec.llm.errors import LMCapabilityError, LMError, LMHTTPError, LMOverloadedError, LMUnavailableError

__all__ = ["CHATML_TEMPLATE", "OpenAIChatLM", "OpenAIConfig"]

logger = logging.getLogger(__name__)

API_KEY_ENV = "LLMREC_OPENAI_API_KEY"

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML (Qwen, SmolLM2, many others) with no default system prompt."""

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_OVERLOADED_STATUS = frozenset({429, 503})
_START_HINT = (
    'start it with `python -c "from llmrec.llm.local import LocalLM; from llmrec.llm.server import serve_openai; '
    'serve_openai(LocalLM(), port=PORT)"`, `llama-server -m MODEL.gguf --port PORT` or `vllm serve MODEL --port PORT`'
)


def _key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


class OpenAIConfig(BaseModel):
    """Where the server is and how to talk to it.

    Attributes:
        base_url: The API root, including the version path (as in the OpenAI SDK): ``http://127.0.0.1:8000/v1``.
        api_key: Sent as a Bearer token; read from ``LLMREC_OPENAI_API_KEY`` by default; ``None`` sends none.
        model: Model name sent with every request.
        timeout_s: Seconds to wait for an answer (for streams: between two pieces).
        connect_timeout_s: Seconds to wait for a connection (short, so a stopped server is reported quickly).
        max_retries: Retries after the first attempt on 429/5xx/connection errors/timeouts.
        backoff_s: First retry delay; doubled each retry (with jitter), capped at ``max_backoff_s``.
        max_backoff_s: Longest delay between two attempts (also caps ``Retry-After``).
        chat_template: Jinja chat template used to render prompts for :meth:`OpenAIChatLM.loglik` (the server's
            own template is not reachable through the API); ``None`` = ChatML.
        end_of_turn: Text appended to each continuation in :meth:`OpenAIChatLM.loglik` so the complete reply is
            scored (as :class:`~llmrec.llm.local.LocalLM` does by default); ``None`` scores the bare continuation.
        echo_max_tokens: ``max_tokens`` sent with the echo request. 0 (score only); when a server rejects 0 (vLLM
            does) the client switches to 1 and ignores the generated token (tokens are selected by text offset).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = Field(default_factory=_key_from_env)
    model: str = "default"
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    chat_template: str | None = None
    end_of_turn: str | None = "<|im_end|>"
    echo_max_tokens: int = Field(default=0, ge=0)


class OpenAIChatLM:
    """A :class:`~llmrec.llm.base.LanguageModel` served over the OpenAI HTTP protocol.

    Args:
        config: Server address, key and retry policy.

    The HTTP client is created on first use and reused (keep-alive); :meth:`close` releases it.
    """

    def __init__(self, config: OpenAIConfig | None = None) -> None:
        self.config = config or OpenAIConfig()
        self._client: Any = None
        self._template: Any = None
        self._echo_max_tokens = self.config.echo_max_tokens

    def __repr__(self) -> str:
        return f"OpenAIChatLM(base_url={self.config.base_url!r}, model={self.config.model!r})"

    @property
    def model_id(self) -> str:
        """``openai:<model>@<base_url>``."""
        return f"openai:{self.config.model}@{self.config.base_url.rstrip('/')}"

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError("the OpenAI-compatible backend needs httpx: install llmrec[serve]") from exc
            cfg = self.config
            headers = {"Accept": "application/json"}
            if cfg.api_key is not None:
                headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
            timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
            self._client = httpx.Client(base_url=cfg.base_url.rstrip("/") + "/", headers=headers, timeout=timeout)
        return self._client

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAIChatLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return f"{self.config.base_url.rstrip('/')}/{path}"

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        cfg = self.config
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), cfg.max_backoff_s)
            except ValueError:
                pass
        base = min(cfg.backoff_s * (2**attempt), cfg.max_backoff_s)
        return base * (0.5 + random.random() / 2)

    def _unavailable(self, path: str, exc: Exception) -> LMUnavailableError:
        root = self.config.base_url.rstrip("/")
        hint = _START_HINT.replace("PORT", _port_of(root))
        kind = "timed out" if "Timeout" in type(exc).__name__ else "could not connect"
        return LMUnavailableError(
            f"could not reach {root} ({kind} on /{path} after {self.config.max_retries + 1} attempt(s): "
            f"{type(exc).__name__})",
            fix=f"check that the server is running; {hint}",
        )

    def _http_error(self, path: str, status: int, body: str, retry_after: str | None = None) -> LMHTTPError:
        detail = _error_detail(body)
        root = self.config.base_url.rstrip("/")
        if status in (401, 403):
            msg = f"{root}/{path} refused the request ({status}: {detail}): check the API key ({API_KEY_ENV})"
        elif status in _OVERLOADED_STATUS:
            msg = f"{root}/{path} answered {status} (busy or down) on every attempt: {detail}"
            return LMOverloadedError(msg, status, retry_after=_seconds(retry_after), fix="try again later")
        else:
            msg = f"{root}/{path} answered {status}: {detail}"
        return LMHTTPError(msg, status)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries; the decoded JSON answer."""
        import httpx

        client = self._http()
        attempt = 0
        while True:
            try:
                response = client.post(path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if attempt >= self.config.max_retries:
                    raise self._unavailable(path, exc) from None
                delay = self._delay(attempt, None)
                name = type(exc).__name__
                logger.warning("POST %s failed (%s); retry %d in %.2f s", self._url(path), name, attempt + 1, delay)
            else:
                if response.status_code < 400:
                    try:
                        return dict(response.json())
                    except ValueError as exc:
                        raise LMError(f"{self._url(path)} answered with invalid JSON: {response.text[:200]!r}") from exc
                if response.status_code not in _RETRY_STATUS or attempt >= self.config.max_retries:
                    raise self._http_error(
                        path, response.status_code, response.text, response.headers.get("retry-after")
                    )
                delay = self._delay(attempt, response.headers.get("retry-after"))
                status = response.status_code
                logger.warning("POST %s answered %d; retry %d in %.2f s", self._url(path), status, attempt + 1, delay)
            time.sleep(delay)
            attempt += 1

    def _post_stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST with ``stream: true``; yields the JSON events of the server-sent-event answer.

        Retries happen only before the first event arrives (afterwards a retry would repeat text).
        """
        import httpx

        client = self._http()
        attempt = 0
        started = False
        while True:
            try:
                with client.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code >= 400:
                        text = response.read().decode("utf-8", "replace")
                        if response.status_code not in _RETRY_STATUS or attempt >= self.config.max_retries:
                            raise self._http_error(
                                path, response.status_code, text, response.headers.get("retry-after")
                            )
                        delay = self._delay(attempt, response.headers.get("retry-after"))
                    else:
                        for event in _sse_events(response.iter_lines(), self._url(path)):
                            started = True
                            yield event
                        return
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if started:
                    raise LMError(f"{self._url(path)}: the stream broke off ({type(exc).__name__})") from None
                if attempt >= self.config.max_retries:
                    raise self._unavailable(path, exc) from None
                delay = self._delay(attempt, None)
            logger.warning("stream POST %s failed; retry %d in %.2f s", self._url(path), attempt + 1, delay)
            time.sleep(delay)
            attempt += 1

    # -- the protocol ---------------------------------------------------------------------------------------------

    def _chat_body(
        self, prompt: Prompt, max_new_tokens: int, temperature: float, stop: Sequence[str] | None, stream: bool
    ) -> dict[str, Any]:
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [dict(m) for m in as_messages(prompt)],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> str:
        """The assistant's reply (``POST /chat/completions``)."""
        answer = self._post("chat/completions", self._chat_body(prompt, max_new_tokens, temperature, stop, False))
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LMError(f"{self._url('chat/completions')} answered without choices[0].message.content") from exc
        return str(content or "")

    def stream(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """The reply as text pieces (``POST /chat/completions`` with ``stream: true``, server-sent events)."""
        body = self._chat_body(prompt, max_new_tokens, temperature, stop, True)
        for event in self._post_stream("chat/completions", body):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield str(piece)

    def render(self, prompt: Prompt) -> str:
        """The prompt rendered with the configured chat template, assistant turn opened."""
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            # The same environment transformers renders chat templates in.
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )

            def raise_exception(message: str) -> None:
                raise ConfigError(f"chat template: {message}")

            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.config.chat_template or CHATML_TEMPLATE)
        return str(
            self._template.render(
                messages=[dict(m) for m in as_messages(prompt)], add_generation_prompt=True, bos_token="", eos_token=""
            )
        )

    def loglik(self, prompt: Prompt, continuations: Sequence[str]) -> LogLik:
        """Log-likelihood of each continuation as the reply to ``prompt`` (``POST /completions`` with echo).

        The prompt is rendered with ``config.chat_template``; ``config.end_of_turn`` is appended to each
        continuation. Tokens are attributed to the continuation by their text offset, so the server's tokenizer
        decides the tokens (as it would when generating).

        Raises:
            LMCapabilityError: The server does not return prompt log-probabilities (it cannot rank).
        """
        if not continuations:
            return LogLik(np.zeros(0), np.zeros(0, dtype=np.int64))
        head = self.render(prompt)
        tail = self.config.end_of_turn or ""
        texts = [head + c + tail for c in continuations]
        body = {
            "model": self.config.model,
            "prompt": texts,
            "echo": True,
            "logprobs": 1,
            "max_tokens": self._echo_max_tokens,
            "temperature": 0.0,
        }
        try:
            answer = self._post("completions", body)
        except LMHTTPError as exc:
            if exc.status_code in (400, 422) and body["max_tokens"] == 0:
                # vLLM (and others) reject max_tokens=0: ask for one token, which the offsets below leave out.
                logger.info("%s rejected max_tokens=0 with echo; using max_tokens=1", self.config.base_url)
                self._echo_max_tokens = body["max_tokens"] = 1
                try:
                    answer = self._post("completions", body)
                except LMHTTPError as again:
                    raise self._cannot_rank(str(again)) from again
            elif exc.status_code in (400, 404, 405, 422, 501):
                raise self._cannot_rank(str(exc)) from exc
            else:
                raise
        choices = answer.get("choices")
        if not isinstance(choices, list) or len(choices) != len(texts):
            raise self._cannot_rank(f"expected {len(texts)} choices, got {type(choices).__name__}")
        ordered = sorted(choices, key=lambda c: int(c.get("index", 0)))
        total = np.zeros(len(texts))
        counts = np.zeros(len(texts), dtype=np.int64)
        for i, (choice, text) in enumerate(zip(ordered, texts, strict=True)):
            lp = choice.get("logprobs") or {}
            offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
            if not offsets or not values or len(offsets) != len(values):
                raise self._cannot_rank("choices carry no logprobs.text_offset / token_logprobs")
            for offset, value in zip(offsets, values, strict=True):
                if len(head) <= int(offset) < len(text):
                    if value is None or not math.isfinite(float(value)):
                        raise self._cannot_rank("a continuation token has no log-probability")
                    total[i] += float(value)
                    counts[i] += 1
        return LogLik(total=total, n_tokens=counts)

    def _cannot_rank(self, why: str) -> LMCapabilityError:
        return LMCapabilityError(
            f"{self.config.base_url.rstrip('/')} cannot rank: its /completions did not return prompt log-probabilities "
            f"({why}). Ranking needs a server that supports `echo` with `logprobs` (vLLM, or llmrec's own "
            "llmrec.llm.server); use it for generation only, or rank with LocalLM."
        )


def _sse_events(lines: Iterator[str], url: str) -> Iterator[dict[str, Any]]:
    """JSON payloads of ``data:`` lines until ``data: [DONE]`` (comments, ``event:`` and ``id:`` lines skipped)."""
    for line in lines:
        if not line or line.startswith(":") or not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise LMError(f"{url} sent an event that is not JSON: {data[:200]!r}") from exc
        if isinstance(event, dict) and "error" in event:
            raise LMError(f"{url} reported an error mid-stream: {_error_detail(json.dumps(event))}")
        if isinstance(event, dict):
            yield event


def _error_detail(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].strip() or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if "detail" in data:
            return str(data["detail"])[:300]
    return body[:300]


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` in seconds (an HTTP date, or anything unreadable: ``None``)."""
    try:
        value = float(retry_after) if retry_after else None
    except ValueError:
        return None
    return max(value, 0.0) if value is not None and math.isfinite(value) else None


def _port_of(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        port = urlsplit(url).port
    except ValueError:
        port = None
    return str(port) if port else "PORT"
