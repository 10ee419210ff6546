"""Load a script of ``benchmarks/`` as a module (imported by name: tests/ is on sys.path under pytest).

The scripts are not a package, so tests load them by path; registering the module in ``sys.modules`` first lets
dataclasses look their module up while a class is made.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(path: str | Path, name: str | None = None) -> ModuleType:
    """The benchmark script ``path`` (a stem such as ``"generative"``, or a path) as a fresh module."""
    file = Path(path) if Path(path).suffix == ".py" else BENCHMARKS / f"{path}.py"
    spec = importlib.util.spec_from_file_location(name or f"bench_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
