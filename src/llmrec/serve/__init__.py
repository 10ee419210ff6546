"""The HTTP API (FastAPI): items, users, interactions, recommendations, feedback, API keys; ``llmrec serve``.

Needs the ``serve`` extra (``pip install 'llmrec[serve]'``). :func:`create_app` builds an app around a
:class:`RecommenderService` (the store dataset, its fitted pipelines, feedback); routers live in
:mod:`llmrec.serve.routes`, dependencies for new routers in :mod:`llmrec.serve.deps`.
"""

from llmrec.serve.app import API_PREFIX, create_app
from llmrec.serve.auth import Principal
from llmrec.serve.config import ServeConfig
from llmrec.serve.service import (
    FeedbackResult,
    RecommendationOptions,
    RecommendationResult,
    RecommendedItem,
    RecommenderService,
    RefitReport,
)

__all__ = [
    "API_PREFIX",
    "FeedbackResult",
    "Principal",
    "RecommendationOptions",
    "RecommendationResult",
    "RecommendedItem",
    "RecommenderService",
    "RefitReport",
    "ServeConfig",
    "create_app",
]
