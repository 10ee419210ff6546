"""Request and response bodies of the HTTP API (pydantic models; they are the OpenAPI schemas)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from llmrec.chat.state import DialogueState

if TYPE_CHECKING:
    from llmrec.chat import ChatSession, Reply
    from llmrec.data.store import ApiKeyRecord, ItemRecord, UserRecord
    from llmrec.llm.explain import Explanation
    from llmrec.serve.results import RecommendationResult

__all__ = [
    "ID_PATTERN",
    "MAX_OFFSET",
    "MAX_TIMESTAMP",
    "ChatFeedbackIn",
    "ChatItemOut",
    "ChatMarkIn",
    "ChatMessageIn",
    "ChatRatingIn",
    "ChatReplyOut",
    "ChatSessionIn",
    "ChatSessionOut",
    "ChatTurnOut",
    "CitationOut",
    "DeletedOut",
    "ExplanationOut",
    "FeedbackIn",
    "FeedbackMarkIn",
    "FeedbackOut",
    "FeedbackRatingIn",
    "HealthOut",
    "IngestOut",
    "InteractionIn",
    "InteractionOut",
    "InteractionsIn",
    "InteractionsOut",
    "ItemIn",
    "ItemOut",
    "ItemPage",
    "ItemPatch",
    "KeyCreated",
    "KeyIn",
    "KeyOut",
    "KeysOut",
    "PathId",
    "QueryId",
    "RecommendationsOut",
    "RecommendedItemOut",
    "RefitIn",
    "RefitOut",
    "UserIn",
    "UserOut",
    "UserPage",
    "UtcDatetime",
    "WhoAmIOut",
]

MAX_OFFSET = 2**31 - 1
"""The largest list offset a request may ask for: bigger values are answered 422, never sent to the database
(SQLite and PostgreSQL overflow on 64-bit and larger integers)."""

MAX_TIMESTAMP = 253_402_300_799
"""The largest ``since`` accepted: 9999-12-31T23:59:59Z in seconds since the epoch."""

ID_PATTERN = r"^[^\s\ufeff\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\ufeff\x00-\x1f\x7f-\x9f])?$"
"""Every id the API takes (body, path, query): printable, no surrounding spaces, no control characters.

" pad-1 " was stored but every read of it failed, and a NUL character is storable on SQLite but not on PostgreSQL.
C1 controls (\x85...) and the BOM are named outright, because what ``\\s`` covers differs between the server's
regex engine and a client's (ECMA-262)."""
_ID_DESCRIPTION = "1-256 printable characters, no leading or trailing spaces."

Id = Field(min_length=1, max_length=256, pattern=ID_PATTERN, description=_ID_DESCRIPTION)
PathId = Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN, description=_ID_DESCRIPTION)]
"""An id in a route's path (NUL and other control characters answer 422 before any lookup)."""
QueryId = Annotated[str | None, Query(min_length=1, max_length=256, pattern=ID_PATTERN, description=_ID_DESCRIPTION)]
"""An optional id in a query string."""
MAX_NESTING = 32
"""Deepest nesting of lists and objects an ``attributes`` value may have (an item nested 300 deep was stored, then
every read of it failed: the JSON writer stops at a depth limit)."""


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if its lists and objects nest at most :data:`MAX_NESTING` deep (checked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(f"attributes nest deeper than {MAX_NESTING} levels; flatten them")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return value


Attributes = dict[str, Any]
AttributesIn = Annotated[dict[str, Any], AfterValidator(_shallow)]
"""Attributes a request sends: nested at most :data:`MAX_NESTING` deep."""


def _as_utc(value: datetime) -> datetime:
    """A naive time (SQLite stores times without a zone; every stored time is UTC) as UTC; aware ones as they are."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A response time: always written with its zone (``...Z``), as the ``date-time`` format of the spec requires."""

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number (``true``/``false`` and numeric strings are refused, not read as 1/0 or parsed)."""


def _whole_number(value: object) -> object:
    """A JSON integer (``5`` or ``5.0``) as an int; anything else (``true``, ``"5"``, ``5.5``) is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a whole number is expected")
    return value


Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP), BeforeValidator(_whole_number)]
"""Seconds since 1970-01-01, up to 9999-12-31."""

