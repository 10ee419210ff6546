"""Conversational recommendation: dialogue state, turn understanding, the recommender, feedback, sessions."""

from llmrec.chat.parse import Intent, TurnParse, parse_turn
from llmrec.chat.recommender import ChatConfig, ConversationalRecommender, RecommendedItem, Reply
from llmrec.chat.sessions import ChatSession, MemorySessionStore, SessionStore, SqlSessionStore
from llmrec.chat.state import DialogueState, StateUpdate

__all__ = [
    "ChatConfig",
    "ChatSession",
    "ConversationalRecommender",
    "DialogueState",
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
