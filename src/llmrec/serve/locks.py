"""One lock per key (a chat session's id), made on first use and dropped when nobody needs it.

Concurrent turns of one chat session are applied one at a time (no lost turn, no resurrected session), while
turns of different sessions run in parallel; the table of locks never grows with the number of sessions ever seen.
"""

from __future__ import annotations

import threading

__all__ = ["KeyedLock", "KeyedLocks"]


class KeyedLocks:
    """One lock per key, made on first use and dropped when no thread holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def get(self, key: str) -> KeyedLock:
        """A lock for ``key``; use it as a context manager (``with locks.get(key):``)."""
        return KeyedLock(self, key)

    def _acquire(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._locks[key] = (lock, users + 1)
        lock.acquire()
        return lock

    def _release(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
        lock.release()


class KeyedLock:
    """The context manager of one key of :class:`KeyedLocks`."""

    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key

    def __enter__(self) -> None:
        self._locks._acquire(self._key)

    def __exit__(self, *exc: object) -> None:
        self._locks._release(self._key)
