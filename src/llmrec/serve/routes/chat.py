"""Chat sessions: a conversation with the recommender, answered as JSON or streamed as server-sent events.

A session belongs to a user (a user key's own) or, made with the admin key, to nobody, and to the served dataset:
a user key sees only its user's sessions of this dataset, any other session id answers 404, so ids reveal
nothing. Feedback in a user's session is stored as that user's interactions (the recommendations routes and the
next fit see it).

Writes to one session are ordered (:meth:`RecommenderService.session_lock`): a turn reads the session, answers and
writes it back, so concurrent turns each keep their messages, and a session deleted while turns are in flight
stays deleted (the turns that come after the delete answer 404).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from llmrec.chat import ChatSession, DialogueState
from llmrec.errors import LlmrecError, UnknownIdError
from llmrec.serve.deps import Caller, ServiceDep
from llmrec.serve.errors import error_of, error_responses
from llmrec.serve.schemas import (
    ChatFeedbackIn,
    ChatMessageIn,
    ChatReplyOut,
    ChatSessionIn,
    ChatSessionOut,
    DeletedOut,
    PathId,
)

__all__ = ["router"]

router = APIRouter(prefix="/chat/sessions", tags=["chat"], responses=error_responses(400, 401, 403, 404, 422))


def owned_session(session_id: PathId, service: ServiceDep, caller: Caller) -> ChatSession:
    """The session of the path, if the caller may use it (of this dataset; the admin: any; a user key: its user's)."""
    session = service.chat().session(session_id)
    if session.dataset != service.dataset or (not caller.is_admin and session.user_id != caller.user_id):
        raise UnknownIdError(
            f"unknown chat session {session_id!r}", field="session_id", fix="start one with POST /v1/chat/sessions"
        )
    return session


Session = Annotated[ChatSession, Depends(owned_session)]


@router.post("", response_model=ChatSessionOut, status_code=201)
def start(body: ChatSessionIn, service: ServiceDep, caller: Caller) -> ChatSessionOut:
    """Start a conversation (a user key's own user when ``user_id`` is left out)."""
    user_id = body.user_id or caller.user_id
    if user_id is not None:
        caller.check_user(user_id, ("body", "user_id"))
    return ChatSessionOut.of(service.chat().start(user_id))


@router.get("/{session_id}", response_model=ChatSessionOut)
def read(session: Session) -> ChatSessionOut:
    """A conversation: its state and every message."""
    return ChatSessionOut.of(session)


@router.put("/{session_id}/state", response_model=ChatSessionOut)
def edit_state(session: Session, state: DialogueState, service: ServiceDep) -> ChatSessionOut:
    """Replace what the conversation established (the person corrected it); item ids are checked."""
    with service.session_lock(session.id):
        return ChatSessionOut.of(service.chat().edit_state(session.id, state))


@router.post("/{session_id}/reply", response_model=ChatReplyOut)
def reply(session: Session, body: ChatMessageIn, service: ServiceDep) -> ChatReplyOut:
    """Answer a message at once, as one JSON body."""
    with service.session_lock(session.id):
        return ChatReplyOut.of(service.chat().turn(session.id, body.text))


@router.post(
    "/{session_id}/messages",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "Events: `state`, then one `item` per recommendation, then `done`."},
        **error_responses(400, 401, 403, 404, 422, streamed=True),
    },
)
def stream(session: Session, body: ChatMessageIn, service: ServiceDep) -> Iterator[ServerSentEvent]:
    """Answer a message as server-sent events, each sent as soon as it is known.

    ``state`` (how the message was read, the state after it) comes first; then one ``item`` per recommendation
    (``item_id``, ``title``, ``year``, ``genres``, ``reason``, ``score``); then ``done`` with the whole answer.
    A failure after the stream started is sent as an ``error`` event in the API's error model.
    """
    chat = service.chat()
    with service.session_lock(session.id):  # held until the turn is written (or the client went away)
        try:
            for event in chat.stream_turn(session.id, body.text):
                yield ServerSentEvent(event=event["event"], data=event["data"])
        except LlmrecError as exc:
            yield ServerSentEvent(event="error", data={"error": error_of(exc)[1].model_dump()})


@router.post("/{session_id}/feedback", response_model=ChatSessionOut)
def feedback(session: Session, body: ChatFeedbackIn, service: ServiceDep) -> ChatSessionOut:
    """Thumbs up/down, seen or a rating on an item: the very next answer reflects it."""
    with service.session_lock(session.id):
        return ChatSessionOut.of(service.chat().feedback(session.id, body.item_id, body.kind, body.value))


@router.delete("/{session_id}", response_model=DeletedOut)
def delete(session: Session, service: ServiceDep) -> DeletedOut:
    """Forget a conversation (turns in flight finish first; later ones answer 404)."""
    with service.session_lock(session.id):
        service.chat().sessions.delete(session.id)
    return DeletedOut(deleted=session.id)