_FROM_1970 = r"^(19[7-9][0-9]|[2-9][0-9]{3})-"


def _date_text(value: object) -> object:
    """Only text is read as a date/time (a number is seconds, never a date), and only from 1970 on."""
    if not isinstance(value, str):
        raise ValueError("a date/time is written as ISO-8601 text")
    if not re.match(_FROM_1970, value):
        raise ValueError("a date/time from 1970-01-01 on, written as ISO-8601 text (2018-09-24T10:00:00Z)")
    return value


DateTimeText = Annotated[
    datetime,
    BeforeValidator(_date_text),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _FROM_1970}),
]
"""An ISO-8601 date/time from 1970 on (what a timestamp in seconds can say too)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- items -------------------------------------------------------------------------------------------------------
class ItemIn(_In):
    """A new item."""

    item_id: str = Id
    title: str = Field(default="", max_length=10_000)
    text: str = Field(default="", max_length=100_000)
    attributes: AttributesIn = Field(default_factory=dict, description="Other fields, e.g. genres, year.")


class ItemPatch(_In):
    """Changes to an item; fields left out keep their value, an attribute set to null is removed."""

    title: str | None = Field(default=None, max_length=10_000)
    text: str | None = Field(default=None, max_length=100_000)
    attributes: AttributesIn | None = None


class ItemOut(BaseModel):
    """A stored item."""

    item_id: str
    title: str
    text: str
    attributes: Attributes
    score: float | None = Field(default=None, description="Similarity to the query (semantic search only).")

    @classmethod
    def of(cls, record: ItemRecord, score: float | None = None) -> ItemOut:
        """From a store record."""
        return cls(
            item_id=record.item_id, title=record.title, text=record.text, attributes=record.attributes, score=score
        )


class ItemPage(BaseModel):
    """A page of items."""

    items: list[ItemOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class DeletedOut(BaseModel):
    """What was deleted."""

    deleted: str


# -- users -------------------------------------------------------------------------------------------------------
class UserIn(_In):
    """A new user."""

    user_id: str = Id
    profile: str = Field(default="", max_length=10_000, description="Free text about the user's tastes.")
    attributes: AttributesIn = Field(default_factory=dict)


class UserOut(BaseModel):
    """A stored user."""

    user_id: str
    profile: str
    attributes: Attributes

    @classmethod
    def of(cls, record: UserRecord) -> UserOut:
        """From a store record."""
        return cls(user_id=record.user_id, profile=record.profile, attributes=record.attributes)


class UserPage(BaseModel):
    """A page of users."""

    users: list[UserOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None


# -- interactions ------------------------------------------------------------------------------------------------
class InteractionIn(_In):
    """One interaction."""

    user_id: str = Id
    item_id: str = Id
    timestamp: Timestamp | DateTimeText = Field(
        description="Seconds since 1970-01-01, or an ISO-8601 date/time (UTC when it names no zone)."
    )
    value: Number | None = Field(
        default=None,
        description="A rating within the served rating range; 1 when left out. Feedback events (`thumbs_up`, "
        "`rating`...) follow the feedback route's rules.",
    )

    def seconds(self) -> int:
        """The timestamp as seconds since the epoch (a date/time without a zone is read as UTC)."""
        if isinstance(self.timestamp, datetime):
            return int(_as_utc(self.timestamp).timestamp())
        return self.timestamp

    event: str = Field(default="interaction", min_length=1, max_length=64)


class InteractionsIn(_In):
    """A batch of interactions, stored all or nothing."""

    interactions: list[InteractionIn] = Field(min_length=1, max_length=100_000)


class IngestOut(BaseModel):
    """What a batch stored."""

    inserted: int
    skipped: int = Field(description="Rows already stored (the same user, item, time and event).")


class InteractionOut(BaseModel):
    """A stored interaction."""

    item_id: str
    timestamp: int
    value: float
    event: str


class InteractionsOut(BaseModel):
    """A user's interactions, oldest first."""

    user_id: str
    interactions: list[InteractionOut]


