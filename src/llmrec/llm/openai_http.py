"""OpenAI-compatible HTTP backend: any server the user runs (llmrec's own, vLLM, llama.cpp, Ollama, a paid API).

Free text goes through ``POST {base_url}/chat/completions`` (``stream: true`` for server-sent events). Ranking
needs the log-probabilities of *given* text, which the chat API does not return; :meth:`OpenAIChatLM.loglik`
therefore renders the chat prompt itself (Jinja chat template, ChatML by default) and asks
``POST {base_url}/completions`` to echo prompt + continuation with per-token log-probabilities. Only servers that
support ``echo`` with ``logprobs`` can rank (vLLM, llama.cpp's llama-cpp-python server, llmrec's
:mod:`llmrec.llm.server`); others raise :class:`~llmrec.llm.errors.LMCapabilityError`.

Servers differ in how they answer ``echo``, so before the first ranking the client runs a calibration probe
(:meth:`OpenAIChatLM.calibrate`, once per client): it scores a reply that copies a sentence from the prompt with one
word changed. On a server whose log-probabilities are aligned with the tokens, the copied tokens are near-certain
and the changed word is the least likely token; a server that reports each value one position off (llama-cpp-python
0.3.x on a prompt that does not start with the model's BOS token) fails that test, and the client refuses to rank
with it rather than rank silently wrong. The probe also learns whether ``max_tokens: 0`` means "no generation" or
"unlimited" (llama-cpp-python), whether ``text_offset`` can be trusted to find the reply's tokens (else they are
found by their text, from the end), and whether the server takes several prompts in one request.

Requests are retried with exponential backoff on 429, 5xx, connection errors and timeouts (``Retry-After`` is
honoured). The API key is sent as ``Authorization: Bearer ...`` and is never logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from llmrec.errors import ConfigError
from llmrec.llm.base import LogLik, Prompt, as_messages
from llmrec.llm.errors import LMCapabilityError, LMError, LMHTTPError, LMOverloadedError, LMUnavailableError

__all__ = ["CHATML_TEMPLATE", "EchoProbe", "OpenAIChatLM", "OpenAIConfig"]

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
        echo_max_tokens: ``max_tokens`` sent with the echo requests. ``None`` (default): measured by the calibration
            probe, 0 where the server honours it as "score only" (llmrec's server), else 1 and the generated token
            is left out (vLLM rejects 0; llama-cpp-python reads 0 as "unlimited"). 0 or 1 skips that measurement.
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
    echo_max_tokens: int | None = Field(default=None, ge=0, le=1)


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
        self._probe: EchoProbe | None = None

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

    def _post(self, path: str, body: dict[str, Any], *, retries: int | None = None) -> dict[str, Any]:
        """POST JSON with retries (``config.max_retries`` unless ``retries`` says); the decoded JSON answer."""
        import httpx

        max_retries = self.config.max_retries if retries is None else retries
        client = self._http()
        attempt = 0
        while True:
            try:
                response = client.post(path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if attempt >= max_retries:
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
                if response.status_code not in _RETRY_STATUS or attempt >= max_retries:
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
        continuation. The server's tokenizer decides the tokens (as it would when generating); the reply's tokens
        are found by their text offset, or by their text from the end where the probe found the offsets unusable.
        The first call runs the calibration probe (:meth:`probe`).

        Raises:
            LMCapabilityError: The server does not return prompt log-probabilities, or returns them misaligned
                (the probe's verdict): it cannot rank, or not correctly.
        """
        if not continuations:
            return LogLik(np.zeros(0), np.zeros(0, dtype=np.int64))
        probe = self.probe()
        if not probe.aligned:
            raise probe.refusal()
        head = self.render(prompt)
        tail = self.config.end_of_turn or ""
        texts = [head + c + tail for c in continuations]
        echoes = self._echo_all(texts, probe)
        total = np.zeros(len(texts))
        counts = np.zeros(len(texts), dtype=np.int64)
        for i, (echo, text) in enumerate(zip(echoes, texts, strict=True)):
            _, values = self._reply(echo, text, len(head), probe.attribution)
            total[i] = sum(values)
            counts[i] = len(values)
        return LogLik(total=total, n_tokens=counts)

    # -- the calibration probe ------------------------------------------------------------------------------------

    def probe(self) -> EchoProbe:
        """How this server answers ``echo`` + ``logprobs``, measured once per client (see the module docstring).

        Sends the probe text (:data:`PROBE_ASK` rendered as the prompt, :data:`PROBE_REPLY` as the reply), then,
        when the values are aligned, asks once with ``max_tokens: 0`` (generation cut by a stop string, in case the
        server reads 0 as "unlimited") and once with two prompts in one request.

        Raises:
            LMCapabilityError: The server returns no prompt log-probabilities at all.
        """
        if self._probe is None:
            self._probe = self._run_probe()
            logger.info("%s: %s", self.config.base_url, self._probe.describe())
        return self._probe

    def _run_probe(self) -> EchoProbe:
        head = self.render(PROBE_ASK)
        text = head + PROBE_REPLY + (self.config.end_of_turn or "")
        fixed = self.config.echo_max_tokens
        echo, max_tokens = self._probe_echo(text, 1 if fixed is None else fixed)
        attribution: Attribution = "offsets" if _offsets_match(echo, text) else "tokens"
        strings, values = self._reply(echo, text, len(head), attribution)
        copied, shift = _alignment(strings, values, PROBE_REPLY, PROBE_SURPRISE)
        if copied is None:
            raise self._cannot_rank(f"the probe reply's tokens {strings!r} do not spell {PROBE_REPLY!r}")
        aligned = shift == 0 and copied > COPY_FLOOR
        batch = False
        if aligned:
            if fixed is None and self._zero_is_honoured(text, len(echo.tokens) - (echo.generated or 0)):
                max_tokens = 0
            batch = self._batch_is_honoured(text, max_tokens, sum(values), len(head), attribution)
        return EchoProbe(
            server=self.config.base_url.rstrip("/"),
            aligned=aligned,
            copied_median=copied,
            shift=shift,
            first_is_null=bool(echo.values) and echo.values[0] is None,
            attribution=attribution,
            echo_max_tokens=max_tokens,
            batch=batch,
        )

    def _probe_echo(self, text: str, max_tokens: int) -> tuple[_Echo, int]:
        """The probe text's echo and the ``max_tokens`` that got it: a server that rejects 0 (vLLM) gets 1."""
        try:
            return self._echo_one(text, max_tokens), max_tokens
        except LMCapabilityError as exc:
            if isinstance(exc.__cause__, LMHTTPError) and exc.__cause__.status_code in (400, 422) and max_tokens == 0:
                logger.info("%s rejected max_tokens=0 with echo; using max_tokens=1", self.config.base_url)
                return self._echo_one(text, 1), 1
            raise

    def _zero_is_honoured(self, text: str, prompt_entries: int) -> bool:
        """Whether ``max_tokens: 0`` with echo generates nothing (llama-cpp-python reads 0 as "unlimited").

        Stop strings end, after a token or two, what a server that reads 0 as "unlimited" starts.
        """
        body = {**self._echo_body(text, 0), "stop": ["\n", " "]}
        try:
            answer = self._post("completions", body, retries=0)
            echo = _echoes(answer, 1, _generated(answer))[0]
        except LMError:
            return False
        choice = (answer.get("choices") or [{}])[0]
        echoed = str(choice.get("text") or "") if isinstance(choice, dict) else ""
        if echo.generated or len(echoed) > len(text) or len(echo.tokens) > prompt_entries:
            logger.info("%s reads max_tokens=0 as unlimited; scoring with max_tokens=1", self.config.base_url)
            return False
        return True

    def _batch_is_honoured(self, text: str, max_tokens: int, expected: float, start: int, how: Attribution) -> bool:
        """Whether two prompts in one request come back as two choices with the probe's scores.

        llama-cpp-python's server takes one prompt per request (it answers a list of two with a 500).
        """
        body = self._echo_body([text, text], max_tokens)
        try:
            echoes = _echoes(self._post("completions", body, retries=0), 2, None)
            sums = [sum(self._reply(echo, text, start, how)[1]) for echo in echoes]
        except LMError:
            return False
        return all(abs(v - expected) <= 1e-3 for v in sums)

    # -- echo requests ---------------------------------------------------------------------------------------------

    def _echo_body(self, prompt: str | list[str], max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "prompt": prompt,
            "echo": True,
            "logprobs": 1,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }

    def _echo_one(self, text: str, max_tokens: int) -> _Echo:
        answer = self._post_echo(self._echo_body(text, max_tokens))
        return _echoes(answer, 1, _generated(answer), self._cannot_rank)[0]

    def _echo_all(self, texts: list[str], probe: EchoProbe) -> list[_Echo]:
        """One echo per text: in one request where the server takes several prompts, else one request each."""
        if len(texts) == 1 or not probe.batch:
            return [self._echo_one(text, probe.echo_max_tokens) for text in texts]
        answer = self._post_echo(self._echo_body(texts, probe.echo_max_tokens))
        return _echoes(answer, len(texts), None, self._cannot_rank)

    def _post_echo(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._post("completions", body)
        except LMHTTPError as exc:
            if exc.status_code in (400, 404, 405, 422, 501):
                raise self._cannot_rank(str(exc)) from exc
            raise

    def _reply(self, echo: _Echo, text: str, start: int, how: Attribution) -> tuple[list[str], list[float]]:
        """Token texts and log-probabilities of ``text[start:]`` (the reply) in an echo."""
        try:
            keep = _reply_entries(echo, text, start, how)
        except ValueError as exc:
            raise self._cannot_rank(str(exc)) from None
        values = [echo.values[k] for k in keep]
        if not keep or any(v is None or not math.isfinite(v) for v in values):
            raise self._cannot_rank("a continuation token has no log-probability")
        return [echo.tokens[k] for k in keep], [float(v) for v in values if v is not None]

    def _cannot_rank(self, why: str) -> LMCapabilityError:
        return LMCapabilityError(
            f"{self.config.base_url.rstrip('/')} cannot rank: its /completions did not return prompt log-probabilities "
            f"({why}). Ranking needs a server that supports `echo` with `logprobs` (vLLM, llama-cpp-python's server, "
            "or llmrec's own llmrec.llm.server); use it for generation only, or rank with LocalLM."
        )


# -- the calibration probe: what it sends and how it judges --------------------------------------------------------

PROBE_ASK = "Repeat exactly: Copper lanterns drift over quiet marble canyons at dawn."
"""The probe's prompt (rendered with the chat template, as a ranking prompt is)."""
PROBE_REPLY = "Copper lanterns drift over quiet marble bicycles at dawn."
"""The probe's reply: the sentence copied with one word changed (:data:`PROBE_SURPRISE`)."""
PROBE_SURPRISE = "bicycles"
"""The changed word: on an aligned server the least likely token of the reply."""
COPY_FLOOR = -3.0
"""Lowest median log-probability of the copied tokens an aligned server may report. Measured in-process on
SmolLM2-135M: aligned -0.1 (the changed word -17.6); the same values read one position late: -12 to -16."""

Attribution = Literal["offsets", "tokens"]


@dataclass(frozen=True)
class EchoProbe:
    """What the calibration probe measured on a server (see :meth:`OpenAIChatLM.probe`).

    Attributes:
        server: The API root probed.
        aligned: Whether the log-probabilities belong to the tokens they are reported for (ranking allowed).
        copied_median: Median log-probability of the copied tokens (near 0 when aligned).
        shift: Position of the least likely reply token relative to the changed word (0 when aligned).
        first_is_null: Whether ``token_logprobs[0]`` is null, as in the OpenAI API.
        attribution: ``offsets`` (``text_offset`` matches the text) or ``tokens`` (llama-cpp-python leaves special
            tokens out of its offsets, so the reply's tokens are found by their text, from the end).
        echo_max_tokens: ``max_tokens`` sent with echo requests (0 only where it means "no generation").
        batch: Whether several prompts go in one request.
    """

    server: str
    aligned: bool
    copied_median: float
    shift: int
    first_is_null: bool
    attribution: Attribution
    echo_max_tokens: int
    batch: bool

    def describe(self) -> str:
        """One line for logs and error messages."""
        verdict = "aligned" if self.aligned else "NOT aligned"
        return (
            f"echo log-probabilities {verdict} (copied tokens' median {self.copied_median:.2f}, least likely token "
            f"{self.shift:+d} from the changed word; first null: {self.first_is_null}); reply tokens by "
            f"{self.attribution}; max_tokens {self.echo_max_tokens}; batched prompts: {self.batch}"
        )

    def refusal(self) -> LMCapabilityError:
        """The error :meth:`OpenAIChatLM.loglik` raises on a misaligned server."""
        return LMCapabilityError(
            f"{self.server} reports prompt log-probabilities that are not aligned with their tokens, so ranking with "
            f"it would be silently wrong (calibration probe: {self.describe()}; an aligned server gives a median "
            f"above {COPY_FLOOR} and a shift of 0)",
            fix="llama-cpp-python's server reads each value one position late unless the prompt starts with the "
            "model's BOS token: use a chat_template that starts with it (ChatML models whose BOS is <|im_start|>, "
            "such as SmolLM2, do), or rank through vLLM, llmrec.llm.server, or LocalLM in-process",
        )


@dataclass(frozen=True)
class _Echo:
    """One choice of an echo answer: per-token texts, offsets and log-probabilities."""

    tokens: list[str]
    offsets: list[int]
    values: list[float | None]
    generated: int | None  # generated tokens at the end (usage.completion_tokens), when known for this choice


def _generated(answer: dict[str, Any]) -> int | None:
    usage = answer.get("usage")
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int) else None


