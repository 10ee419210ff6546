"""Item and user texts: what the encoder embeds and what prompts quote."""

from __future__ import annotations

import pandas as pd

from llmrec.data.dataset import Dataset

__all__ = ["item_text", "item_texts"]


def _split(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return []
    return [part.strip() for part in str(value).split("|") if part.strip()]


def item_text(row: pd.Series) -> str:
    """One item as text: ``"Title. Genres: a, b. Tags: x, y. Description"`` (empty parts left out)."""
    parts = [str(row.get("title", "") or "").strip()]
    genres = _split(row.get("genres"))
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    tags = _split(row.get("tags"))
    if tags:
        parts.append("Tags: " + ", ".join(tags[:20]))
    text = str(row.get("text", "") or "").strip()
    if text:
        parts.append(text)
    return ". ".join(p for p in parts if p)


def item_texts(data: Dataset) -> list[str]:
    """Text of every catalogue item, in dense index order."""
    return [item_text(row) for _, row in data.items.iterrows()]
