"""The ``/v1`` routers, one module per resource; :data:`ROUTERS` lists them in the order the docs show them."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.serve.routes import chat, feedback, interactions, items, keys, privacy, recommendations, system, users

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    system.router,
    items.router,
    users.router,
    interactions.router,
    recommendations.router,
    feedback.router,
    chat.router,
    keys.router,
    privacy.router,
)
