"""Dependencies shared by the routers: the service of the app, and the caller in each role.

A router (the chat router too) declares ``service: ServiceDep`` and one of ``Caller``, ``Admin`` or ``UserAccess``
to get the service and an authenticated caller.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llmrec.serve.auth import Principal, principal, require_admin, require_user_access
from llmrec.serve.service import RecommenderService

__all__ = ["Admin", "Caller", "ServiceDep", "UserAccess", "get_service"]


async def get_service(request: Request) -> RecommenderService:
    """The service of the app handling ``request`` (set by :func:`~llmrec.serve.app.create_app`).

    ``async`` so that FastAPI calls it on the event loop instead of a thread-pool hop (see :mod:`.auth`).
    """
    return request.app.state.service


ServiceDep = Annotated[RecommenderService, Depends(get_service)]
Caller = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(require_admin)]
UserAccess = Annotated[Principal, Depends(require_user_access)]
