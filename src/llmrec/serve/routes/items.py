"""Items: create, read, update, delete (admin); list, text and semantic search (any key)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from llmrec.serve.deps import Admin, Caller, ServiceDep
from llmrec.serve.errors import error_responses
from llmrec.serve.schemas import MAX_OFFSET, DeletedOut, ItemIn, ItemOut, ItemPage, ItemPatch, PathId

__all__ = ["router"]

router = APIRouter(prefix="/items", tags=["items"], responses=error_responses(401, 422))


@router.get("", response_model=ItemPage, responses=error_responses(400))
def list_items(
    service: ServiceDep,
    _caller: Caller,
    q: Annotated[str | None, Query(max_length=500, description="Words the title or text must all hold.")] = None,
    mode: Annotated[
        Literal["text", "semantic"],
        Query(description="text: substring match per word (fast); semantic: by meaning, with the text encoder."),
    ] = "text",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ItemPage:
    """List items in catalogue order, or search them with ``q``."""
    if mode == "semantic" and q:
        # A search ranks at most the whole catalogue: an offset past it is an empty page, not a huge allocation.
        hits = service.search_items(q, k=offset + limit)[offset:] if offset < service.catalogue_size() else []
        items = [ItemOut.of(record, score) for record, score in hits]
        return ItemPage(items=items, total=offset + len(items), offset=offset, limit=limit, next_offset=None)
    page = service.list_items(offset, limit, q)
    return ItemPage(
        items=[ItemOut.of(r) for r in page.records],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        next_offset=page.next_offset,
    )


@router.post("", response_model=ItemOut, status_code=201, responses=error_responses(403, 409))
def create_item(body: ItemIn, service: ServiceDep, _admin: Admin) -> ItemOut:
    """Add an item to the catalogue (recommendable after the next refit)."""
    return ItemOut.of(service.create_item(body.item_id, body.title, body.text, body.attributes))


@router.get("/{item_id}", response_model=ItemOut, responses=error_responses(404))
def get_item(item_id: PathId, service: ServiceDep, _caller: Caller) -> ItemOut:
    """One item."""
    return ItemOut.of(service.get_item(item_id))


@router.patch("/{item_id}", response_model=ItemOut, responses=error_responses(403, 404))
def update_item(item_id: PathId, body: ItemPatch, service: ServiceDep, _admin: Admin) -> ItemOut:
    """Change an item's title, text or attributes (attributes merge; null removes one)."""
    return ItemOut.of(service.update_item(item_id, title=body.title, text=body.text, attributes=body.attributes))


@router.delete("/{item_id}", response_model=DeletedOut, responses=error_responses(403, 404))
def delete_item(item_id: PathId, service: ServiceDep, _admin: Admin) -> DeletedOut:
    """Delete an item and its interactions; it is not recommended again."""
    service.delete_item(item_id)
    return DeletedOut(deleted=item_id)
