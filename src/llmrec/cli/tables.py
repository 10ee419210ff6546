"""Tables of evaluation results for the terminal (also used by the benchmarks' printouts)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def metrics_table(results: Any, columns: list[str] | None = None) -> Table:
    """A rich table of the results (one row per model)."""
    k = results.k
    columns = columns or [f"ndcg@{k}", f"recall@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}", f"novelty@{k}"]
    table = Table(title=f"{results.dataset} - {results.protocol}, full ranking, k={k}")
    table.add_column("model")
    for col in columns:
        table.add_column(col, justify="right")
    table.add_column("fit s", justify="right")
    with_memory = any(res.peak_rss_mb is not None for res in results.results)
    if with_memory:
        table.add_column("peak MB", justify="right")
    for res in results.results:
        values = [_with_interval(res, c, first=i == 0) for i, c in enumerate(columns)]
        memory = [f"{res.peak_rss_mb:.0f}" if res.peak_rss_mb is not None else "-"] if with_memory else []
        table.add_row(res.model, *values, f"{res.fit_s:.2f}", *memory)
    return table


def _with_interval(res: Any, column: str, *, first: bool) -> str:
    """A metric cell: the value (mean over seeds, with sd) and, for the first column, its 95% interval."""
    value = res.metrics.get(column)
    if value is None:
        return "-"
    text = f"{value:.4f}"
    if res.metrics_sd.get(column) is not None:
        text += f" ±{res.metrics_sd[column]:.4f}"
    if first and column in res.ci95:
        low, high = res.ci95[column]
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def comparisons_table(results: Any) -> Table:
    """A rich table of the paired comparisons: against the reference model, or each against its own ``b``."""
    references = {c.b for c in results.comparisons}
    mixed = len(references) > 1 or (bool(references) and references != {results.reference})
    vs = "each model's named baseline" if mixed else results.reference
    table = Table(title=f"paired differences vs {vs} (95% bootstrap interval over users)")
    for col in ("model", "metric", "diff", "95% interval", "p", "verdict"):
        table.add_column(col, justify="left" if col in ("model", "metric", "verdict") else "right")
    for c in results.comparisons:
        table.add_row(
            f"{c.a} vs {c.b}" if mixed else c.a,
            c.metric,
            f"{c.diff:+.4f}",
            f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]",
            f"{c.p_value:.4f}",
            c.verdict,
        )
    return table