# -- recommendations ---------------------------------------------------------------------------------------------
class CitationOut(BaseModel):
    """A piece of evidence an explanation rests on."""

    kind: str = Field(description="item (a history item), genre, tag or year")
    value: str
    item_id: str | None = None


class ExplanationOut(BaseModel):
    """Why an item is recommended."""

    text: str
    grounded: bool = Field(description="Whether the text passed the faithfulness check against its evidence.")
    source: str = Field(description="lm, repaired or template")
    citations: list[CitationOut]

    @classmethod
    def of(cls, explanation: Explanation) -> ExplanationOut:
        """From the pipeline's explanation."""
        return cls(
            text=explanation.text,
            grounded=explanation.grounded,
            source=explanation.source,
            citations=[CitationOut(kind=c.kind, value=c.value, item_id=c.item_id) for c in explanation.citations],
        )


class RecommendedItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    rank: int
    score: float | None
    title: str
    attributes: Attributes
    explanation: ExplanationOut | None = None


class RecommendationsOut(BaseModel):
    """A user's recommendations."""

    user_id: str
    retriever: str
    reranked: bool
    known_user: bool = Field(description="False: the user was not in the fitted data and gets the cold-start list.")
    fitted_at: UtcDatetime
    model_version: int | None = Field(
        default=None, description="The published model version the list came from (null: fitted by this worker only)."
    )
    excluded_recent: list[str] = Field(description="Items left out because of feedback or interactions since the fit.")
    items: list[RecommendedItemOut]

    @classmethod
    def of(cls, result: RecommendationResult) -> RecommendationsOut:
        """From the service's result."""
        return cls(
            user_id=result.user_id,
            retriever=result.retriever,
            reranked=result.reranked,
            known_user=result.known_user,
            fitted_at=result.fitted_at,
            model_version=result.model_version,
            excluded_recent=result.excluded_recent,
            items=[
                RecommendedItemOut(
                    item_id=it.item_id,
                    rank=it.rank,
                    score=it.score,
                    title=it.title,
                    attributes=it.attributes,
                    explanation=ExplanationOut.of(it.explanation) if it.explanation is not None else None,
                )
                for it in result.items
            ],
        )


# -- feedback ----------------------------------------------------------------------------------------------------
class FeedbackRatingIn(_In):
    """A rating of an item; stored as an interaction with the rating as its value."""

    user_id: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=ID_PATTERN, description="Left out: the user of the key."
    )
    item_id: str = Id
    kind: Literal["rating"]
    value: Number = Field(description="The rating, on the dataset's scale (the spec states its bounds).")


class FeedbackMarkIn(_In):
    """A thumbs-up, thumbs-down or "seen it" on an item: a mark that takes no value."""

    user_id: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=ID_PATTERN, description="Left out: the user of the key."
    )
    item_id: str = Id
    kind: Literal["thumbs_up", "thumbs_down", "seen"]
    value: None = Field(default=None, description="Only a rating takes a value.")


FeedbackIn = Annotated[FeedbackRatingIn | FeedbackMarkIn, Field(discriminator="kind")]
"""Feedback on an item, stored as an interaction whose event is the kind. A rating needs a value, a mark takes none:
the spec says so (one schema per kind), so a request the spec allows is one the server accepts."""


class FeedbackOut(BaseModel):
    """Stored feedback."""

    user_id: str
    item_id: str
    kind: str
    value: float
    timestamp: int
    stored: bool = Field(description="False when the identical event was already stored.")


# -- chat ------------------------------------------------------------------------------------------------------
class ChatSessionIn(_In):
    """A new conversation."""

    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=ID_PATTERN,
        description="Its user (a user key's own when left out; admin: anonymous).",
    )


class ChatMessageIn(_In):
    """What the person says."""

    text: str = Field(min_length=1, max_length=2000, pattern=r"\S", examples=["something funny from the 90s"])


class ChatRatingIn(_In):
    """A rating of an item of the conversation; the next answer reflects it."""

    item_id: str = Id
    kind: Literal["rating"]
    value: Number = Field(description="The rating, on the dataset's scale (the spec states its bounds).")


