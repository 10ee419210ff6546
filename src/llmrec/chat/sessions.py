"""Where conversations live: in memory (one process, tests) or in the store's ``chat_sessions`` table.

A session is its dialogue state plus its turns; both are JSON, so a session survives a restart and is the same
on SQLite and PostgreSQL. Session ids are random (``secrets.token_urlsafe``), never guessable from another's.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from llmrec.chat.state import DialogueState
from llmrec.errors import StoreError, UnknownIdError

if TYPE_CHECKING:
    from llmrec.data.store import Store

__all__ = ["ChatSession", "MemorySessionStore", "SessionStore", "SqlSessionStore", "Turn", "new_session_id"]


def new_session_id() -> str:
    """A fresh random session id (URL-safe, 128 bits)."""
    return secrets.token_urlsafe(16)


class Turn(BaseModel):
    """One message of a conversation.

    Attributes:
        role: ``user`` or ``assistant``.
        text: What was said; a user's message PII-scrubbed (see :mod:`llmrec.privacy`).
        items: Item ids the assistant recommended in this turn (empty for user turns).
        raw: The message as typed, Fernet-encrypted, only when the deployment keeps raw text and the scrubber
            changed it; never shown by the API (only in the user's export).
    """

    model_config = ConfigDict(extra="forbid")

    role: str
    text: str
    items: list[str] = Field(default_factory=list)
    raw: str | None = None


class ChatSession(BaseModel):
    """One conversation.

    Attributes:
        id: Random session id.
        dataset: The dataset whose catalogue the conversation is about.
        user_id: The dataset user it belongs to (``None``: anonymous).
        state: What the conversation has established.
        turns: Every message, oldest first.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    dataset: str
    user_id: str | None = None
    state: DialogueState = Field(default_factory=DialogueState)
    turns: list[Turn] = Field(default_factory=list)


class SessionStore(Protocol):
    """Saves and loads sessions by id."""

    def save(self, session: ChatSession) -> None:
        """Store ``session`` (insert or replace)."""
        ...

    def load(self, session_id: str) -> ChatSession:
        """The session with this id; :class:`UnknownIdError` when there is none."""
        ...

    def delete(self, session_id: str) -> bool:
        """Remove a session; whether it existed."""
        ...


class MemorySessionStore:
    """Sessions in a dict (lost when the process ends); thread-safe."""

    def __init__(self) -> None:
        self._sessions: dict[str, str] = {}
        self._lock = threading.Lock()

    def save(self, session: ChatSession) -> None:
        """Store a copy of ``session``."""
        with self._lock:
            self._sessions[session.id] = session.model_dump_json()

    def load(self, session_id: str) -> ChatSession:
        """A copy of the stored session."""
        with self._lock:
            raw = self._sessions.get(session_id)
        if raw is None:
            raise UnknownIdError(f"no chat session '{session_id}'", field="session_id", fix="start one first")
        return ChatSession.model_validate_json(raw)

    def delete(self, session_id: str) -> bool:
        """Remove a session; whether it existed."""
        with self._lock:
            return self._sessions.pop(session_id, None) is not None


class SqlSessionStore:
    """Sessions in the store's ``chat_sessions`` table (SQLite or PostgreSQL), migrated on first use."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _table(self) -> Any:
        from llmrec.data.store.models import ChatSessionRow

        return ChatSessionRow.__table__

    def _run(self, action: str, fn: Any) -> Any:
        import sqlalchemy as sa

        self.store.ensure_migrated()
        try:
            with self.store.engine.begin() as conn:
                return fn(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"could not {action} at {self.store.display_url}: {type(exc).__name__}. It was rolled back. "
                "Fix: check the database and retry"
            ) from exc

    def save(self, session: ChatSession) -> None:
        """Replace ``session``, or insert it when it is new (no turns yet).

        A session with turns that is no longer stored was deleted: saving it raises :class:`UnknownIdError` instead
        of bringing it back (a turn that was in flight while the session was deleted).
        """
        table = self._table()
        row = {
            "dataset": session.dataset,
            "user_id": session.user_id,
            "state": session.state.model_dump(mode="json"),
            "turns": [t.model_dump(mode="json") for t in session.turns],
            "updated_at": datetime.now(UTC),
        }

        def write(conn: Any) -> bool:
            done = conn.execute(table.update().where(table.c.id == session.id).values(**row)).rowcount
            if done:
                return True
            if session.turns:
                return False
            conn.execute(table.insert().values(id=session.id, **row))
            return True

        if not self._run("save chat session", write):
            raise UnknownIdError(f"chat session '{session.id}' was deleted", field="session_id", fix="start a new one")

    def load(self, session_id: str) -> ChatSession:
        """The stored session with this id."""
        table = self._table()
        found = self._run(
            "load chat session", lambda conn: conn.execute(table.select().where(table.c.id == session_id)).first()
        )
        if found is None:
            raise UnknownIdError(f"no chat session '{session_id}'", field="session_id", fix="start one first")
        return ChatSession(
            id=found.id, dataset=found.dataset, user_id=found.user_id, state=found.state, turns=found.turns
        )

    def delete(self, session_id: str) -> bool:
        """Remove a session; whether it existed."""
        table = self._table()
        return bool(
            self._run(
                "delete chat session", lambda c: c.execute(table.delete().where(table.c.id == session_id))
            ).rowcount
        )
