"""README figure tables rendered from the committed results JSON under ``results/``, so no figure can go stale.

Every result table in README.md sits between two marker lines::

    <!-- figures:baselines -->
    ...generated, never edited by hand...
    <!-- /figures:baselines -->

and ``results/tables.toml`` says, per block name, which JSON file feeds it (relative to ``results/``), which rows
and columns it shows, how numbers are formatted and whether a caption names the source file and the command
that produced it. ``python -m llmrec.eval.figures --write`` (``make figures``) rewrites every block from the
JSON; ``--check`` (the default) and ``tests/eval/test_figures.py`` fail when a block differs from what the JSON
gives, so a hand-typed or stale number cannot survive a test run.

Block kinds:

* ``table`` (default): one row per element of a list in the JSON. By default the list is ``results`` of the
  results shape (``{"dataset", "protocol", "k", "results": [{"model", "metrics", "ci95", ...}], ...}``) and rows
  are picked by their ``model``; ``rows = "variants"`` and ``key = "name"`` point at any other list (or
  object, whose keys then name the rows), so benchmarks that do not write the results shape feed tables too.
  Columns are dotted paths into each row (``metrics.ndcg@10``, ``fit_s``, ``config``); a key that itself
  contains dots is matched before it is split.
* ``comparisons``: one row per paired comparison in ``comparisons``
  (``{"a", "b", "metric", "diff", "ci95", "p_value", "n_users"}``, ``diff`` = a minus b), rendered as
  ``a vs b | metric | diff | 95% interval | p | verdict``; the verdict is ``better`` / ``worse`` (for ``a``) when
  the interval excludes 0, else ``within noise``.

Value rendering: missing, ``null``, NaN and empty containers render ``-``; with ``ci = true`` a value with an
interval renders ``0.0411 [0.0350, 0.0470]`` and, when the row has more than one seed, ``0.0493 ± 0.0050
[0.0420, 0.0570]`` (mean ± sd, then the interval), every number in the column's format.

The format of ``results/tables.toml`` is described in ``results/README.md``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import statistics
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmrec.errors import LlmrecError

__all__ = [
    "BlockSpec",
    "ColumnSpec",
    "FigureSpecError",
    "FiguresError",
    "MarkerError",
    "MissingResultsError",
    "MissingRowError",
    "RowSpec",
    "StaleFiguresError",
    "check",
    "find_blocks",
    "format_value",
    "load_specs",
    "main",
    "regenerate",
    "render_block",
    "render_blocks",
    "resolve_path",
    "write",
]

README = "README.md"
RESULTS_DIR = "results"
SPEC_FILE = "tables.toml"
MISSING = "-"

Align = Literal["left", "right", "center"]
_ALIGN_RULE: dict[str | None, str] = {None: "---", "left": ":---", "right": "---:", "center": ":---:"}
_NAME = r"[A-Za-z0-9_.-]+"
_START = re.compile(rf"^<!-- figures:({_NAME}) -->$")
_END = re.compile(rf"^<!-- /figures:({_NAME}) -->$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*/?\s*figures:")


# -- errors ----------------------------------------------------------------------------------------------------
class FiguresError(LlmrecError):
    """Base class of the figure errors: the README tables cannot be generated or checked."""


class FigureSpecError(FiguresError):
    """``results/tables.toml`` is malformed, or names a path or format that does not fit the JSON."""


class MissingResultsError(FiguresError):
    """A block's results JSON is not in ``results/``; the message names the file and the command to produce it.

    Attributes:
        block: The block name.
        path: The missing file.
        command: The command that produces it (from the block spec), or ``None`` when the spec records none.

    """

    def __init__(self, block: str, path: Path, command: str | None) -> None:
        self.block = block
        self.path = path
        self.command = command
        how = (
            f"produce it with `{command}` and commit it"
            if command
            else f"no command is recorded for it: add `command = ...` to [blocks.{block}] in {RESULTS_DIR}/{SPEC_FILE}"
        )
        super().__init__(f"figures block {block!r}: results file {path} does not exist; {how}")


class MissingRowError(FiguresError):
    """A row (or comparison) the spec asks for is not in the block's results JSON."""