class ChatMarkIn(_In):
    """A thumbs-up, thumbs-down or "seen it" on an item of the conversation; the next answer reflects it."""

    item_id: str = Id
    kind: Literal["thumbs_up", "thumbs_down", "seen"]
    value: None = Field(default=None, description="Only a rating takes a value.")


ChatFeedbackIn = Annotated[ChatRatingIn | ChatMarkIn, Field(discriminator="kind")]
"""Feedback on an item of the conversation (a rating with its value, or a mark without one)."""


class ChatItemOut(BaseModel):
    """A recommended item with its grounded reason."""

    item_id: str
    title: str
    year: int | None
    genres: list[str]
    reason: str
    score: float


class ChatTurnOut(BaseModel):
    """One message."""

    role: Literal["user", "assistant"]
    text: str
    items: list[str] = Field(description="Items the assistant recommended in this turn.")


class ChatSessionOut(BaseModel):
    """A conversation: what it established and what was said."""

    session_id: str
    user_id: str | None
    state: DialogueState
    turns: list[ChatTurnOut]

    @classmethod
    def of(cls, session: ChatSession) -> ChatSessionOut:
        """From a stored session."""
        turns = [ChatTurnOut(role=t.role, text=t.text, items=t.items) for t in session.turns]
        return cls(session_id=session.id, user_id=session.user_id, state=session.state, turns=turns)


class ChatReplyOut(BaseModel):
    """The answer to one message (the streamed route sends the same as events)."""

    session_id: str
    intent: str = Field(description="recommend, greeting, reset, refused or out_of_scope.")
    text: str
    items: list[ChatItemOut]
    state: DialogueState

    @classmethod
    def of(cls, reply: Reply) -> ChatReplyOut:
        """From the recommender's reply."""
        items = [ChatItemOut(**item.as_dict()) for item in reply.items]
        return cls(session_id=reply.session_id, intent=reply.intent, text=reply.text, items=items, state=reply.state)


# -- keys --------------------------------------------------------------------------------------------------------
class KeyIn(_In):
    """A key to make."""

    user_id: str = Id
    expires_in_s: Annotated[int, Field(ge=1, le=10 * 366 * 86_400), BeforeValidator(_whole_number)] | None = Field(
        default=None,
        description="The key stops working this many seconds from now (401 after); left out: it never expires.",
    )


class KeyOut(BaseModel):
    """A stored key (the key itself is never shown again)."""

    key_id: str
    user_id: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None
    expires_at: UtcDatetime | None = Field(description="When the key stops working; null: never.")
    active: bool = Field(description="Neither revoked nor expired.")

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyOut:
        """From a store record."""
        return cls(
            key_id=record.key_id,
            user_id=record.user_id,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
            expires_at=record.expires_at,
            active=record.active,
        )


class KeyCreated(KeyOut):
    """A new key: ``key`` is shown this once."""

    key: str


class KeysOut(BaseModel):
    """Keys."""

    keys: list[KeyOut]


# -- system ------------------------------------------------------------------------------------------------------
class WhoAmIOut(BaseModel):
    """Who the key belongs to, and what the server lets a client choose (the web page reads this first)."""

    role: Literal["admin", "user"]
    user_id: str | None = Field(description="The user of a user key; null for the admin.")
    dataset: str
    retrievers: list[str] = Field(description="Retrievers a recommendation request may name.")
    default_retriever: str
    feedback_kinds: list[str]


class HealthOut(BaseModel):
    """Liveness and what is loaded."""

    status: Literal["ok"] = "ok"
    version: str
    dataset: str
    loaded: bool
    fitted_at: UtcDatetime | None
    pipelines: list[str]
    items: int | None
    users: int | None
    interactions: int | None
    model_version: int | None = Field(
        default=None,
        description="The published model version this worker serves (null: none; every worker switches to the newest).",
    )


class RefitIn(_In):
    """Which retrievers to refit (all fitted so far when left out)."""

    retrievers: list[str] | None = None


class RefitOut(BaseModel):
    """What a refit did."""

    dataset: str
    users: int
    items: int
    interactions: int
    pipelines: list[str]
    seconds: float
    version: int | None = Field(
        default=None, description="The model version published (null without an artifact folder: this worker only)."
    )
