"""The conversational recommender: each turn updates the dialogue state, then retrieves, reranks and answers.

One turn:

1. :func:`~llmrec.chat.parse.parse_turn` reads the message. Requests for the system prompt, other users' data or
   the store are declined; requests with nothing to do with recommending are declined politely.
2. The state takes the update (liked/disliked/seen items, genre and year constraints, a text query).
3. The pipeline recommends for the state: the liked items (plus the user's own history, for a known user) are
   folded into the retriever (:meth:`~llmrec.pipeline.Pipeline.recommend_history`), mixed with text-search scores
   when the person described what they want, restricted to the items meeting the hard constraints, with every
   disliked, seen, rejected or already shown item excluded, then reranked by the language model.
4. The answer names only catalogue items, each with a grounded reason from the explain stage.

Feedback (thumbs up/down, seen, a rating) changes the state the same way a message does, so the very next answer
reflects it; for a session that belongs to a user it is also stored as an interaction, for the next training run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from llmrec.catalogue import Catalogue
from llmrec.chat.parse import Intent, parse_turn
from llmrec.chat.sessions import ChatSession, MemorySessionStore, SessionStore, Turn, new_session_id
from llmrec.chat.state import DialogueState, StateUpdate
from llmrec.errors import ConfigError, UnknownIdError
from llmrec.feedback import DEFAULT_RATING_RANGE, FeedbackKind, Taste, polarity, validate_feedback
from llmrec.llm.explain import Explainer
from llmrec.privacy.at_rest import TextProtection
from llmrec.query import Query, RecommendedItem
from llmrec.text.pii import PiiKind

if TYPE_CHECKING:
    from llmrec.data.store import Store
    from llmrec.models.content import Content
    from llmrec.pipeline import Pipeline

__all__ = ["ChatConfig", "ConversationalRecommender", "RecommendedItem", "Reply"]

log = logging.getLogger(__name__)

DECLINE_REFUSED = (
    "I can't help with that: I only recommend {noun}s from the catalogue, and I never share other people's data "
    "or how I am set up. Tell me a {noun} you liked, or a genre you're in the mood for."
)
DECLINE_OUT_OF_SCOPE = (
    "That's outside what I can do: I recommend {noun}s. Tell me a {noun} you liked, a genre, or a decade."
)
GREETING = "Hi! Tell me a {noun} you liked, or what you're in the mood for (a genre, a decade, a few words)."
RESET = "Starting over. What are you in the mood for?"
FIXED_ANSWERS: dict[str, str] = {
    "refused": DECLINE_REFUSED,
    "out_of_scope": DECLINE_OUT_OF_SCOPE,
    "greeting": GREETING,
    "reset": RESET,
}
"""Intents answered without recommending (a reset also clears the state)."""

# The scrubber's placeholders ([EMAIL], [NATIONAL_ID]...): left out of what the parser reads, so they never become
# search words or titles.
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(k.value.upper() for k in PiiKind) + r")\]")


class ChatConfig(BaseModel):
    """Settings of the conversational recommender.

    Attributes:
        k: Items recommended per answer.
        rerank: Let the language model rerank (when the pipeline has a rerank stage).
        query_weight: Share of text-search scores when the person described what they want.
        explain_with_lm: Let the language model phrase each reason (checked against the evidence, slow on a CPU);
            ``False`` writes reasons from the evidence alone (instant, grounded by construction).
        item_noun: What the items are called in answers.
        query_candidates: With a described wish ("something with dinosaurs") and a text searcher, only the
            items among this many best text matches qualify.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=5, ge=1, le=50)
    rerank: bool = True
    query_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    explain_with_lm: bool = False
    item_noun: str = "movie"
    query_candidates: int = Field(default=200, ge=1)


@dataclass(frozen=True)
class _Pending:
    """A message understood, before recommending: its intent, the state it leads to, a fixed answer if any."""

    intent: Intent
    state: DialogueState
    answer: str | None

    @property
    def recommend(self) -> bool:
        """Whether the turn asks for recommendations (no fixed answer)."""
        return self.answer is None


@dataclass(frozen=True)
class Reply:
    """The answer to one turn.

    Attributes:
        session_id: The conversation.
        intent: How the turn was read (see :data:`~llmrec.chat.parse.Intent`).
        text: The answer in words (names catalogue items only).
        items: The recommended items (empty when the turn was declined or nothing qualifies).
        state: The dialogue state after the turn.
    """

    session_id: str
    intent: Intent
    text: str
    items: list[RecommendedItem] = field(default_factory=list)
    state: DialogueState = field(default_factory=DialogueState)