class MarkerError(FiguresError):
    """README markers are unbalanced, duplicated, or do not match the blocks of ``results/tables.toml``."""


class StaleFiguresError(FiguresError):
    """README blocks differ from what their results JSON gives (``make figures`` rewrites them).

    Attributes:
        stale: Names of the blocks that differ.
        diff: A unified diff, README text to generated text.

    """

    def __init__(self, stale: Sequence[str], diff: str) -> None:
        self.stale = list(stale)
        self.diff = diff
        super().__init__(
            f"README figure blocks differ from their results JSON: {', '.join(self.stale)}. "
            f"Run `make figures` (python -m llmrec.eval.figures --write) and commit README.md.\n{diff}"
        )


# -- the spec --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnSpec:
    """One table column.

    Attributes:
        header: Column header text.
        path: Dotted path into each row (``metrics.ndcg@10``), or several paths whose values are joined by
            ``join`` in one cell (``["cos_mean", "cos_min"]`` -> ``0.9996 / 0.9992``).
        format: Python format spec for numbers (``".4f"``, ``",.0f"``); ``None`` prints the value as it is.
        ci: Append the row's 95% interval (and ``± sd`` when the row has more than one seed).
        ci_path: Where the interval ``[low, high]`` is; default: ``metrics.X`` -> ``ci95.X``, else ``ci95.<path>``.
        sd_path: Where the seed standard deviation is; default: ``metrics.X`` -> ``metrics_sd.X``, else
            ``metrics_sd.<path>``; when absent it is computed from ``per_seed``.
        align: ``left``, ``right`` or ``center``; ``None`` leaves it to the renderer (``---``).
        join: Separator of the values of a multi-path column.

    """

    header: str
    path: tuple[str, ...]
    format: str | None = None
    ci: bool = False
    ci_path: str | None = None
    sd_path: str | None = None
    align: Align | None = None
    join: str = " / "


@dataclass(frozen=True)
class RowSpec:
    """One selected row.

    Attributes:
        match: The row's key value (its ``model`` in the results shape); ``None`` in a comparisons block.
        label: Text of the first cell (default: the key value, or ``a vs b``).
        bold: ``True`` bolds every cell of the row; a list of headers bolds only those cells (the first column's
            header names the label cell).
        a: Comparisons only: the first model (``None`` matches any).
        b: Comparisons only: the second model (``None`` matches any).
        metric: Comparisons only: the metric key (``None`` matches any).

    """

    match: str | None = None
    label: str | None = None
    bold: bool | tuple[str, ...] = False
    a: str | None = None
    b: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class BlockSpec:
    """One README table: where its numbers come from and how they are shown.

    Attributes:
        name: Block name, as in the README markers.
        source: Results JSON, relative to ``results/``.
        command: The command that writes ``source`` (named when the file is missing; the caption's fallback when
            the JSON has no ``provenance.command``).
        kind: ``table`` or ``comparisons``.
        rows: Dotted path of the row list (default ``results``, or ``comparisons`` for that kind).
        key: Dotted path, in each row, of the value that ``RowSpec.match`` selects by (default ``model``).
        label_header: Header of the first column, the row label; empty string for no label column.
        row: The rows in table order; empty means every row of the list, in file order.
        column: The columns after the label (in the TOML, ``columns_from = "OTHER"`` takes an earlier table
            block's columns instead of repeating them).
        caption: ``True`` for the default line under the table (source file and command), a string for a custom
            one (``{source}``, ``{command}``, ``{dataset}``, ``{protocol}``, ``{k}`` and every ``provenance`` key
            are filled in), ``False`` for none.
        format: Comparisons only: number format of the diff and its interval.
        p_format: Comparisons only: number format of the p-value.
        metric_labels: Comparisons only: display names of metric keys (``{"ndcg@10" = "NDCG@10"}``).

    """

    name: str
    source: str
    command: str | None = None
    kind: Literal["table", "comparisons"] = "table"
    rows: str = "results"
    key: str = "model"
    label_header: str = "model"
    row: tuple[RowSpec, ...] = ()
    column: tuple[ColumnSpec, ...] = ()
    caption: bool | str = False
    format: str = "+.4f"
    p_format: str = ".3f"
    metric_labels: Mapping[str, str] = field(default_factory=dict)


