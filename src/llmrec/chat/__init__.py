"""Conversational recommendation: dialogue state, turn understanding, the recommender, feedback, sessions.

The names below are imported on first use, so reading a turn (:mod:`llmrec.chat.parse`) or a session store does
not load the recommender and, through it, the language-model layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrec.chat.parse import Intent, TurnParse, parse_turn
    from llmrec.chat.recommender import ChatConfig, ConversationalRecommender, RecommendedItem, Reply
    from llmrec.chat.sessions import ChatSession, MemorySessionStore, SessionStore, SqlSessionStore
    from llmrec.chat.state import DialogueState, StateUpdate

_HOMES = {
    "Intent": "parse",
    "TurnParse": "parse",
    "parse_turn": "parse",
    "ChatConfig": "recommender",
    "ConversationalRecommender": "recommender",
    "RecommendedItem": "recommender",
    "Reply": "recommender",
    "ChatSession": "sessions",
    "MemorySessionStore": "sessions",
    "SessionStore": "sessions",
    "SqlSessionStore": "sessions",
    "DialogueState": "state",
    "StateUpdate": "state",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"llmrec.chat.{home}"), name)
    globals()[name] = value
    return value