class ConversationalRecommender:
    """Multi-turn recommendation over a fitted :class:`~llmrec.pipeline.Pipeline` (see the module docstring).

    Args:
        pipeline: A fitted pipeline; its data's catalogue is what the conversation is about.
        sessions: Where sessions live (default: in memory; :class:`~llmrec.chat.sessions.SqlSessionStore` keeps
            them in the database).
        store: The store that receives feedback of user-owned sessions as interactions (optional).
        dataset: The store dataset those interactions go to (default: the pipeline data's name).
        searcher: A fitted :class:`~llmrec.models.content.Content` scorer on the same data, for text queries
            ("a heist set in Europe"); without one, descriptions only steer through genres and years.
        config: Settings.
        user_exists: Tells whether a user id may own a session (default: a user of the pipeline's data); a
            server passes its own check, so users created after the fit can chat too (cold, from their session).
        recent: A user's interactions since the fit (a server reads them from its store): liked ones join the
            history, disliked ones leave it, and none of them is recommended again.
        protection: How messages are stored (scrubbed; raw text encrypted when kept); ``store.protection`` when a
            store is given, else scrub only.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        sessions: SessionStore | None = None,
        store: Store | None = None,
        dataset: str | None = None,
        searcher: Content | None = None,
        config: ChatConfig | None = None,
        user_exists: Callable[[str], bool] | None = None,
        recent: Callable[[str], Taste] | None = None,
        rating_range: tuple[float, float] = DEFAULT_RATING_RANGE,
        protection: TextProtection | None = None,
    ) -> None:
        self.pipeline = pipeline
        if protection is None:
            protection = store.protection if store is not None else TextProtection()
        self.protection = protection
        self.data = pipeline.data
        self.sessions: SessionStore = sessions or MemorySessionStore()
        self.store = store
        self.dataset = dataset or self.data.name
        self.searcher = searcher
        self.config = config or ChatConfig()
        self._user_exists = user_exists or (lambda u: u in self.data.user_vocab)
        self._recent = recent
        self.rating_range = rating_range
        self.catalogue = Catalogue.of(self.data)
        n = len(self.catalogue)
        self._years = np.array([self.catalogue.year(i) or 0 for i in range(n)], dtype=np.int64)
        self._newest = int(self._years.max()) if (self._years > 0).any() else None
        self._popularity = self.data.item_popularity
        self.explainer = (
            pipeline.explainer if self.config.explain_with_lm else Explainer(None, self.data, pipeline.config.explain)
        )

    # -- sessions -------------------------------------------------------------------------------------------

    def start(self, user_id: str | None = None) -> ChatSession:
        """A new conversation, anonymous or for a user of the pipeline's data.

        Raises:
            UnknownIdError: ``user_id`` is not a user of the data.
        """
        if user_id is not None and not self._user_exists(user_id):
            raise UnknownIdError(
                f"unknown user '{user_id}'", field="user_id", fix=f"use a user id of dataset '{self.dataset}'"
            )
        session = ChatSession(id=new_session_id(), dataset=self.dataset, user_id=user_id)
        self.sessions.save(session)
        return session

    def session(self, session_id: str) -> ChatSession:
        """The stored session (:class:`UnknownIdError` when there is none)."""
        return self.sessions.load(session_id)

    def edit_state(self, session_id: str, state: DialogueState) -> ChatSession:
        """Replace a session's state (the person corrected what the system understood).

        Raises:
            UnknownIdError: The session, or an item id in the state, is unknown.
        """
        session = self.sessions.load(session_id)
        self._check_items(state.liked + state.disliked + state.seen + state.rejected + state.recommended)
        session.state = state
        self.sessions.save(session)
        return session

    def _check_items(self, item_ids: list[str]) -> None:
        idx = self.data.item_vocab.index(item_ids, missing="negative")
        if (idx < 0).any():
            bad = [i for i, x in zip(item_ids, idx, strict=True) if x < 0]
            raise UnknownIdError(
                f"unknown item ids {bad[:5]}", field="item_id", fix=f"use item ids of dataset '{self.dataset}'"
            )

    # -- turns ----------------------------------------------------------------------------------------------

    def turn(self, session_id: str, text: str) -> Reply:
        """Answer one user message (see the module docstring).

        Raises:
            UnknownIdError: There is no such session.
            ConfigError: ``text`` is empty.
        """
        session, pending = self._understand(session_id, text)
        items = self.recommend(session.user_id, pending.state) if pending.recommend else []
        return self._conclude(session, pending, items)

    def stream_turn(self, session_id: str, text: str) -> Iterator[dict[str, Any]]:
        """One turn as events for server-sent streaming, each sent as soon as it is known.

        ``state`` (how the message was read and the state it leads to) comes before the slow part; then one
        ``item`` per recommendation; then ``done`` with the whole answer. Errors are raised before the first event.
        """
        session, pending = self._understand(session_id, text)
        return self._stream(session, pending)

    def _stream(self, session: ChatSession, pending: _Pending) -> Iterator[dict[str, Any]]:
        yield {"event": "state", "data": {"intent": pending.intent, "state": pending.state.model_dump()}}
        items = self.recommend(session.user_id, pending.state) if pending.recommend else []
        for item in items:
            yield {"event": "item", "data": item.as_dict()}
        reply = self._conclude(session, pending, items)
        yield {"event": "done", "data": {"text": reply.text, "state": reply.state.model_dump()}}

    def _understand(self, session_id: str, text: str) -> tuple[ChatSession, _Pending]:
        """Read a message against the session: the intent, the state it leads to, and whether to recommend."""
        if not text or not text.strip():
            raise ConfigError("the message is empty. Fix: say what you'd like, e.g. 'something funny from the 90s'")
        session = self.sessions.load(session_id)
        # PII is scrubbed from the message as typed, before parsing splits it into words, so no part of an e-mail
        # address or a street address can become a title, a genre or a search query; only the scrubbed text is
        # stored (the raw one only encrypted, when the deployment keeps it).
        stored = self.protection.protect(text)
        text = stored.text[:2000]
        state = session.state
        parsed = parse_turn(
            _PLACEHOLDER.sub(" ", text),
            self.catalogue,
            recommended=frozenset(state.recommended),
            popularity=self._popularity,
            newest_year=self._newest,
        )
        session.turns.append(Turn(role="user", text=text, raw=stored.raw))
        fixed = FIXED_ANSWERS.get(parsed.intent)
        answer = fixed.format(noun=self.config.item_noun) if fixed else None
        if parsed.intent != "reset" and answer is not None:  # declined or greeted: the state stays as it was
            return session, _Pending(parsed.intent, state, answer)
        state = state.apply(parsed.update)
        state.turns += 1
        return session, _Pending(parsed.intent, state, answer)

    def _conclude(self, session: ChatSession, pending: _Pending, items: list[RecommendedItem]) -> Reply:
        """Write the answer, remember what was shown, and save the session."""
        state = pending.state
        if pending.recommend:
            state.recommended = list(dict.fromkeys(state.recommended + [i.item_id for i in items]))
            answer = self._answer(state, items)
        else:
            answer = pending.answer or ""
        session.state = state
        session.turns.append(Turn(role="assistant", text=answer, items=[i.item_id for i in items]))
        self.sessions.save(session)
        return Reply(session.id, pending.intent, answer, items, state)

    # -- feedback -------------------------------------------------------------------------------------------

    def feedback(self, session_id: str, item_id: str, kind: FeedbackKind, value: float | None = None) -> ChatSession:
        """Record feedback on an item: the next answer reflects it (see the module docstring).

        A thumbs-up and a rating of 4 or more like the item; a thumbs-down and a rating of 2 or less dislike it;
        anything else marks it seen (:func:`llmrec.feedback.polarity`). For a session of a known user, the
        feedback is also stored as an interaction (:data:`llmrec.feedback.FEEDBACK_VALUES`).

        Raises:
            UnknownIdError: The session or item is unknown.
            ConfigError: An unknown kind; a rating without a value, or with one outside ``rating_range``; a value
                for another kind (:func:`llmrec.feedback.validate_feedback`, as the HTTP API's ``feedback``).
        """
        session = self.sessions.load(session_id)
        self._check_items([item_id])
        value = validate_feedback(kind, value, self.rating_range)
        taste = polarity(kind, value)
        if taste == "liked":
            update = StateUpdate(liked=[item_id])
        elif taste == "disliked":
            update = StateUpdate(disliked=[item_id])
        else:
            update = StateUpdate(seen=[item_id])
        session.state = session.state.apply(update)
        self.sessions.save(session)
        if self.store is not None and session.user_id is not None:
            row = {
                "user_id": session.user_id,
                "item_id": item_id,
                "timestamp": int(time.time()),
                "value": value,
                "event": kind,
            }
            self.store.ingest_interactions(self.dataset, pd.DataFrame([row]))
        return session

    # -- recommending ---------------------------------------------------------------------------------------

    def allowed(self, state: DialogueState) -> list[str] | None:
        """Item ids meeting the state's hard constraints (``None``: no constraints, every item)."""
        keep = self.catalogue.filters().mask(
            genres=state.genres_include,
            exclude_genres=state.genres_exclude,
            year_min=state.year_min,
            year_max=state.year_max,
            strict=False,  # a genre the catalogue lacks ("film noir" here) matches nothing: the answer says so
            all_genres=state.genres_all,  # "a sci-fi thriller": every one of them
        )
        return None if keep is None else [str(i) for i in self.catalogue.item_ids[keep]]

    def query(self, user_id: str | None, state: DialogueState) -> Query | None:
        """The pipeline query of a conversation's state (``None`` when its constraints leave no item).

        The session's liked items (plus, for a user, what they liked elsewhere since the last fit) are folded into
        the user's fitted history; disliked, seen, rejected and already shown items are left out; the hard
        constraints choose the candidates; a described wish becomes text-search scores.
        """
        liked, disliked, exclude = list(state.liked), list(state.disliked), state.excluded()
        if user_id is not None:
            # What the user did outside this conversation since the last fit (the page's list, the API) counts too.
            taste = self._recent(user_id) if self._recent is not None else Taste()
            liked, disliked = taste.liked + liked, taste.disliked + disliked
            exclude = exclude + taste.touched
        allowed = self.allowed(state)
        if allowed is not None and not allowed:
            return None
        text = None
        if state.query and self.searcher is not None:
            text = self.searcher.text_scores(state.query)
            # The description is honoured, not only mixed in: only the items that best match it qualify.
            best = {str(i) for i in self.catalogue.item_ids[np.argsort(-text)[: self.config.query_candidates]]}
            allowed = [i for i in (allowed if allowed is not None else map(str, self.catalogue.item_ids)) if i in best]
        if state.avoid and self.searcher is not None:  # "less violent": away from items described that way
            away = self.searcher.text_scores(" ".join(state.avoid))
            text = -away if text is None else text - away
        return Query(
            user=user_id,
            liked=tuple(liked),
            disliked=tuple(disliked),
            exclude=tuple(exclude),
            candidates=None if allowed is None else tuple(allowed),
            text_scores=text,
            text_weight=self.config.query_weight,
        )

    def recommend(self, user_id: str | None, state: DialogueState) -> list[RecommendedItem]:
        """Items for this state (and user, when known), best first, each with a grounded reason."""
        query = self.query(user_id, state)
        if query is None:
            return []
        use_lm = self.config.rerank and self.pipeline.config.rerank is not None
        k = min(self.config.k, self.pipeline.config.candidates)
        recs = self.pipeline.recommend([query], k, rerank=use_lm)
        history = self.pipeline.liked_history(query)
        out = []
        for rank, (idx, item_id, score) in enumerate(
            zip(recs.item_idx[0], recs.items[0], recs.scores[0], strict=True), 1
        ):
            if idx < 0:
                continue
            out.append(
                RecommendedItem(
                    item_id=str(item_id),
                    rank=rank,
                    score=float(score),
                    title=self.catalogue.title(int(idx)) or str(item_id),
                    year=self.catalogue.year(int(idx)),
                    genres=self.catalogue.genres(int(idx)),
                    explanation=self.explainer.explain(history, item_id),
                )
            )
        return out

    def _words_note(self, state: DialogueState) -> str:
        """What the answer did with the described wish and the words to avoid (or why it could not)."""
        said = [f"matching \u201c{state.query}\u201d"] if state.query else []
        said += [f"steering away from \u201c{' '.join(state.avoid)}\u201d"] if state.avoid else []
        if not said:
            return ""
        if self.searcher is None:
            return f"I can't search by description here (no text searcher is set up), so I am not {' or '.join(said)}. "
        return "Searching by description: " + "; ".join(said) + ". "

    def _answer(self, state: DialogueState, items: list[RecommendedItem]) -> str:
        noun = self.config.item_noun
        wanted = state.describe()
        if not items:
            return self._words_note(state) + (
                f"I found no {noun}s that fit ({wanted or 'everything is excluded'}). "
                "Try loosening a constraint, or say 'start over'."
            )
        lead = f"Here are {noun}s " + (f"that fit ({wanted})" if wanted else "you might like") + ":"
        lines = [self._words_note(state) + lead]
        for n, item in enumerate(items, 1):
            year = f" ({item.year})" if item.year else ""
            lines.append(f"{n}. {item.title}{year}: {item.reason}")
        return "\n".join(lines)