def _fail(block: str, message: str) -> FigureSpecError:
    return FigureSpecError(f"{RESULTS_DIR}/{SPEC_FILE}, block {block!r}: {message}")


def _take(raw: Mapping[str, Any], allowed: Mapping[str, type | tuple[type, ...]], block: str, where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _fail(block, f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key, types in allowed.items():
        if key in raw and not isinstance(raw[key], types):
            raise _fail(block, f"{where}: {key} = {raw[key]!r} has the wrong type")


def _column(raw: Mapping[str, Any], block: str, i: int) -> ColumnSpec:
    where = f"column {i + 1}"
    _take(
        raw,
        {
            "header": str,
            "path": (str, list),
            "format": str,
            "ci": bool,
            "ci_path": str,
            "sd_path": str,
            "align": str,
            "join": str,
        },
        block,
        where,
    )
    if "path" not in raw:
        raise _fail(block, f"{where}: needs a path")
    paths = (raw["path"],) if isinstance(raw["path"], str) else tuple(raw["path"])
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise _fail(block, f"{where}: path must be a non-empty string or list of strings")
    align = raw.get("align")
    if align not in _ALIGN_RULE:
        raise _fail(block, f"{where}: align must be left, right or center, got {align!r}")
    fmt = raw.get("format")
    if fmt is not None:
        try:
            format(1.5, fmt)
        except ValueError as exc:
            raise _fail(block, f"{where}: format {fmt!r} is not a Python number format ({exc})") from None
    return ColumnSpec(
        header=raw.get("header", paths[0]),
        path=paths,
        format=fmt,
        ci=raw.get("ci", False),
        ci_path=raw.get("ci_path"),
        sd_path=raw.get("sd_path"),
        align=align,
        join=raw.get("join", " / "),
    )


def _row(raw: Mapping[str, Any], block: str, i: int, kind: str) -> RowSpec:
    where = f"row {i + 1}"
    _take(
        raw,
        {"model": str, "match": str, "label": str, "bold": (bool, list), "a": str, "b": str, "metric": str},
        block,
        where,
    )
    bold = raw.get("bold", False)
    bold = tuple(bold) if isinstance(bold, list) else bold
    if kind == "comparisons":
        if "model" in raw or "match" in raw:
            raise _fail(block, f"{where}: a comparisons row selects by a, b and metric, not model/match")
        return RowSpec(label=raw.get("label"), bold=bold, a=raw.get("a"), b=raw.get("b"), metric=raw.get("metric"))
    if {"a", "b", "metric"} & set(raw):
        raise _fail(block, f"{where}: a, b and metric are for comparisons blocks")
    if ("model" in raw) == ("match" in raw):
        raise _fail(block, f"{where}: give exactly one of model = ... or match = ...")
    return RowSpec(match=raw.get("model", raw.get("match")), label=raw.get("label"), bold=bold)


def _block(name: str, raw: Any) -> BlockSpec:
    if not isinstance(raw, dict):
        raise _fail(name, "must be a table ([blocks.NAME])")
    if not re.fullmatch(_NAME, name):
        raise _fail(name, "a block name may hold only letters, digits, '_', '.' and '-'")
    _take(
        raw,
        {
            "source": str,
            "command": str,
            "kind": str,
            "rows": str,
            "key": str,
            "label_header": str,
            "row": list,
            "column": list,
            "caption": (bool, str),
            "format": str,
            "p_format": str,
            "metric_labels": dict,
        },
        name,
        "block",
    )
    if "source" not in raw:
        raise _fail(name, "needs source = '<file>.json' (relative to results/)")
    kind = raw.get("kind", "table")
    if kind not in ("table", "comparisons"):
        raise _fail(name, f"kind must be 'table' or 'comparisons', got {kind!r}")
    columns = tuple(_column(c, name, i) for i, c in enumerate(raw.get("column", [])))
    if kind == "table" and not columns:
        raise _fail(name, "a table block needs at least one [[blocks.NAME.column]]")
    if kind == "comparisons" and columns:
        raise _fail(name, "a comparisons block has fixed columns; drop its [[blocks.NAME.column]] entries")
    for fmt_key in ("format", "p_format"):
        if fmt_key in raw:
            try:
                format(0.5, raw[fmt_key])
            except ValueError as exc:
                raise _fail(name, f"{fmt_key} {raw[fmt_key]!r} is not a Python number format ({exc})") from None
    defaults = {"rows": "comparisons", "label_header": "comparison"} if kind == "comparisons" else {}
    return BlockSpec(
        name=name,
        source=raw["source"],
        command=raw.get("command"),
        kind=kind,
        rows=raw.get("rows", defaults.get("rows", "results")),
        key=raw.get("key", "model"),
        label_header=raw.get("label_header", defaults.get("label_header", "model")),
        row=tuple(_row(r, name, i, kind) for i, r in enumerate(raw.get("row", []))),
        column=columns,
        caption=raw.get("caption", False),
        format=raw.get("format", "+.4f"),
        p_format=raw.get("p_format", ".3f"),
        metric_labels=dict(raw.get("metric_labels", {})),
    )


def load_specs(path: str | Path) -> dict[str, BlockSpec]:
    """Read and validate ``results/tables.toml``: ``[blocks.NAME]`` tables, in file order.

    Unknown keys are errors rather than ignored, so a typo cannot silently change a table.

    Raises:
        FigureSpecError: The file is missing, is not TOML, or a block is malformed.

    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FigureSpecError(f"table spec file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise FigureSpecError(f"{path} is not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"blocks"})
    if extra:
        raise FigureSpecError(f"{path}: only [blocks.NAME] tables are allowed at the top level, found {extra}")
    blocks = raw.get("blocks", {})
    if not isinstance(blocks, dict):
        raise FigureSpecError(f"{path}: blocks must be a table of [blocks.NAME] tables")
    specs: dict[str, BlockSpec] = {}
    resolved: dict[str, Any] = {}
    for name, spec in blocks.items():
        resolved[name] = _with_shared_columns(name, spec, resolved)
        specs[name] = _block(name, resolved[name])
    return specs


def _with_shared_columns(name: str, raw: Any, earlier: Mapping[str, Any]) -> Any:
    """``raw`` with ``columns_from = "OTHER"`` replaced by the columns of ``OTHER``, a table block above it.

    Many blocks show the same columns of different runs; naming the block to copy keeps them in step.
    """
    if not isinstance(raw, dict) or "columns_from" not in raw:
        return raw
    source = raw["columns_from"]
    if "column" in raw:
        raise _fail(name, "give either columns_from or [[blocks.NAME.column]] entries, not both")
    columns = earlier.get(source, {}).get("column") if isinstance(source, str) else None
    if not columns:
        known = ", ".join(n for n, b in earlier.items() if b.get("column")) or "none"
        raise _fail(name, f"columns_from = {source!r} names no table block above this one (known: {known})")
    return {**{k: v for k, v in raw.items() if k != "columns_from"}, "column": columns}


# -- values ----------------------------------------------------------------------------------------------------
class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def resolve_path(obj: Any, path: str) -> Any:
    """The value at a dotted path (``metrics.ndcg@10``, ``variants.0.name``), ``KeyError`` when absent.

    At each object the longest run of path segments that is itself a key wins, so keys containing dots
    (``"recall@0.5"``) resolve; a numeric segment indexes a list.
    """
    parts = path.split(".")
    current = obj
    i = 0
    while i < len(parts):
        if isinstance(current, Mapping):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in current:
                    current, i = current[key], j
                    break
            else:
                raise KeyError(path)
        elif isinstance(current, list) and re.fullmatch(r"-?\d+", parts[i]):
            try:
                current = current[int(parts[i])]
            except IndexError:
                raise KeyError(path) from None
            i += 1
        else:
            raise KeyError(path)
    return current


def _get(obj: Any, path: str) -> Any:
    try:
        return resolve_path(obj, path)
    except KeyError:
        return _MISSING


def _is_missing(value: Any) -> bool:
    if value is None or value is _MISSING:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, Mapping | list | str) and len(value) == 0


def _cell_text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def format_value(value: Any, fmt: str | None = None) -> str:
    """One value as table text: ``-`` when missing, numbers in ``fmt``, anything else as Python prints it.

    Missing means absent, ``null``, NaN or an empty string/list/object (an untuned model's ``config``).
    ``fmt`` applies to numbers only (not booleans), so a column may mix numbers and labels.
    """
    if _is_missing(value):
        return MISSING
    if fmt is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return _cell_text(str(value))


def _default_side_path(path: str, prefix: str) -> str:
    head, _, rest = path.partition(".")
    return f"{prefix}.{rest}" if head == "metrics" and rest else f"{prefix}.{path}"


def _seed_sd(row: Any, column: ColumnSpec) -> float | None:
    seeds = _get(row, "seeds")
    if not isinstance(seeds, list) or len(seeds) < 2:
        return None
    path = column.path[0]
    sd = _get(row, column.sd_path or _default_side_path(path, "metrics_sd"))
    if isinstance(sd, int | float) and not _is_missing(sd):
        return float(sd)
    per_seed = _get(row, "per_seed")
    if not isinstance(per_seed, list):
        return None
    # per_seed entries are {metric: value}: the metric key is the path below "metrics", else the whole path.
    head, _, rest = path.partition(".")
    key = rest if head == "metrics" and rest else path
    values = [_get(s, key) for s in per_seed]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not _is_missing(v)]
    return statistics.stdev(numbers) if len(numbers) >= 2 else None


def _interval(value: Any) -> tuple[float, float] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and not _is_missing(v) for v in value)
    ):
        return float(value[0]), float(value[1])
    return None


def _render_cell(row: Any, column: ColumnSpec) -> str:
    if len(column.path) > 1:
        return column.join.join(format_value(_get(row, p), column.format) for p in column.path)
    value = _get(row, column.path[0])
    text = format_value(value, column.format)
    if not column.ci or text == MISSING:
        return text
    sd = _seed_sd(row, column)
    if sd is not None:
        text += f" ± {format_value(sd, column.format)}"
    ci = _interval(_get(row, column.ci_path or _default_side_path(column.path[0], "ci95")))
    if ci is not None:
        text += f" [{format_value(ci[0], column.format)}, {format_value(ci[1], column.format)}]"
    return text


def _bold(text: str, header: str, bold: bool | tuple[str, ...]) -> str:
    wanted = bold is True or (isinstance(bold, tuple) and header in bold)
    return f"**{text}**" if wanted and text != MISSING else text


def _markdown(headers: Sequence[str], aligns: Sequence[Align | None], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell_text(h) for h in headers) + " |"]
    lines.append("|" + "|".join(_ALIGN_RULE[a] for a in aligns) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


# -- blocks ----------------------------------------------------------------------------------------------------
def _load_json(spec: BlockSpec, results_dir: Path) -> Any:
    path = results_dir / spec.source
    if not path.is_file():
        raise MissingResultsError(spec.name, path, spec.command)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FiguresError(f"figures block {spec.name!r}: {path} is not valid JSON ({exc})") from None


def _row_list(spec: BlockSpec, data: Any, source: str) -> list[tuple[str | None, Any]]:
    """``(key value, row)`` pairs of the block's row list (an object's rows are keyed by their names)."""
    rows = _get(data, spec.rows)
    if isinstance(rows, Mapping):
        return [(str(k), v) for k, v in rows.items()]
    if not isinstance(rows, list):
        raise _fail(spec.name, f"rows = {spec.rows!r} is not a list or object in {source}")
    pairs: list[tuple[str | None, Any]] = []
    for row in rows:
        key = _get(row, spec.key)
        pairs.append((None if _is_missing(key) else str(key), row))
    return pairs


def _table_lines(spec: BlockSpec, data: Any, source: str) -> list[str]:
    pairs = _row_list(spec, data, source)
    selected: list[tuple[str, Any, RowSpec]] = []
    if spec.row:
        by_key = {k: r for k, r in pairs if k is not None}
        for want in spec.row:
            assert want.match is not None  # table rows always select by key (checked in _row)
            if want.match not in by_key:
                raise MissingRowError(
                    f"figures block {spec.name!r}: no row with {spec.key} = {want.match!r} in {source}; "
                    f"it has {sorted(by_key)}"
                )
            selected.append((want.label or want.match, by_key[want.match], want))
    else:
        selected = [(k if k is not None else MISSING, r, RowSpec()) for k, r in pairs]
    for column in spec.column:
        for path in column.path:
            if selected and all(_get(r, path) is _MISSING for _, r, _ in selected):
                raise _fail(spec.name, f"column {column.header!r}: path {path!r} is in none of the rows of {source}")
    headers = [c.header for c in spec.column]
    aligns: list[Align | None] = [c.align for c in spec.column]
    if spec.label_header:
        headers.insert(0, spec.label_header)
        aligns.insert(0, None)
    body = []
    for label, row, want in selected:
        cells = [_render_cell(row, c) for c in spec.column]
        if spec.label_header:
            cells.insert(0, _cell_text(label))
        body.append([_bold(text, header, want.bold) for text, header in zip(cells, headers, strict=True)])
    return _markdown(headers, aligns, body)


def _p_text(p: Any, fmt: str) -> str:
    text = format_value(p, fmt)
    if text != MISSING and isinstance(p, int | float) and p > 0 and not re.search(r"[1-9]", text):
        # 0.0004 at ".3f" would print "0.000"; show the bound instead: "< 0.001".
        return "< " + text[::-1].replace("0", "1", 1)[::-1]
    return text


def _verdict(metric: str, ci: tuple[float, float] | None) -> str:
    from llmrec.eval.metrics import metric_direction
    from llmrec.eval.stats import verdict

    return MISSING if ci is None else verdict(ci, metric_direction(metric))


def _comparison_lines(spec: BlockSpec, data: Any, source: str) -> list[str]:
    rows = _get(data, spec.rows)
    if not isinstance(rows, list):
        raise _fail(spec.name, f"rows = {spec.rows!r} is not a list in {source}")
    selected: list[tuple[Any, RowSpec]] = []
    if spec.row:
        for want in spec.row:
            hits = [
                r
                for r in rows
                if isinstance(r, Mapping)
                and all(v is None or r.get(k) == v for k, v in (("a", want.a), ("b", want.b), ("metric", want.metric)))
            ]
            if not hits:
                raise MissingRowError(
                    f"figures block {spec.name!r}: no comparison a={want.a!r} b={want.b!r} metric={want.metric!r} "
                    f"in {source}"
                )
            selected += [(r, want) for r in hits]
    else:
        selected = [(r, RowSpec()) for r in rows]
    headers = [spec.label_header, "metric", "diff", "95% interval", "p", "verdict"]
    body = []
    for row, want in selected:
        a, b, metric = _get(row, "a"), _get(row, "b"), _get(row, "metric")
        metric_text = format_value(metric)
        ci = _interval(_get(row, "ci95"))
        cells = [
            _cell_text(want.label or f"{format_value(a)} vs {format_value(b)}"),
            _cell_text(spec.metric_labels.get(metric_text, metric_text)),
            format_value(_get(row, "diff"), spec.format),
            MISSING if ci is None else f"[{format(ci[0], spec.format)}, {format(ci[1], spec.format)}]",
            _p_text(_get(row, "p_value"), spec.p_format),
            _verdict(metric_text, ci),
        ]
        body.append([_bold(text, header, want.bold) for text, header in zip(cells, headers, strict=True)])
    return _markdown(headers, [None] * len(headers), body)


class _Fields(dict[str, Any]):
    def __init__(self, block: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.block = block

    def __missing__(self, key: str) -> Any:
        raise _fail(self.block, f"caption names {{{key}}}, which this results file does not have")


def _caption(spec: BlockSpec, data: Any, source: str) -> str | None:
    if spec.caption is False:
        return None
    provenance = _get(data, "provenance")
    command = _get(provenance, "command")
    command = spec.command if _is_missing(command) else str(command)
    if spec.caption is True:
        return f"Source: `{source}`" + (f", written by `{command}`." if command else ".")
    fields: dict[str, Any] = {"source": source}
    if isinstance(data, Mapping):
        fields |= {k: v for k, v in data.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}
    if isinstance(provenance, Mapping):
        fields |= dict(provenance)
    if command:
        fields["command"] = command
    try:
        return spec.caption.format_map(_Fields(spec.name, fields))
    except (ValueError, IndexError) as exc:
        raise _fail(spec.name, f"caption {spec.caption!r} is not a valid format string ({exc})") from None


def render_block(spec: BlockSpec, results_dir: str | Path) -> str:
    """The generated text of one block (what goes between its markers): the table, then the caption if any.

    The text starts and ends with a blank line, so the markers never touch the table in any Markdown renderer.

    Raises:
        MissingResultsError: ``results_dir / spec.source`` does not exist.
        MissingRowError: A requested row or comparison is not in the JSON.
        FigureSpecError: A column path is in no row, or the row list is not where the spec says.

    """
    results_dir = Path(results_dir)
    data = _load_json(spec, results_dir)
    source = f"{results_dir.name}/{spec.source}"
    lines = _comparison_lines(spec, data, source) if spec.kind == "comparisons" else _table_lines(spec, data, source)
    caption = _caption(spec, data, source)
    if caption:
        lines += ["", caption]
    return "\n" + "\n".join(lines) + "\n"


def render_blocks(specs: Mapping[str, BlockSpec], results_dir: str | Path) -> dict[str, str]:
    """Every block's generated text, by name (see :func:`render_block`)."""
    return {name: render_block(spec, results_dir) for name, spec in specs.items()}


# -- README markers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Span:
    name: str
    start: int  # index of the start marker line
    end: int  # index of the end marker line


def find_blocks(text: str) -> dict[str, tuple[int, int]]:
    """Marked blocks of a README: name -> (start marker line, end marker line), 1-based.

    Markers are whole lines, ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; blocks do not nest.

    Raises:
        MarkerError: A marker is malformed, unclosed, closed twice, mismatched, nested or duplicated.

    """
    return {s.name: (s.start + 1, s.end + 1) for s in _spans(text.split("\n"))}


def _spans(lines: Sequence[str]) -> list[_Span]:
    spans: list[_Span] = []
    seen: set[str] = set()
    open_name: str | None = None
    open_at = 0
    for i, line in enumerate(lines):
        start, end = _START.match(line), _END.match(line)
        if start:
            if open_name is not None:
                raise MarkerError(f"README line {i + 1}: block {start[1]!r} starts inside block {open_name!r}")
            if start[1] in seen:
                raise MarkerError(f"README line {i + 1}: block {start[1]!r} appears twice")
            open_name, open_at = start[1], i
        elif end:
            if open_name != end[1]:
                raise MarkerError(f"README line {i + 1}: end of block {end[1]!r} without its start marker")
            spans.append(_Span(end[1], open_at, i))
            seen.add(end[1])
            open_name = None
        elif _ANY_MARKER.search(line):
            raise MarkerError(
                f"README line {i + 1}: malformed figures marker {line.strip()!r}; "
                "use '<!-- figures:NAME -->' and '<!-- /figures:NAME -->' alone on their lines"
            )
    if open_name is not None:
        raise MarkerError(f"README line {open_at + 1}: block {open_name!r} is never closed")
    return spans


def regenerate(text: str, rendered: Mapping[str, str]) -> str:
    """The README text with every marked block's content replaced by its generated text.

    Raises:
        MarkerError: Markers are malformed, or a marked block has no spec, or a spec has no marked block.

    """
    lines = text.split("\n")
    spans = _spans(lines)
    marked = {s.name for s in spans}
    unknown = sorted(marked - set(rendered))
    if unknown:
        raise MarkerError(f"README blocks {unknown} have no [blocks.NAME] in {RESULTS_DIR}/{SPEC_FILE}")
    unplaced = sorted(set(rendered) - marked)
    if unplaced:
        raise MarkerError(
            f"blocks {unplaced} of {RESULTS_DIR}/{SPEC_FILE} have no markers in README.md; put "
            "'<!-- figures:NAME -->' and '<!-- /figures:NAME -->' lines where each table goes"
        )
    out: list[str] = []
    last = 0
    for span in spans:
        out += lines[last : span.start + 1]
        out += rendered[span.name].split("\n")
        last = span.end
    out += lines[last:]
    return "\n".join(out)


def _paths(root: str | Path) -> tuple[Path, Path, Path]:
    root = Path(root)
    return root / README, root / RESULTS_DIR, root / RESULTS_DIR / SPEC_FILE


def _generated(root: str | Path) -> tuple[Path, str, str, list[str]]:
    readme, results_dir, spec_file = _paths(root)
    if not readme.is_file():
        raise FiguresError(f"{readme} does not exist; run from the repository root (or pass --root)")
    text = readme.read_text(encoding="utf-8")
    new = regenerate(text, render_blocks(load_specs(spec_file), results_dir))
    before = {s.name: s for s in _spans(text.split("\n"))}
    after = {s.name: s for s in _spans(new.split("\n"))}
    old_lines, new_lines = text.split("\n"), new.split("\n")
    stale = [
        name
        for name in before
        if old_lines[before[name].start : before[name].end] != new_lines[after[name].start : after[name].end]
    ]
    return readme, text, new, stale


def check(root: str | Path = ".") -> list[str]:
    """Compare README.md's blocks with their results JSON; the names of blocks that differ (empty: all current).

    Raises:
        MissingResultsError: A block's results JSON is not in ``results/``.
        FiguresError: The spec, the markers or the JSON do not fit together (see the subclasses).

    """
    return _generated(root)[3]


def write(root: str | Path = ".") -> list[str]:
    """Rewrite README.md's blocks from their results JSON; the names of the blocks that changed."""
    readme, text, new, stale = _generated(root)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return stale


def _diff(root: str | Path) -> str:
    readme, text, new, _ = _generated(root)
    return "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), new.splitlines(keepends=True), str(readme), f"{readme} (generated)"
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmrec.eval.figures [--check|--write] [--root DIR]``; exit status 0 when README is current.

    ``--check`` (the default) prints a diff of every stale block and exits 1; ``--write`` rewrites them
    (``make figures``). Missing results JSON, a bad spec or bad markers print the error and exit 2.
    """
    parser = argparse.ArgumentParser(
        prog="python -m llmrec.eval.figures", description="README result tables from results/*.json."
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail (exit 1) when a README block is stale (default)")
    mode.add_argument("--write", action="store_true", help="rewrite the README blocks from results/*.json")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current folder)")
    args = parser.parse_args(argv)
    try:
        if args.write:
            changed = write(args.root)
            print(f"updated blocks: {', '.join(changed)}" if changed else "README figures already current")
            return 0
        stale = check(args.root)
        if stale:
            print(str(StaleFiguresError(stale, _diff(args.root))), file=sys.stderr)
            return 1
        print("README figures match results/*.json")
        return 0
    except FiguresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
