"""Conversational recommendation: dialogue state, turn understanding, the recommender, feedback, sessions."""

from llmrec.chat.parse import Intent, TurnParse, parse_turn
from llmrec.chat.recommender import FEEDBACK_EVENTS, ChatConfig, ConversationalRecommender, RecommendedItem, Reply
from llmrec.chat.sessions import ChatSession, MemorySessionStore, SessionStore, SqlSessionStore
from llmrec.chat.state import FEEDBACK_KINDS, DialogueState, FeedbackKind, StateUpdate

__all__ = [
    "FEEDBACK_EVENTS",
    "FEEDBACK_KINDS",
    "ChatConfig",
    "ChatSession",
    "ConversationalRecommender",
    "DialogueState",
    "FeedbackKind",
    "Intent",
    "MemorySessionStore",
    "RecommendedItem",
    "Reply",
    "SessionStore",
    "SqlSessionStore",
    "StateUpdate",
    "TurnParse",
    "parse_turn",
]
