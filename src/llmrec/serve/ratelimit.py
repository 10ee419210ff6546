"""Per-key rate limits: a token bucket per API key (and per client address for requests without a valid key).

Off unless ``ServeConfig.rate_limit_per_minute`` is set. A key may make ``burst`` requests at once, then one more
every ``60 / per_minute`` seconds; past that the API answers 429 with ``Retry-After`` (whole seconds until the
next request would pass). The buckets live in this process (one server, several threads); with several server
processes each counts its own share. Memory is bounded: at most ``max_keys`` buckets, the least recently used
dropped first (a dropped bucket starts full again, which only ever errs towards letting a request through).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets by identity (``key:<id>``, ``admin``, ``addr:<ip>``).

    Args:
        per_minute: Sustained requests per minute per identity.
        burst: Requests an identity may make at once (``None``: a tenth of ``per_minute``, at least 1).
        max_keys: Most buckets kept.
        clock: Monotonic seconds (tests pass a fake one).

    """

    def __init__(
        self,
        per_minute: int,
        burst: int | None = None,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, per_minute // 10))
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, identity: str) -> float:
        """Take one request from ``identity``'s bucket: 0 when it may go ahead, else the seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[identity] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[identity] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` for a wait (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
