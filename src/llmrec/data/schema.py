"""The data model (items, users, interactions) and its validation.

Validation turns a raw frame into the canonical one, or raises :class:`DataValidationError` listing every
problem with file, line, field and fix. It runs before anything is stored, so a bad batch stores nothing.

Canonical columns:
    interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, seconds since the epoch),
        ``value`` (float64, default 1.0), ``event`` (str, default ``"interaction"``).
    items: ``item_id`` (str), ``title`` (str), ``text`` (str, free description, may be empty); every other
        column is an attribute (e.g. ``genres``, ``year``) and is kept.
    users: ``user_id`` (str), ``profile`` (str, may be empty); other columns are attributes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from llmrec.errors import DataProblem, DataValidationError

__all__ = [
    "INTERACTION_COLUMNS",
    "ITEM_COLUMNS",
    "USER_COLUMNS",
    "validate_interactions",
    "validate_items",
    "validate_users",
]

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "value", "event")
ITEM_COLUMNS = ("item_id", "title", "text")
USER_COLUMNS = ("user_id", "profile")

_MAP_HINT = "add the column, or map an existing one to it ({field}=YourColumn in the column mapping)"


def _lines(df: pd.DataFrame, lines: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """1-based file line of each row; by default a CSV with one header line (row 0 is line 2)."""
    if lines is None:
        return np.arange(2, len(df) + 2)
    arr = np.asarray(lines)
    if len(arr) != len(df):
        raise ValueError("lines must have one entry per row")
    return arr


def _show(value: object) -> str:
    """A value as the user wrote it (``5``, ``'abc'``), not numpy's repr (``np.int64(5)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _missing_columns(df: pd.DataFrame, required: Sequence[str], source: str) -> list[DataProblem]:
    return [
        DataProblem(
            source,
            None,
            col,
            f"required column '{col}' is missing (have: {list(df.columns)})",
            _MAP_HINT.format(field=col),
        )
        for col in required
        if col not in df.columns
    ]


def _id_column(df: pd.DataFrame, col: str, source: str, lines: np.ndarray, problems: list[DataProblem]) -> pd.Series:
    """Ids as stripped strings; empty or missing ids are problems."""
    raw = df[col]
    as_str = raw.astype("string").str.strip()
    bad = as_str.isna() | (as_str == "")
    for pos in np.flatnonzero(bad.to_numpy())[:50]:
        problems.append(DataProblem(source, int(lines[pos]), col, "id is empty", "give every row a non-empty id"))
    # Integral floats (1.0) come from pandas upcasting a column with gaps; write them as "1".
    if pd.api.types.is_float_dtype(raw):
        whole = raw.notna() & (raw == np.floor(raw))
        as_str = as_str.where(~whole, raw[whole].astype("int64").astype("string"))
    return as_str.fillna("").astype(object)


