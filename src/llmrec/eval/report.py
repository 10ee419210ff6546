"""HTML report with plots, built from :class:`~llmrec.eval.results.EvalResults` alone (so from the JSON too)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import jinja2

from llmrec.eval.metrics import METRIC_DESCRIPTIONS, metric_direction
from llmrec.eval.results import EvalResults

__all__ = ["render_html", "write_html"]


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _metric_names(results: EvalResults) -> list[str]:
    names: list[str] = []
    for res in results.results:
        names += [m for m in res.metrics if m not in names and m != "n_users"]
    return names


def _value(value: float | None) -> float:
    return float("nan") if value is None else value


def _bars(results: EvalResults, names: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    models = [r.model for r in results.results]
    for ax, name in zip(axes.flat, names, strict=False):
        values = [_value(r.metrics.get(name)) for r in results.results]
        # 95% bootstrap interval over users as error bars (none where a result has no interval).
        low = [v - r.ci95[name][0] if name in r.ci95 else 0.0 for v, r in zip(values, results.results, strict=True)]
        high = [r.ci95[name][1] - v if name in r.ci95 else 0.0 for v, r in zip(values, results.results, strict=True)]
        ax.bar(models, values, color="#4c72b0", yerr=[low, high], capsize=3, ecolor="#333333")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def _curve(results: EvalResults) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for res in results.results:
        if res.popularity_curve:
            xs = range(1, len(res.popularity_curve) + 1)
            ax.plot(xs, res.popularity_curve, marker="o", label=res.model)
    ax.set_xlabel("catalogue popularity decile (1 = most popular)")
    ax.set_ylabel("share of recommendations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def render_html(results: EvalResults) -> str:
    """The report as one self-contained HTML page (plots embedded as PNG)."""
    names = _metric_names(results)
    best: dict[str, str] = {}
    for name in names:
        scored = [(v, r.model) for r in results.results if (v := r.metrics.get(name)) is not None]
        direction = metric_direction(name)
        if not scored or direction == "none":
            continue
        if direction == "higher":
            best[name] = max(scored)[1]
        elif direction == "lower":
            best[name] = min(scored)[1]
        else:  # closest to zero
            best[name] = min((abs(v), m) for v, m in scored)[1]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("llmrec.eval", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("report.html.j2").render(
        r=results,
        metric_names=names,
        best=best,
        descriptions=METRIC_DESCRIPTIONS,
        bars_png=_bars(results, names),
        curve_png=_curve(results),
    )


def write_html(results: EvalResults, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
