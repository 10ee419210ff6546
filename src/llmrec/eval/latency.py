"""Latency percentiles in the metric-key style of the results JSON (``latency_p50_ms``, ``latency_p95_ms``, ...).

Every benchmark that times calls reports the same summary, so the keys and the percentile definition (numpy's
default linear interpolation between the closest ranks) live here once instead of in each script.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["latency_metrics"]


def latency_metrics(
    ms: Iterable[float] | np.ndarray,
    *,
    percentiles: Sequence[float] = (50, 95),
    prefix: str = "latency",
    mean: bool = False,
    digits: int | None = None,
) -> dict[str, float]:
    """Summarise call times (milliseconds) as ``{prefix}_p{q}_ms`` for each percentile ``q``.

    Args:
        ms: One duration per call, in milliseconds.
        percentiles: Which percentiles to report (0-100); ``99.9`` gives the key ``p99.9``.
        prefix: Key prefix, e.g. ``"cpu"`` for ``cpu_p50_ms``.
        mean: Also report ``{prefix}_mean_ms``.
        digits: Round every value to this many decimals (``None``: full precision).

    Returns:
        The metrics, in the order asked; every value is ``NaN`` when ``ms`` is empty (no calls is not zero
        latency, and a NaN cannot pass a target check by accident).

    """
    arr = np.asarray(list(ms) if not isinstance(ms, np.ndarray) else ms, dtype=np.float64).ravel()
    values: dict[str, float] = {}
    for q in percentiles:
        values[f"{prefix}_p{q:g}_ms"] = float(np.percentile(arr, q)) if arr.size else float("nan")
    if mean:
        values[f"{prefix}_mean_ms"] = float(arr.mean()) if arr.size else float("nan")
    if digits is not None:
        values = {key: round(value, digits) for key, value in values.items()}
    return values
