"""Where a results file came from: git commit, command line, machine, load and wall time.

A figure without its provenance cannot be reproduced or judged (a benchmark run on a loaded 2-core machine reads
differently from one on a quiet one), so :meth:`llmrec.eval.results.EvalResults.write_json` stamps every file it
writes with :func:`provenance` unless the caller set one.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "provenance"]

_IMPORTED_AT = time.time()


def _process_started() -> float:
    """Start time of this process (epoch seconds); the import time of this module when /proc is absent."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + start_ticks / ticks
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out where ``path`` lies (this package by default), ``+dirty`` when files differ."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def provenance(command: Sequence[str] | None = None) -> dict[str, Any]:
    """Git commit, command line, cores, 1/5/15-minute load average, wall time so far and the platform."""
    argv = list(sys.argv if command is None else command)
    if argv:
        argv[0] = Path(argv[0]).name
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "git_commit": git_commit(),
        "command": shlex.join(argv),
        "cores": _cores(),
        "load_avg": load,
        "wall_s": round(time.time() - _process_started(), 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
