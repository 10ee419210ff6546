"""A fake encoder for the encode tests (imported by name: tests/encode is on sys.path under pytest)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import numpy as np


class CountingEncoder:
    """A fast fake encoder: deterministic vectors from the text's hash; records every text it embeds."""

    def __init__(self, dim: int = 8) -> None:
        self.model_id = f"fake-{uuid.uuid4().hex[:12]}"  # unique: PostgreSQL is shared between tests
        self.dim = dim
        self.calls: list[list[str]] = []

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            out[i] = v / np.linalg.norm(v)
        return out
