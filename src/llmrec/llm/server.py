"""A small OpenAI-compatible HTTP server over any :class:`~llmrec.llm.base.LanguageModel`.

It lets other tools use llmrec's local model (anything that speaks the OpenAI protocol), and it is the real
server the HTTP client's tests run against. Endpoints:

- ``GET /v1/models``: the one model served. A request naming another model is answered 404
  (``model_not_found``); ``"default"`` (what :class:`~llmrec.llm.openai_http.OpenAIChatLM` sends unless told
  otherwise) names the served model too.
- ``POST /v1/chat/completions``: ``generate``; ``stream: true`` answers with server-sent events;
  ``stream_options.include_usage`` adds the final usage chunk; ``n`` choices (up to 8); ``logprobs`` (with
  ``top_logprobs`` 0 or 1) gives each generated token's log-probability, scored after generation.
- ``POST /v1/completions``: raw-text continuation, streamed or not, and ``echo`` + ``logprobs`` (per-token
  log-probabilities of the prompt itself), which is what ranking by likelihood needs. Raw text and
  log-probabilities need a model that offers them (:class:`~llmrec.llm.local.LocalLM` does: ``complete``,
  ``stream_complete`` and ``score_texts``); otherwise the request is answered 400 with an OpenAI-style error.

What is not supported is refused with a 400 that says so, never silently ignored: ``top_logprobs`` above 1,
log-probabilities on a stream, ``echo`` on a stream, ``best_of``, ``logit_bias``, tools.

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


MAX_CHOICES = 8
"""Most choices (``n``) one request may ask for: each is a full generation on the CPU."""


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None


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
    stream_options: _StreamOptions | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    best_of: int | None = None
    logit_bias: dict[str, float] | None = None


class _BadRequest(LlmrecError):
    """A request the model cannot serve (answered 400)."""


class _UnknownModel(LlmrecError):
    """A request naming a model this server does not serve (answered 404, ``model_not_found``)."""


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


def _chunk_seed(seed: int | None, index: int) -> int | None:
    """The seed of choice ``index`` (choices differ when sampling, and each is reproducible)."""
    return None if seed is None else seed + index


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def _refuse_unsupported(request: _ChatRequest | _CompletionRequest) -> None:
    """400 for fields that would otherwise be silently ignored."""
    if request.logit_bias:
        raise _BadRequest("logit_bias is not supported by this server")
    if isinstance(request, _ChatRequest):
        if request.tools:
            raise _BadRequest("tools are not supported by this server")
        if request.top_logprobs is not None and request.top_logprobs > 1:
            raise _BadRequest("top_logprobs above 1 is not supported (only the most likely token is known)")
        if request.top_logprobs and not request.logprobs:
            raise _BadRequest("top_logprobs needs logprobs: true")
        if request.logprobs and request.stream:
            raise _BadRequest("logprobs are not supported on a stream; ask without stream")
    else:
        if request.best_of is not None and request.best_of != request.n:
            raise _BadRequest("best_of is not supported by this server")
        if request.stream and (request.echo or request.logprobs is not None):
            raise _BadRequest("echo and logprobs are not supported on a stream; ask without stream")


def create_openai_app(
    lm: LanguageModel,
    *,
    api_key: str | None = None,
    model_name: str | None = None,
    aliases: Sequence[str] = ("default",),
) -> Any:
    """A FastAPI app serving ``lm`` over the OpenAI protocol.

    Args:
        lm: The model to serve (any backend; raw completions and log-probabilities need :class:`TextCompleter` /
            :class:`TextScorer`).
        api_key: When set, every ``/v1`` request must carry ``Authorization: Bearer <api_key>``.
        model_name: Name reported by ``/v1/models`` and in answers; defaults to ``lm.model_id``.
        aliases: Other names a request may use for the served model; any other name is answered 404.

    Returns:
        The ``fastapi.FastAPI`` application.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    name = model_name or lm.model_id
    known = {name, *aliases}
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

    @app.exception_handler(_UnknownModel)
    async def _unknown_model(request: Request, exc: _UnknownModel) -> Any:
        return JSONResponse(_error_body(str(exc), code="model_not_found"), status_code=404)

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

    def check_model(requested: str | None) -> None:
        if requested is not None and requested not in known:
            raise _UnknownModel(f"the model {requested!r} does not exist; this server serves {name!r}")

    def count(text: str | None) -> int | None:
        counter = getattr(lm, "count_tokens", None)
        if counter is None:
            return None
        return int(counter(text)) if text else 0

    def usage(prompt_tokens: int | None, completions: Sequence[str]) -> dict[str, int] | None:
        done = [count(c) for c in completions]
        if prompt_tokens is None or any(d is None for d in done):
            return None
        total_done = sum(d or 0 for d in done)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": total_done,
            "total_tokens": prompt_tokens + total_done,
        }

    def finish_reason(text: str, limit: int) -> str:
        used = count(text)
        return "length" if used is None or used >= limit else "stop"

    def rendered(messages: list[Message]) -> str | None:
        render = getattr(lm, "render", None)
        return str(render(messages)) if render is not None else None

    def chat_logprobs(prompt: str | None, text: str, top: int) -> dict[str, Any]:
        """Each generated token's log-probability, from scoring prompt + reply once after generation."""
        if prompt is None or not isinstance(lm, TextScorer):
            raise _BadRequest(f"model {name} does not return log-probabilities")
        score = lm.score_texts([prompt + text])[0]
        content = []
        for j, offset in enumerate(score.offsets):
            if offset < len(prompt) or j == 0:
                continue
            entry: dict[str, Any] = {
                "token": score.tokens[j],
                "logprob": _finite(score.logprobs[j]),
                "bytes": list(score.tokens[j].encode()),
                "top_logprobs": [],
            }
            if top:
                best = score.top_tokens[j]
                entry["top_logprobs"] = [
                    {"token": best, "logprob": _finite(score.top_logprobs[j]), "bytes": list(best.encode())}
                ]
            content.append(entry)
        return {"content": content, "refusal": None}

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(request: _ChatRequest) -> Any:
        check_model(request.model)
        _refuse_unsupported(request)
        messages = _messages(request)
        limit = request.max_completion_tokens or request.max_tokens or 256
        stop = _stops(request.stop)

        def options(index: int) -> dict[str, Any]:
            kwargs: dict[str, Any] = {"max_new_tokens": limit, "temperature": request.temperature, "stop": stop}
            if gen_seed and request.seed is not None:
                kwargs["seed"] = _chunk_seed(request.seed, index)
            return kwargs

        ident = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        prompt = rendered(messages)
        if not request.stream:
            texts = [lm.generate(messages, **options(i)) for i in range(request.n)]
            choices = []
            for i, text in enumerate(texts):
                choice: dict[str, Any] = {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason(text, limit),
                    "logprobs": chat_logprobs(prompt, text, request.top_logprobs or 0) if request.logprobs else None,
                }
                choices.append(choice)
            answer: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": now,
                "model": name,
                "choices": choices,
            }
            use = usage(count(prompt), texts)
            if use is not None:
                answer["usage"] = use
            return answer
        first = lm.stream(messages, **options(0))  # errors in the arguments surface here, before the 200
        include_usage = request.stream_options is not None and request.stream_options.include_usage

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
            body = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": now,
                "model": name,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }
            return _sse(body)

        def events() -> Iterator[str]:
            texts = []
            try:
                for i in range(request.n):
                    pieces = first if i == 0 else lm.stream(messages, **options(i))
                    yield chunk(i, {"role": "assistant", "content": ""})
                    text = []
                    for piece in pieces:
                        text.append(piece)
                        yield chunk(i, {"content": piece})
                    texts.append("".join(text))
                    yield chunk(i, {}, finish_reason(texts[-1], limit))
            except Exception as exc:  # the status line is sent already: report in-stream, as OpenAI does
                logger.exception("stream failed")
                yield _sse(_error_body(str(exc), kind="server_error"))
                yield "data: [DONE]\n\n"
                return
            if include_usage:
                body = {"id": ident, "object": "chat.completion.chunk", "created": now, "model": name}
                yield _sse({**body, "choices": [], "usage": usage(count(prompt), texts)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def continuation(text: str, request: _CompletionRequest, index: int) -> Iterator[str]:
        """The continuation of raw ``text`` as pieces (one piece from models that cannot stream raw text)."""
        if not isinstance(lm, TextCompleter):
            raise _BadRequest(f"model {name} cannot continue raw text; use /v1/chat/completions")
        kwargs: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": _stops(request.stop),
            "seed": _chunk_seed(request.seed, index),
        }
        streamer = getattr(lm, "stream_complete", None)
        if streamer is not None:
            return iter(streamer(text, **kwargs))
        return iter([lm.complete(text, **kwargs)])

    @app.post("/v1/completions", response_model=None)
    def completions(request: _CompletionRequest) -> Any:
        check_model(request.model)
        _refuse_unsupported(request)
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        if not prompts:
            raise _BadRequest("prompt is empty")
        # One choice per (prompt, n): choice index = prompt index * n + j, as OpenAI numbers them.
        jobs = [(p, j) for p in prompts for j in range(request.n)]
        ident = f"cmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if request.stream:
            if request.max_tokens > 0 and not isinstance(lm, TextCompleter):
                raise _BadRequest(f"model {name} cannot continue raw text; use /v1/chat/completions")
            include_usage = request.stream_options is not None and request.stream_options.include_usage

            def events() -> Iterator[str]:
                def chunk(index: int, text: str, finish: str | None = None) -> str:
                    choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
                    return _sse({"id": ident, "object": "text_completion", "created": now, "model": name,
                                 "choices": [choice]})  # fmt: skip

                done_texts = []
                try:
                    for index, (text, j) in enumerate(jobs):
                        pieces = continuation(text, request, j) if request.max_tokens > 0 else iter(())
                        done = []
                        for piece in pieces:
                            done.append(piece)
                            yield chunk(index, piece)
                        done_texts.append("".join(done))
                        yield chunk(index, "", finish_reason(done_texts[-1], request.max_tokens))
                except Exception as exc:  # the status line is sent already: report in-stream
                    logger.exception("stream failed")
                    yield _sse(_error_body(str(exc), kind="server_error"))
                    yield "data: [DONE]\n\n"
                    return
                if include_usage:
                    prompt_tokens = [count(p) for p in prompts]
                    used = None if any(t is None for t in prompt_tokens) else sum(t or 0 for t in prompt_tokens)
                    body = {"id": ident, "object": "text_completion", "created": now, "model": name, "choices": []}
                    yield _sse({**body, "usage": usage(used, done_texts)})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        completions_ = ["".join(continuation(text, request, j)) if request.max_tokens > 0 else "" for text, j in jobs]
        scores: list[Any] = [None] * len(jobs)
        if request.logprobs is not None:
            if request.logprobs > 1:
                raise _BadRequest("logprobs above 1 is not supported (only the most likely token is known)")
            if not isinstance(lm, TextScorer):
                raise _BadRequest(f"model {name} does not return log-probabilities")
            scores = lm.score_texts([p + c for (p, _), c in zip(jobs, completions_, strict=True)])
        choices = []
        for i, ((text, _), done, score) in enumerate(zip(jobs, completions_, scores, strict=True)):
            logprobs = None
            if score is not None:
                start = 0 if request.echo else len(text)
                keep = [j for j, off in enumerate(score.offsets) if off >= start]
                logprobs = {
                    "tokens": [score.tokens[j] for j in keep],
                    "token_logprobs": [_finite(score.logprobs[j]) if j > 0 else None for j in keep],
                    "top_logprobs": [
                        {score.top_tokens[j]: _finite(score.top_logprobs[j])} if j > 0 else None for j in keep
                    ],
                    "text_offset": [score.offsets[j] for j in keep],
                }
            choices.append(
                {
                    "index": i,
                    "text": (text if request.echo else "") + done,
                    "logprobs": logprobs,
                    "finish_reason": finish_reason(done, request.max_tokens),
                }
            )
        answer: dict[str, Any] = {
            "id": ident,
            "object": "text_completion",
            "created": now,
            "model": name,
            "choices": choices,
        }
        prompt_tokens = [count(p) for p, _ in jobs]
        if all(t is not None for t in prompt_tokens):
            use = usage(sum(t or 0 for t in prompt_tokens), completions_)
            if use is not None:
                answer["usage"] = use
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
