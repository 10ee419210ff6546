"""A recording wrapper around the real encoder (imported by name: tests/ is on sys.path under pytest)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmrec.encode.encoder import TextEncoder


class RecordingEncoder:
    """Wraps a real encoder and records every text that reaches it (same model id, so caches still hit)."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.embedded: list[str] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.encode(texts, show_progress=show_progress)
