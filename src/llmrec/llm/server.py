"""A small OpenAI-compatible HTTP server over any :class:`~llmrec.llm.base.LanguageModel`.

It lets other tools use llmrec's local model (anything that speaks the OpenAI protocol), and it is the real
server the HTTP client's tests run against. Endpoints:

- ``GET /v1/models``: the one model served.
- ``POST /v1/chat/completions``: ``generate``; ``stream: true`` answers with server-sent events.
- ``POST /v1/completions``: raw-text continuation, and ``echo`` + ``logprobs`` (per-token log-probabilities of
  the prompt itself), which is what ranking by likelihood needs. Raw text and log-probabilities need a model
  that offers them (:class:`~llmrec.llm.local.LocalLM` does: ``complete`` and ``score_texts``); otherwise the
  request is answered 400 with an OpenAI-style error.

Set ``api_key`` to require ``Authorization: Bearer <key>``. Bind to loopback unless you mean to share the model.
"""

import hmac
import inspect
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import LlmrecError
from llmrec.llm.base import LanguageModel, Message

__all__ = [
    "BackgroundServer",
    "TextCompleter",
    "TextScorer",
    "create_openai_app",
    "serve_openai",
    "start_openai_server",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class TextScorer(Protocol):
    """A model that returns per-token log-probabilities of raw text (for ``echo`` + ``logprobs``)."""

    def score_texts(self, texts: Sequence[str]) -> list[Any]:
        """One :class:`~llmrec.llm.local.TextScores` per text."""
        ...


@runtime_checkable
class TextCompleter(Protocol):
    """A model that continues raw text without a chat template (for ``/v1/completions``)."""

    def complete(
        self, text: str, *, max_new_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
    ) -> str:
        """The continuation of ``text``."""
        ...


# -- request bodies (unknown OpenAI fields such as top_p or user are accepted and ignored) ---------------------


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: int = 1


class _CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=0)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    seed: int | None = None
    n: int = 1


class _BadRequest(LlmrecError):
    """A request the model cannot serve (answered 400)."""