def _echoes(
    answer: dict[str, Any], n: int, generated: int | None, error: Callable[[str], LMError] = LMError
) -> list[_Echo]:
    """The ``n`` choices of an echo answer, in prompt order (``error(why)`` is raised when they are unusable)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else type(choices).__name__
        raise error(f"expected {n} choices, got {got}")
    echoes = []
    for choice in sorted(choices, key=lambda c: int(c.get("index", 0))):
        lp = choice.get("logprobs") or {}
        tokens, offsets, values = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
        if not offsets or not values or not tokens or not len(offsets) == len(values) == len(tokens):
            raise error("choices carry no logprobs.tokens / text_offset / token_logprobs")
        floats = [None if v is None else float(v) for v in values]
        echoes.append(_Echo([str(t) for t in tokens], [int(o) for o in offsets], floats, generated))
    return echoes


def _offsets_match(echo: _Echo, text: str) -> bool:
    """Whether each token inside ``text`` sits at its ``text_offset`` and together they spell ``text``."""
    inside = [(t, o) for t, o in zip(echo.tokens, echo.offsets, strict=True) if o < len(text)]
    spelled = "".join(t for t, _ in inside)
    return spelled == text and all(text.startswith(t, o) for t, o in inside)


def _reply_entries(echo: _Echo, text: str, start: int, how: Attribution) -> list[int]:
    """Indices of the echo's entries that make ``text[start:]``.

    ``offsets``: the entries whose offset falls in the reply. ``tokens``: the generated entries are dropped from
    the end (``usage.completion_tokens``), then entries are taken from the end until their texts spell the reply,
    with or without its trailing special token (llama-cpp-python prints special tokens as empty strings).
    """
    if how == "offsets":
        return [k for k, off in enumerate(echo.offsets) if start <= off < len(text)]
    if echo.generated is None:
        raise ValueError("the answer has no usage.completion_tokens and its text_offset does not match the text")
    reply = text[start:]
    end = len(echo.tokens) - echo.generated
    spelled = ""
    for k in range(end - 1, -1, -1):
        spelled = echo.tokens[k] + spelled
        if _spells(spelled, reply):
            return list(range(k, end))
        if len(spelled) > len(reply):
            break
    raise ValueError(f"the echoed tokens do not end with the reply {reply[:60]!r}")


def _spells(spelled: str, reply: str) -> bool:
    """Whether token texts ``spelled`` make ``reply``, or ``reply`` without its trailing special token."""
    if spelled == reply:
        return True
    bare = reply[: reply.rfind("<|")] if reply.endswith("|>") and "<|" in reply else None
    return bool(spelled) and spelled == bare


def _alignment(strings: list[str], values: list[float], reply: str, surprise: str) -> tuple[float | None, int]:
    """(median log-probability of the copied tokens, position of the least likely token minus the changed word's).

    The first reply token (nothing to copy yet), the changed word and the token after it are left out of the
    median. ``(None, 0)`` when the token texts do not spell the reply (its words cannot be located).
    """
    where = reply.find(surprise)
    ends = np.cumsum([len(s) for s in strings])
    hits = np.nonzero(ends > where)[0]
    if where < 0 or not len(hits) or not "".join(strings).startswith(reply[: where + len(surprise)]):
        return None, 0
    changed = int(hits[0])
    lowest = 1 + int(np.argmin(values[1:])) if len(values) > 1 else 0
    copied = [v for k, v in enumerate(values) if k not in (0, changed, changed + 1)]
    return (statistics.median(copied) if copied else None), lowest - changed


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
