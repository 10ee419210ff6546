"""API keys (admin only): make a user's key (shown once), list keys, revoke one."""

from __future__ import annotations

from fastapi import APIRouter

from llmrec.errors import UnknownIdError
from llmrec.serve.auth import issue_user_key
from llmrec.serve.deps import Admin, ServiceDep
from llmrec.serve.errors import error_responses
from llmrec.serve.schemas import KeyCreated, KeyIn, KeyOut, KeysOut, PathId, QueryId

__all__ = ["router"]

router = APIRouter(prefix="/keys", tags=["keys"], responses=error_responses(401, 403, 422))


@router.post("", response_model=KeyCreated, status_code=201, responses=error_responses(404))
def create_key(body: KeyIn, service: ServiceDep, _admin: Admin) -> KeyCreated:
    """Make a key for a user; it can read and write only that user's data (and read items)."""
    service.get_user(body.user_id)  # 404 for an unknown user
    key, record = issue_user_key(service, body.user_id, body.expires_in_s)
    return KeyCreated(key=key, **KeyOut.of(record).model_dump())


@router.get("", response_model=KeysOut)
def list_keys(service: ServiceDep, _admin: Admin, user_id: QueryId = None) -> KeysOut:
    """The keys of the served dataset (of one user with ``user_id``)."""
    return KeysOut(keys=[KeyOut.of(k) for k in service.store.api_keys(service.dataset, user_id)])


@router.delete("/{key_id}", response_model=KeyOut, responses=error_responses(404))
def revoke_key(key_id: PathId, service: ServiceDep, _admin: Admin) -> KeyOut:
    """Revoke a key; requests with it get 401 from now on."""
    if not service.store.revoke_api_key(service.dataset, key_id):
        raise UnknownIdError(f"no active key {key_id!r} in dataset {service.dataset!r}")
    record = next(k for k in service.store.api_keys(service.dataset) if k.key_id == key_id)
    return KeyOut.of(record)