def _timestamp_column(series: pd.Series, source: str, lines: np.ndarray, problems: list[DataProblem]) -> pd.Series:
    """Seconds since the epoch from numbers (fractions are floored) or ISO-8601 date/time strings."""
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all() and len(series):
        bad = (numeric < 0) | (numeric >= 2**53)  # beyond 2**53 s is not a date, and floats lose precision
        for pos in np.flatnonzero(bad.to_numpy())[:50]:
            problems.append(
                DataProblem(
                    source,
                    int(lines[pos]),
                    "timestamp",
                    f"timestamp {_show(series.iloc[pos])} is out of range",
                    "use seconds since 1970-01-01 or an ISO-8601 date",
                )
            )
        return numeric.where(~bad, 0).fillna(0).astype("float64").apply(np.floor).astype("int64")
    parsed = pd.to_datetime(series.where(numeric.isna(), None), errors="coerce", utc=True, format="mixed")
    seconds: pd.Series = pd.Series(np.full(len(series), -1, dtype=np.int64), index=series.index)
    ok_num = numeric.notna()
    seconds[ok_num] = numeric[ok_num].astype("int64")
    ok_dt = parsed.notna()
    seconds[ok_dt] = (parsed[ok_dt] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    bad = ~(ok_num | ok_dt)
    for pos in np.flatnonzero(bad.to_numpy())[:50]:
        problems.append(
            DataProblem(
                source,
                int(lines[pos]),
                "timestamp",
                f"{_show(series.iloc[pos])} is not a timestamp",
                "use seconds since 1970-01-01 or an ISO-8601 date like 2018-09-24T10:00:00",
            )
        )
    return seconds


def validate_interactions(
    df: pd.DataFrame,
    source: str = "<dataframe>",
    *,
    lines: Sequence[int] | np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    default_event: str = "interaction",
) -> pd.DataFrame:
    """Check and normalise an interactions frame.

    Args:
        df: Raw frame with at least ``user_id``, ``item_id`` and ``timestamp``.
        source: File name for error messages.
        lines: File line of each row (default: CSV with a header, row 0 on line 2).
        value_range: Inclusive ``(low, high)`` that ``value`` must lie in (e.g. ``(0.5, 5.0)`` for stars).
        default_event: Event type for rows without an ``event`` column.

    Returns:
        A new frame with exactly :data:`INTERACTION_COLUMNS`, in input order.

    Raises:
        DataValidationError: Listing every problem (missing column, empty id, bad timestamp, non-numeric or
            out-of-range value, duplicate row).

    """
    line_no = _lines(df, lines)
    problems = _missing_columns(df, ("user_id", "item_id", "timestamp"), source)
    if problems:
        raise DataValidationError(problems)
    out = pd.DataFrame(index=df.index)
    out["user_id"] = _id_column(df, "user_id", source, line_no, problems)
    out["item_id"] = _id_column(df, "item_id", source, line_no, problems)
    out["timestamp"] = _timestamp_column(df["timestamp"], source, line_no, problems)
    if "value" in df.columns:
        value = pd.to_numeric(df["value"], errors="coerce")
        bad = value.isna() | ~np.isfinite(value.fillna(0))
        for pos in np.flatnonzero(bad.to_numpy())[:50]:
            problems.append(
                DataProblem(
                    source,
                    int(line_no[pos]),
                    "value",
                    f"{_show(df['value'].iloc[pos])} is not a number",
                    "write a finite number, or drop the value column to count every row as 1",
                )
            )
        if value_range is not None:
            low, high = value_range
            out_of_range = value.notna() & ((value < low) | (value > high))
            for pos in np.flatnonzero(out_of_range.to_numpy())[:50]:
                problems.append(
                    DataProblem(
                        source,
                        int(line_no[pos]),
                        "value",
                        f"{value.iloc[pos]} is outside [{low}, {high}]",
                        f"use a value between {low} and {high}",
                    )
                )
        out["value"] = value.fillna(0.0).astype("float64")
    else:
        out["value"] = 1.0
    if "event" in df.columns:
        out["event"] = df["event"].astype("string").fillna(default_event).str.strip().astype(object)
    else:
        out["event"] = default_event
    if not problems:
        dup = out.duplicated(subset=["user_id", "item_id", "timestamp", "event"], keep="first")
        for pos in np.flatnonzero(dup.to_numpy())[:50]:
            row = out.iloc[pos]
            problems.append(
                DataProblem(
                    source,
                    int(line_no[pos]),
                    "user_id,item_id,timestamp",
                    f"duplicate interaction (user {row.user_id}, item {row.item_id}, time {row.timestamp})",
                    "remove the repeated row; one event per user, item and time",
                )
            )
    if problems:
        raise DataValidationError(problems)
    return out.reset_index(drop=True)


def _validate_entities(
    df: pd.DataFrame, id_col: str, text_cols: Sequence[str], source: str, lines: Sequence[int] | np.ndarray | None
) -> pd.DataFrame:
    line_no = _lines(df, lines)
    problems = _missing_columns(df, (id_col,), source)
    if problems:
        raise DataValidationError(problems)
    out = df.copy()
    out[id_col] = _id_column(df, id_col, source, line_no, problems)
    for col in text_cols:
        out[col] = df[col].astype("string").fillna("").astype(object) if col in df.columns else ""
    dup = out[id_col].duplicated(keep="first") & (out[id_col] != "")
    for pos in np.flatnonzero(dup.to_numpy())[:50]:
        problems.append(
            DataProblem(
                source,
                int(line_no[pos]),
                id_col,
                f"duplicate id {_show(out[id_col].iloc[pos])}",
                "give each row a unique id, or merge the duplicate rows",
            )
        )
    if problems:
        raise DataValidationError(problems)
    ordered = [id_col, *text_cols, *[c for c in out.columns if c not in (id_col, *text_cols)]]
    return out[ordered].reset_index(drop=True)


def validate_items(
    df: pd.DataFrame, source: str = "<dataframe>", *, lines: Sequence[int] | np.ndarray | None = None
) -> pd.DataFrame:
    """Check and normalise an items frame (unique non-empty ``item_id``; ``title``/``text`` filled with "")."""
    return _validate_entities(df, "item_id", ("title", "text"), source, lines)


def validate_users(
    df: pd.DataFrame, source: str = "<dataframe>", *, lines: Sequence[int] | np.ndarray | None = None
) -> pd.DataFrame:
    """Check and normalise a users frame (unique non-empty ``user_id``; ``profile`` filled with "")."""
    return _validate_entities(df, "user_id", ("profile",), source, lines)
