"""Health (no key needed), who a key belongs to, and refit (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.feedback import FEEDBACK_KINDS
from llmrec.serve.deps import Admin, Caller, ServiceDep
from llmrec.serve.errors import error_responses
from llmrec.serve.schemas import HealthOut, RefitIn, RefitOut, WhoAmIOut

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthOut)
def health(service: ServiceDep) -> HealthOut:
    """Liveness, and what is loaded and fitted (never loads or fits anything itself)."""
    from llmrec import __version__

    status = service.status()
    return HealthOut(
        version=__version__,
        dataset=status.dataset,
        loaded=status.loaded,
        fitted_at=status.fitted_at,
        pipelines=status.pipelines,
        items=status.items,
        users=status.users,
        interactions=status.interactions,
        model_version=status.model_version,
    )


@router.get("/me", response_model=WhoAmIOut, responses=error_responses(401))
def whoami(service: ServiceDep, caller: Caller) -> WhoAmIOut:
    """The caller's role and user, and the choices a request may make (retrievers, feedback kinds)."""
    config = service.config
    return WhoAmIOut(
        role=caller.role,
        user_id=caller.user_id,
        dataset=service.dataset,
        retrievers=list(config.retrievers),
        default_retriever=config.pipeline.retriever.name,
        feedback_kinds=list(FEEDBACK_KINDS),
    )


@router.post("/admin/refit", response_model=RefitOut, responses=error_responses(400, 401, 403, 422))
def refit(service: ServiceDep, _admin: Admin, body: RefitIn | None = None) -> RefitOut:
    """Reload the dataset from the store and refit the pipelines (new items, users and feedback take effect).

    With an artifact folder the refit is published as a new model version, which every worker of the dataset
    switches to within about a second (``model_version`` in ``/v1/health``); refits on several workers at once run
    one after the other.
    """
    report = service.refit(body.retrievers if body is not None else None)
    return RefitOut(
        dataset=report.dataset,
        users=report.users,
        items=report.items,
        interactions=report.interactions,
        pipelines=report.pipelines,
        seconds=report.seconds,
        version=report.version,
    )