def _stops(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def _messages(request: _ChatRequest) -> list[Message]:
    out: list[Message] = []
    for m in request.messages:
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant"):
            raise _BadRequest(f"role {m.role!r} is not supported (system, user, assistant)")
        content = m.content
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if p.get("type", "text") == "text")
        out.append(Message(role=role, content=content or ""))  # type: ignore[typeddict-item]
    return out


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def create_openai_app(lm: LanguageModel, *, api_key: str | None = None, model_name: str | None = None) -> Any:
    """A FastAPI app serving ``lm`` over the OpenAI protocol.

    Args:
        lm: The model to serve (any backend; raw completions and log-probabilities need :class:`TextCompleter` /
            :class:`TextScorer`).
        api_key: When set, every ``/v1`` request must carry ``Authorization: Bearer <api_key>``.
        model_name: Name reported by ``/v1/models`` and in answers; defaults to ``lm.model_id``. Requests may
            name any model: there is only one.

    Returns:
        The ``fastapi.FastAPI`` application.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    name = model_name or lm.model_id
    created = int(time.time())
    gen_seed = _accepts(lm.generate, "seed")
    app = FastAPI(title="llmrec OpenAI-compatible server", version="1")

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key is not None and request.url.path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
                body = _error_body("invalid or missing API key", code="invalid_api_key")
                return JSONResponse(body, status_code=401)
        return await call_next(request)

    @app.exception_handler(LlmrecError)
    async def _llmrec_error(request: Request, exc: LlmrecError) -> Any:
        return JSONResponse(_error_body(str(exc)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(_error_body(f"{where}: {first.get('msg', 'invalid request')}"), status_code=400)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "llmrec"}]}

    def usage(prompt_text: str | None, completion: str) -> dict[str, int] | None:
        count = getattr(lm, "count_tokens", None)
        if count is None:
            return None
        done = int(count(completion)) if completion else 0
        used = int(count(prompt_text)) if prompt_text else 0
        return {"prompt_tokens": used, "completion_tokens": done, "total_tokens": used + done}

    def rendered(messages: list[Message]) -> str | None:
        render = getattr(lm, "render", None)
        return str(render(messages)) if render is not None else None

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(request: _ChatRequest) -> Any:
        if request.n != 1:
            raise _BadRequest("only n=1 is supported")
        messages = _messages(request)
        limit = request.max_completion_tokens or request.max_tokens or 256
        kwargs: dict[str, Any] = {"max_new_tokens": limit, "temperature": request.temperature}
        kwargs["stop"] = _stops(request.stop)
        if gen_seed and request.seed is not None:
            kwargs["seed"] = request.seed
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if not request.stream:
            text = lm.generate(messages, **kwargs)
            use = usage(rendered(messages), text)
            finish = "length" if use is not None and use["completion_tokens"] >= limit else "stop"
            answer: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": now,
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            }
            if use is not None:
                answer["usage"] = use
            return answer
        pieces = lm.stream(messages, **kwargs)  # errors in the arguments surface here, before the 200

        def events() -> Iterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                body = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": now,
                    "model": name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(body)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            text = []
            try:
                for piece in pieces:
                    text.append(piece)
                    yield chunk({"content": piece})
            except Exception as exc:  # the status line is sent already: report in-stream, as OpenAI does
                logger.exception("stream failed")
                yield f"data: {json.dumps(_error_body(str(exc), kind='server_error'))}\n\n"
                yield "data: [DONE]\n\n"
                return
            use = usage(None, "".join(text))
            finish = "length" if use is not None and use["completion_tokens"] >= limit else "stop"
            yield chunk({}, finish)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions", response_model=None)
    def completions(request: _CompletionRequest) -> Any:
        if request.n != 1:
            raise _BadRequest("only n=1 is supported")
        if request.stream:
            raise _BadRequest("stream is not supported on /v1/completions (use /v1/chat/completions)")
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        if not prompts:
            raise _BadRequest("prompt is empty")
        completions_ = [""] * len(prompts)
        if request.max_tokens > 0:
            if not isinstance(lm, TextCompleter):
                raise _BadRequest(f"model {name} cannot continue raw text; use /v1/chat/completions")
            for i, text in enumerate(prompts):
                completions_[i] = lm.complete(
                    text,
                    max_new_tokens=request.max_tokens,
                    temperature=request.temperature,
                    stop=_stops(request.stop),
                    seed=request.seed,
                )
        scores: list[Any] = [None] * len(prompts)
        if request.logprobs is not None:
            if not isinstance(lm, TextScorer):
                raise _BadRequest(f"model {name} does not return log-probabilities")
            scores = lm.score_texts([p + c for p, c in zip(prompts, completions_, strict=True)])
        choices = []
        total_prompt = total_done = 0
        for i, (text, done, score) in enumerate(zip(prompts, completions_, scores, strict=True)):
            logprobs = None
            if score is not None:
                start = 0 if request.echo else len(text)
                keep = [j for j, off in enumerate(score.offsets) if off >= start]
                logprobs = {
                    "tokens": [score.tokens[j] for j in keep],
                    "token_logprobs": [_finite(score.logprobs[j]) for j in keep],
                    "top_logprobs": [
                        {score.top_tokens[j]: _finite(score.top_logprobs[j])} if j > 0 else None for j in keep
                    ],
                    "text_offset": [score.offsets[j] for j in keep],
                }
            use = usage(text, done)
            if use is not None:
                total_prompt += use["prompt_tokens"]
                total_done += use["completion_tokens"]
            finish = "length" if use is None or use["completion_tokens"] >= request.max_tokens else "stop"
            choices.append(
                {
                    "index": i,
                    "text": (text if request.echo else "") + done,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
        answer: dict[str, Any] = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
        }
        if getattr(lm, "count_tokens", None) is not None:
            answer["usage"] = {
                "prompt_tokens": total_prompt,
                "completion_tokens": total_done,
                "total_tokens": total_prompt + total_done,
            }
        return answer

    return app


def serve_openai(
    lm: LanguageModel,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``lm`` over the OpenAI protocol until interrupted (blocking; uvicorn).

    Args:
        lm: The model.
        host: Interface to bind; loopback by default (use ``0.0.0.0`` only with an ``api_key``).
        port: TCP port.
        api_key: Require ``Authorization: Bearer <api_key>``.
        log_level: uvicorn's log level.
    """
    import uvicorn

    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without an API key: anyone who can reach the port can use the model", host)
    uvicorn.run(create_openai_app(lm, api_key=api_key), host=host, port=port, log_level=log_level)


class BackgroundServer:
    """An ASGI app served by uvicorn in a background thread (for tests, notebooks and embedding).

    Args:
        app: The ASGI application.
        host: Interface to bind.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        log_level: uvicorn's log level.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "BackgroundServer":
        """Bind, start serving, and wait until the server accepts connections."""
        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level=self.log_level, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> "BackgroundServer":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_openai_server(
    lm: LanguageModel, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None
) -> BackgroundServer:
    """Serve ``lm`` in a background thread; returns the running server (``.url + "/v1"`` is the API root)."""
    return BackgroundServer(create_openai_app(lm, api_key=api_key), host=host, port=port).start()
