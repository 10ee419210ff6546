"""Health (no key needed) and refit (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.serve.deps import Admin, ServiceDep
from llmrec.serve.errors import error_responses
from llmrec.serve.schemas import HealthOut, RefitIn, RefitOut

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
    )


@router.post("/admin/refit", response_model=RefitOut, responses=error_responses(400, 401, 403, 422))
def refit(service: ServiceDep, _admin: Admin, body: RefitIn | None = None) -> RefitOut:
    """Reload the dataset from the store and refit the pipelines (new items, users and feedback take effect)."""
    report = service.refit(body.retrievers if body is not None else None)
    return RefitOut(
        dataset=report.dataset,
        users=report.users,
        items=report.items,
        interactions=report.interactions,
        pipelines=report.pipelines,
        seconds=report.seconds,
    )
