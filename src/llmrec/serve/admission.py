"""Admission control: a bounded number of requests at work, a bounded wait for a slot, a deadline per answer.

Blocking routes run in a thread pool sized to the machine (:meth:`ServeConfig.worker_threads`), but nothing
bounded how many requests could queue for it: under overload every request waited, memory grew with the queue,
and clients saw minutes of silence. :class:`Admission` is outermost-but-one ASGI middleware (inside the request
id) that gives every ``/v1`` request except health checks:

* **A bounded queue**: at most ``max_inflight`` requests at work; a request that cannot get a slot within
  ``queue_timeout_s`` is answered 503 ``overloaded`` with ``Retry-After`` at once, instead of waiting unbounded.
* **A deadline**: a request whose answer has not *started* within ``request_timeout_s`` is answered 504
  ``timeout``. Python cannot stop a thread, so the work itself runs on, its output dropped, and it keeps its slot
  until it really ends: abandoned work still counts against ``max_inflight``, so timeouts cannot pile up
  unbounded work behind the clients' backs. A streamed answer (chat) that has started is never cut.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Admission"]

log = logging.getLogger("llmrec.serve.access")


class Admission:
    """Bound the requests at work, their wait for a slot, and the time to an answer (see the module docstring).

    Args:
        app: The ASGI app to wrap.
        max_inflight: Requests at work at once (abandoned ones included).
        queue_timeout_s: Longest wait for a slot before a 503.
        request_timeout_s: Longest time to the start of an answer before a 504.
        api_prefix: Only paths under it are admitted this way.
        exempt: Paths never queued or timed out (health checks must answer under overload).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_inflight: int,
        queue_timeout_s: float,
        request_timeout_s: float,
        api_prefix: str = "/v1",
        exempt: tuple[str, ...] = ("/v1/health",),
    ) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.queue_timeout_s = queue_timeout_s
        self.request_timeout_s = request_timeout_s
        self.api_prefix = api_prefix
        self.exempt = exempt
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop, on first use
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def inflight(self) -> int:
        """Requests holding a slot now (abandoned work included)."""
        return 0 if self._slots is None else self.max_inflight - self._slots._value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer within the bounds, or with a 503 (no slot) or 504 (no answer in time)."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.api_prefix) or path in self.exempt:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # a new server (or test client) runs a new loop
            self._slots, self._loop = asyncio.Semaphore(self.max_inflight), loop
        slots = self._slots
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.queue_timeout_s)
        except TimeoutError:
            await self._refuse(scope, receive, send, 503, "overloaded", "the server is at capacity; retry shortly")
            return
        started = asyncio.Event()
        abandoned = False

        async def guarded_send(message: Message) -> None:
            if abandoned:
                return  # the client already has its 504
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        work.add_done_callback(lambda _: slots.release())  # the slot is held until the work really ends
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({work, waiter}, timeout=self.request_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not started.is_set() and not work.done():
            abandoned = True
            work.add_done_callback(_log_late_failure)
            log.warning(
                "%s %s: no answer within %.0f s; answered 504", scope.get("method"), path, self.request_timeout_s
            )
            await self._refuse(
                scope, receive, send, 504, "timeout", f"no answer within {self.request_timeout_s:g} s; retry later"
            )
            return
        await work  # answered (or answering: a stream runs to its end), or failed: let the error propagate

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, kind: str, message: str) -> None:
        from llmrec.serve.errors import error_response

        response = error_response(status, kind, message, headers={"Retry-After": "1"})
        await response(scope, receive, send)


def _log_late_failure(task: asyncio.Future[None]) -> None:
    """Log an error of work whose client already got its 504 (nobody else will see it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("abandoned request failed after its 504", exc_info=task.exception())
