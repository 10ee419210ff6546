"""Data subject rights over a store: forget a user, or export what is stored about them.

Forgetting deletes every row of the user and the cache rows derived from their text. The HTTP API
(``DELETE /v1/users/{id}``, ``GET /v1/users/{id}/export``) and the CLI (``llmrec forget``, ``llmrec export``)
both call these, so they delete and export the same things.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrec.data.store import ForgetReport, Store

__all__ = ["derived_text_hashes", "export_user", "forget_user"]


def derived_text_hashes(store: Store, dataset: str, user_id: str) -> list[str]:
    """Embedding-cache keys of every text derived from a user: each stored text, and its scrubbed form.

    Encoders embed scrubbed text (a profile for the content scorer, a chat query), so both forms are looked up.
    """
    from llmrec.encode.cache import text_hash

    protection = store.protection
    texts: set[str] = set()
    for text in store.user_texts(dataset, user_id):
        texts.update((text, text.strip(), protection.scrub(text)))
    return sorted(text_hash(t) for t in texts if t)


def forget_user(store: Store, dataset: str, user_id: str, *, actor: str) -> ForgetReport:
    """Delete everything ``store`` holds about ``user_id`` of ``dataset`` (see :meth:`Store.forget_user`).

    A server serving the dataset must also stop using the user's fitted data at once: use
    :meth:`llmrec.serve.RecommenderService.forget_user` there, which calls this.
    """
    hashes = derived_text_hashes(store, dataset, user_id)
    return store.forget_user(dataset, user_id, actor=actor, text_hashes=hashes)


def export_user(store: Store, dataset: str, user_id: str, *, actor: str) -> dict[str, Any]:
    """Everything ``store`` holds about ``user_id`` of ``dataset`` (see :meth:`Store.export_user`)."""
    return store.export_user(dataset, user_id, actor=actor)
