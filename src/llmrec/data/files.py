"""Read interactions, items and users from the user's own files (CSV, TSV, JSON Lines, Parquet; gzip too).

Every reader returns the canonical, validated frame of :mod:`llmrec.data.schema`, or raises
:class:`~llmrec.errors.DataValidationError` listing every problem with the file, the real line in that file,
the field and a fix: a missing file, bytes that are not UTF-8, malformed CSV or JSON, missing columns, values
of the wrong type or out of range, duplicates. Pandas and pyarrow errors never reach the caller as tracebacks.

Line numbers are lines of the file as an editor shows them: for CSV/TSV the header is line 1 and a quoted
field spanning several lines counts all of them; for JSON Lines a record's line is its line. Parquet has no
lines, so there "line" is the 1-based row number.

Column names are mapped with ``mapping`` (canonical field -> the file's column), e.g.
``{"user_id": "userId", "item_id": "movieId", "value": "rating"}``; problems then name the file's column.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from llmrec.data.dataset import Dataset
from llmrec.data.schema import INTERACTION_COLUMNS, validate_interactions, validate_items, validate_users
from llmrec.errors import ConfigError, DataProblem, DataValidationError

__all__ = [
    "FileFormat",
    "Tables",
    "detect_format",
    "read_dataset",
    "read_entity_tables",
    "read_interactions",
    "read_items",
    "read_tables",
    "read_users",
    "sniff_delimiter",
    "validate_safely",
]

FileFormat = Literal["csv", "tsv", "jsonl", "parquet"]
"""The file formats the readers understand."""

_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FORMATS: tuple[FileFormat, ...] = ("csv", "tsv", "jsonl", "parquet")
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_PROBLEMS = 50

# Fields that must hold one scalar (not a JSON object or list) for each kind of table.
_SCALAR_FIELDS = {
    "interactions": INTERACTION_COLUMNS,
    "items": ("item_id", "title", "text"),
    "users": ("user_id", "profile"),
}
# Fields read as text from CSV, so ids such as "007" keep their leading zeros.
_TEXT_FIELDS = {
    "interactions": ("user_id", "item_id", "event"),
    "items": ("item_id", "title", "text"),
    "users": ("user_id", "profile"),
}
_REQUIRED = {"interactions": ("user_id", "item_id", "timestamp"), "items": ("item_id",), "users": ("user_id",)}
_FIX_MAP = "add the column, or map an existing one to it ({field}=YourColumn in the column mapping)"

Kind = Literal["interactions", "items", "users"]


@dataclasses.dataclass
class _Raw:
    """A file parsed into a frame, with the file line of each row and facts needed for messages."""

    frame: pd.DataFrame
    lines: np.ndarray
    source: str
    fmt: FileFormat
    header_line: int | None  # line naming the columns (CSV header), for missing-column problems


def detect_format(path: str | Path, format: str | None = None) -> FileFormat:
    """The format of ``path``: ``format`` when given, else from the suffix (a trailing ``.gz`` is ignored).

    Args:
        path: File to read.
        format: ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"`` to override the suffix.

    Raises:
        ConfigError: ``format`` is not one of the supported formats.
        DataValidationError: No format given and the suffix is not one of the known ones.

    """
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet", "tab": "tsv"}.get(fmt, fmt)
        if fmt not in _FORMATS:
            raise ConfigError(f"unknown file format {format!r}; use one of {', '.join(_FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    raise DataValidationError(
        [
            DataProblem(
                str(path),
                None,
                None,
                f"cannot tell the format from the name (suffix {''.join(Path(path).suffixes) or 'none'!r})",
                "name the file .csv, .tsv, .jsonl or .parquet (optionally + .gz), or pass format='csv' etc.",
            )
        ]
    )


# -- reading bytes and text -------------------------------------------------------------------------------
def _problem(source: str, message: str, fix: str, line: int | None = None, field: str | None = None) -> DataProblem:
    return DataProblem(source, line, field, message, fix)


def _read_bytes(path: Path, source: str) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic number."""
    if not path.exists():
        raise DataValidationError([_problem(source, "file not found", "check the path (and the working directory)")])
    if not path.is_file():
        raise DataValidationError([_problem(source, "is not a file", "point to a file, not a folder")])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataValidationError(
            [_problem(source, f"cannot read the file ({exc.strerror or exc})", "check the file's permissions")]
        ) from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataValidationError(
                [_problem(source, f"damaged gzip data ({exc})", "re-create the .gz file, or store it uncompressed")]
            ) from exc
    return raw


def _decode(raw: bytes, source: str, fmt: FileFormat) -> str:
    """UTF-8 text (a byte-order mark is dropped); problems name each line holding bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        sep = sniff_delimiter(raw[:65536], fmt) if fmt in ("csv", "tsv") else None
        problems = _encoding_problems(raw, source, fmt, first_offset=exc.start, sep=sep)
        raise DataValidationError(problems) from exc


def _encoding_problems(
    raw: bytes,
    source: str,
    fmt: FileFormat,
    first_offset: int,
    *,
    header: list[str] | None = None,
    sep: str | None = None,
) -> list[DataProblem]:
    """A problem for each of the first lines holding bytes that are not UTF-8, from the one at ``first_offset``.

    ``header`` names the columns when ``raw`` is a block of a CSV file without its header row; ``sep`` is the
    delimiter (by default the format's).
    """
    sep = sep or _delimiter(fmt)
    if fmt in ("csv", "tsv") and header is None:
        first = raw.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
        header = next(csv.reader([first], delimiter=sep), None)
    problems: list[DataProblem] = []
    line_start = raw.rfind(b"\n", 0, first_offset) + 1
    line_no = raw.count(b"\n", 0, line_start) + 1
    while line_start < len(raw) and len(problems) < 10:
        end = raw.find(b"\n", line_start)
        end = len(raw) if end < 0 else end
        chunk = raw[line_start:end]
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = chunk[exc.start : exc.start + 1].hex()
            problems.append(
                DataProblem(
                    source,
                    line_no,
                    _field_with_bad_bytes(chunk, fmt, header, sep),
                    f"byte 0x{bad} at byte {line_start + exc.start} (column {exc.start + 1} of the line) is not "
                    "valid UTF-8; the file is in another encoding (e.g. Latin-1 or Windows-1252)",
                    "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`)",
                )
            )
        line_start, line_no = end + 1, line_no + 1
    return problems


def _field_with_bad_bytes(line: bytes, fmt: FileFormat, header: list[str] | None, sep: str) -> str | None:
    """The column (CSV) or key (JSONL) whose value holds the undecodable bytes, when it can be told."""
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        if header is not None:
            values = next(csv.reader([text], delimiter=sep), [])
            return next((header[i] for i, v in enumerate(values) if "\ufffd" in v and i < len(header)), None)
        if fmt == "jsonl":
            record = json.loads(text)
            if isinstance(record, dict):
                return next((str(k) for k, v in record.items() if "\ufffd" in f"{k}{v}"), None)
    except (csv.Error, ValueError):
        return None
    return None


def _delimiter(fmt: FileFormat) -> str:
    return "\t" if fmt == "tsv" else ","


_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")


def sniff_delimiter(head: bytes | str, fmt: FileFormat = "csv") -> str:
    """The delimiter of a CSV/TSV file, told from its first lines (``head``).

    The format's own delimiter (``,`` for CSV, a tab for TSV) wins whenever the header holds it; otherwise the
    candidate (``,``, tab, ``;``, ``|``) that occurs most often in the header, outside quotes, and as often in
    the next lines. A ``;``-separated ``.csv`` (what spreadsheets write in much of Europe) is so read as
    meant, instead of as one column named ``user;item;time`` that no mapping can fix.

    Args:
        head: The file's first bytes (a few kilobytes are plenty); a byte-order mark is ignored.
        fmt: ``"csv"`` or ``"tsv"``: whose delimiter is preferred.

    Returns:
        The delimiter; the format's own when nothing else fits (a one-column file).

    """
    text = head.decode("utf-8", errors="replace") if isinstance(head, bytes) else head
    text = text.lstrip("\ufeff")
    pieces = text.split("\n", 21)
    if len(pieces) > 1:
        pieces = pieces[:-1]  # the last piece may be cut off mid-way (or is empty after the final newline)
    lines = [line for line in pieces[:20] if line.strip()]
    unquoted = [re.sub(r'"[^"]*"', "", line) for line in lines]
    default = _delimiter(fmt)
    header = unquoted[0] if unquoted else ""
    if header.count(default):
        return default
    best, best_count = default, 0
    for sep in _CANDIDATE_DELIMITERS:
        count = header.count(sep)
        if count <= best_count:
            continue
        if all(line.count(sep) == count for line in unquoted[1:6]):
            best, best_count = sep, count
    if best_count == 0:  # not consistent over the next lines: still prefer the header's most frequent one
        counts = {sep: header.count(sep) for sep in _CANDIDATE_DELIMITERS}
        sep = max(counts, key=lambda k: counts[k])
        if counts[sep]:
            best = sep
    return best


# -- parsing each format ----------------------------------------------------------------------------------
def _parse_csv(
    text: str,
    source: str,
    fmt: FileFormat,
    text_columns: set[str],
    *,
    sep: str | None = None,
    header: list[str] | None = None,
    header_line: int = 1,
    first_line: int = 1,
    found: list[DataProblem] | None = None,
) -> _Raw:
    """Check the structure with the csv module (which knows each record's line), then let pandas parse it.

    By default ``text`` is a whole file, its header the first record. A block of a larger file passes its
    ``header`` (and the header's ``header_line``) and the file line ``first_line`` that ``text`` starts on.
    With ``found``, structural problems (rows with too few or too many fields, a malformed record) are appended
    there and the rows that can be read are returned, so that their values are checked in the same pass.
    """
    sep = sep or sniff_delimiter(text[:65536], fmt)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    problems: list[DataProblem] = []
    given_header = header is not None
    starts: list[int] = []
    records: list[list[str]] = []
    prev = first_line - 1
    try:
        for record in reader:
            start, prev = prev + 1, reader.line_num + first_line - 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line (pandas skips these too)
            if header is None:
                header, header_line = record, start
                continue
            if len(record) != len(header) and len(problems) < _MAX_PROBLEMS:
                short = len(record) < len(header)
                problems.append(
                    DataProblem(
                        source,
                        start,
                        header[len(record)].strip() if short else header[-1].strip(),
                        f"row has {len(record)} field(s) but the header (line {header_line}) has {len(header)}"
                        + (" (this column and those after it are missing)" if short else " (extra values at the end)"),
                        "quote values that contain the delimiter, and give every row one value per column",
                    )
                )
                if found is not None:
                    continue
            starts.append(start)
            records.append(record)
    except csv.Error as exc:
        problems.append(
            DataProblem(
                source,
                prev + 1,
                None,
                f"malformed CSV in the record starting here ({exc})",
                'close every quoted value with a " and double quotes inside quoted values ("")',
            )
        )
    if header is None:
        problems.append(DataProblem(source, None, None, "the file is empty", "give the file a header row and data"))
    if found is not None and header is not None:
        found.extend(problems)
        problems = []
    if problems:
        raise DataValidationError(problems)
    assert header is not None
    stripped = [c.strip() for c in header]
    dupes = sorted({c for c in stripped if stripped.count(c) > 1})
    if dupes:
        raise DataValidationError(
            [
                DataProblem(source, header_line, c, f"column '{c}' appears more than once", "rename one of them")
                for c in dupes
            ]
        )
    try:
        frame: pd.DataFrame | None = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            names=header if given_header else None,
            header=None if given_header else "infer",
            dtype={c: str for c in header if c.strip() in text_columns},
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=True,
            low_memory=False,
        )
    except (ValueError, pd.errors.ParserError):
        frame = None
    if frame is None or len(frame) != len(records):
        # pandas and the csv module disagree on what a row is (odd whitespace or quoting): keep the csv
        # module's view, every value as text, so that line numbers stay right.
        frame = pd.DataFrame(records, columns=header, dtype=object).replace("", None)
    frame.columns = [str(c).strip() for c in frame.columns]
    return _Raw(frame, np.asarray(starts, dtype=np.int64), source, fmt, header_line)


def _parse_jsonl(text: str, source: str) -> _Raw:
    """One JSON object per line; blank lines are skipped."""
    problems: list[DataProblem] = []
    records: list[dict[str, object]] = []
    lines: list[int] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if len(problems) < _MAX_PROBLEMS:
                problems.append(
                    DataProblem(
                        source,
                        line_no,
                        None,
                        f"malformed JSON at column {exc.colno}: {exc.msg}",
                        "write one complete JSON object per line (no trailing commas, double-quoted keys)",
                    )
                )
            continue
        if not isinstance(record, dict):
            if len(problems) < _MAX_PROBLEMS:
                problems.append(
                    DataProblem(
                        source,
                        line_no,
                        None,
                        f"expected a JSON object, got {type(record).__name__}",
                        'write one object per line, like {"user_id": "u1", "item_id": "i1", "timestamp": 0}',
                    )
                )
            continue
        records.append(record)
        lines.append(line_no)
    if not records and not problems:
        problems.append(DataProblem(source, None, None, "the file is empty", "write one JSON object per line"))
    if problems:
        raise DataValidationError(problems)
    frame = pd.DataFrame.from_records(records)
    return _Raw(frame, np.asarray(lines, dtype=np.int64), source, "jsonl", lines[0] if lines else None)


def _parse_parquet(path: Path, source: str) -> _Raw:
    try:
        import pyarrow  # noqa: F401  (pandas needs it for Parquet; fail with a fix rather than an ImportError)
    except ImportError as exc:  # pragma: no cover - pyarrow is a core dependency
        raise DataValidationError(
            [_problem(source, "reading Parquet needs pyarrow", "pip install pyarrow, or convert the file to CSV")]
        ) from exc
    if not path.exists():
        raise DataValidationError([_problem(source, "file not found", "check the path (and the working directory)")])
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not readable Parquet"
        raise DataValidationError(
            [
                _problem(
                    source,
                    f"not a readable Parquet file ({type(exc).__name__}: {exc})",
                    "re-export the file as Parquet, or use CSV/JSON Lines",
                )
            ]
        ) from exc
    frame = frame.reset_index(drop=True)
    return _Raw(frame, np.arange(1, len(frame) + 1, dtype=np.int64), source, "parquet", None)


def _read_raw(
    path: str | Path, kind: Kind, mapping: Mapping[str, str], format: str | None, delimiter: str | None = None
) -> _Raw:
    path = Path(path)
    source = str(path)
    fmt = detect_format(path, format)
    if fmt == "parquet":
        return _parse_parquet(path, source)
    text = _decode(_read_bytes(path, source), source, fmt)
    if fmt == "jsonl":
        return _parse_jsonl(text, source)
    text_columns = {mapping.get(f, f) for f in _TEXT_FIELDS[kind]}
    return _parse_csv(text, source, fmt, text_columns, sep=delimiter)


# -- mapping and validation -------------------------------------------------------------------------------
def _check_mapping(mapping: Mapping[str, str] | None, kind: Kind) -> dict[str, str]:
    mapping = dict(mapping or {})
    for canonical, column in mapping.items():
        if not isinstance(canonical, str) or not isinstance(column, str) or not canonical or not column:
            raise ConfigError(f"column mapping entries must be non-empty strings, got {canonical!r}: {column!r}")
    if kind == "interactions":
        unknown = sorted(set(mapping) - set(INTERACTION_COLUMNS))
        if unknown:
            raise ConfigError(f"cannot map to {unknown}: interactions have the fields {', '.join(INTERACTION_COLUMNS)}")
    targets = list(mapping.values())
    repeated = sorted({c for c in targets if targets.count(c) > 1})
    if repeated:
        raise ConfigError(f"column(s) {repeated} are mapped to more than one field; map each column once")
    return mapping


def _apply_mapping(
    raw: _Raw, mapping: dict[str, str], kind: Kind, lenient: bool
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rename the file's columns to canonical names; problems for mapped or required columns that are absent.

    With ``lenient``, entries whose column is not in the file are dropped instead (a dataset-wide mapping).
    Returns the renamed frame and the mapping that was applied.
    """
    frame = raw.frame
    problems, mapping = _header_problems([str(c) for c in frame.columns], mapping, kind, raw.source, raw.header_line,
                                         lenient)  # fmt: skip
    renamed = frame.rename(columns={v: k for k, v in mapping.items()})
    if not len(renamed):
        problems.append(
            DataProblem(raw.source, None, None, "the file has no data rows", f"add at least one row of {kind}")
        )
    if problems:
        raise DataValidationError(problems)
    if raw.fmt in ("jsonl", "parquet"):
        _check_scalars(renamed, raw, kind, mapping)
    return renamed, mapping


def _header_problems(
    columns: list[str], mapping: dict[str, str], kind: Kind, source: str, header_line: int | None, lenient: bool
) -> tuple[list[DataProblem], dict[str, str]]:
    """Problems of the columns a file has against the mapping and the required fields; and the mapping to apply.

    With ``lenient``, mapping entries whose column is absent are dropped instead of being problems.
    """
    if lenient:
        mapping = {k: v for k, v in mapping.items() if v in columns}
    problems: list[DataProblem] = []
    # One column whose name holds a delimiter: the file is split on another character than it was read with.
    glued = next((sep for sep in _CANDIDATE_DELIMITERS if len(columns) == 1 and sep in columns[0]), None)
    fix_sep = f"the header looks separated by {glued!r}: pass that delimiter (--delimiter)" if glued else None
    for canonical, column in mapping.items():
        if column not in columns:
            problems.append(
                DataProblem(
                    source,
                    header_line,
                    column,
                    f"column '{column}' (mapped to {canonical}) is missing (have: {columns})",
                    fix_sep or f"fix the mapping {canonical}={column}, or add the column",
                )
            )
        elif canonical != column and canonical in columns and canonical not in mapping.values():
            problems.append(
                DataProblem(
                    source,
                    header_line,
                    canonical,
                    f"both '{canonical}' and '{column}' (mapped to {canonical}) are present",
                    f"drop one of the two columns, or remove the mapping {canonical}={column}",
                )
            )
    inverse = {v: k for k, v in mapping.items()}
    present = {inverse.get(c, c) for c in columns}  # canonical names once the mapping is applied
    for field in _REQUIRED[kind]:
        if field not in present and field not in mapping:
            problems.append(
                DataProblem(
                    source,
                    header_line,
                    field,
                    f"required column '{field}' is missing (have: {columns})",
                    fix_sep or _FIX_MAP.format(field=field),
                )
            )
    return problems, mapping


def _check_scalars(frame: pd.DataFrame, raw: _Raw, kind: Kind, mapping: dict[str, str]) -> None:
    """JSON objects, lists or arrays in a field that needs one value (an id, a timestamp, a title...)."""
    problems: list[DataProblem] = []
    for field in _SCALAR_FIELDS[kind]:
        if field not in frame.columns or frame[field].dtype != object:
            continue
        nested = frame[field].map(lambda v: isinstance(v, dict | list | tuple | np.ndarray)).to_numpy(bool)
        for pos in np.flatnonzero(nested)[:_MAX_PROBLEMS]:
            value = frame[field].iloc[pos]
            problems.append(
                DataProblem(
                    raw.source,
                    int(raw.lines[pos]),
                    mapping.get(field, field),
                    f"expected a single value, got {'an object' if isinstance(value, dict) else 'a list'}",
                    f"write a string or number in '{mapping.get(field, field)}'",
                )
            )
    if problems:
        raise DataValidationError(problems)


def _name_file_columns(exc: DataValidationError, mapping: dict[str, str]) -> DataValidationError:
    """Rewrite problems so they name the file's columns (``rating``) rather than canonical fields (``value``)."""
    if not mapping:
        return exc
    fixed = [
        dataclasses.replace(p, field=",".join(mapping.get(part, part) for part in p.field.split(",")))
        if p.field is not None
        else p
        for p in exc.problems
    ]
    return DataValidationError(fixed)


def _read(
    path: str | Path,
    kind: Kind,
    mapping: Mapping[str, str] | None,
    format: str | None,
    validate: Callable[..., pd.DataFrame],
    *,
    lenient: bool = False,
    delimiter: str | None = None,
) -> pd.DataFrame:
    checked = _check_mapping(mapping, kind)
    raw = _read_raw(path, kind, checked, format, delimiter)
    frame, applied = _apply_mapping(raw, checked, kind, lenient)
    try:
        return validate_safely(validate, frame, raw.source, raw.lines)
    except DataValidationError as exc:
        raise _name_file_columns(exc, applied) from None


# Stand-in values used to tell which field of a row makes validation crash.
_BENIGN: dict[str, str | int | float] = {
    "user_id": "u",
    "item_id": "i",
    "timestamp": 0,
    "value": 1.0,
    "event": "e",
    "title": "",
    "text": "",
}


def validate_safely(
    validate: Callable[..., pd.DataFrame], frame: pd.DataFrame, source: str, lines: np.ndarray
) -> pd.DataFrame:
    """Run a schema validator; should it crash on a value (not raise a data error), name the row and field.

    Validators report bad data as :class:`DataValidationError`; a value outside what pandas can represent (a
    date in the year 3000, say) may instead raise a pandas error. Then the first row that crashes is found by
    bisection and its field by swapping in harmless values, so the user still learns file, line and field.

    Args:
        validate: ``validate_interactions``, ``validate_items`` or ``validate_users`` (or a wrapper of one).
        frame: The raw frame.
        source: File name for messages.
        lines: File line of each row.

    Raises:
        DataValidationError: From the validator, or describing the row that made it crash.

    """
    try:
        return validate(frame, source, lines=lines)
    except DataValidationError:
        raise
    except Exception as exc:  # a pandas/numpy error on some value: locate it instead of showing a traceback
        error = exc

    def crashes(part: pd.DataFrame, part_lines: np.ndarray) -> bool:
        try:
            validate(part, source, lines=part_lines)
        except DataValidationError:
            return False
        except Exception:
            return True
        return False

    if not len(frame):
        raise DataValidationError(
            [DataProblem(source, None, None, f"cannot read the data ({error})", "check the file's columns")]
        ) from error
    lo, hi = 0, len(frame)
    while hi - lo > 1:  # invariant: some row in [lo, hi) crashes
        mid = (lo + hi) // 2
        if crashes(frame.iloc[lo:mid], lines[lo:mid]):
            hi = mid
        else:
            lo = mid
    row, row_lines = frame.iloc[lo : lo + 1], lines[lo : lo + 1]
    field = None
    for col in frame.columns:
        if col in _BENIGN and crashes(row, row_lines):
            fixed = row.copy()
            fixed[col] = _BENIGN[col]
            if not crashes(fixed, row_lines):
                field = str(col)
                break
    value = row[field].iloc[0] if field is not None else None
    raise DataValidationError(
        [
            DataProblem(
                source,
                int(lines[lo]),
                field,
                f"cannot use the value {value!r} ({type(error).__name__}: {error})"
                if field is not None
                else f"cannot read this row ({type(error).__name__}: {error})",
                "fix the value; timestamps must be seconds since 1970 or ISO-8601 dates between the years 1678 "
                "and 2261",
            )
        ]
    ) from error


def read_interactions(
    path: str | Path,
    mapping: Mapping[str, str] | None = None,
    *,
    format: str | None = None,
    value_range: tuple[float, float] | None = None,
    default_event: str = "interaction",
) -> pd.DataFrame:
    """Read an interactions file into the canonical, validated frame.

    Args:
        path: CSV, TSV, JSON Lines or Parquet file (CSV/TSV/JSONL may be gzipped).
        mapping: Canonical field -> the file's column, e.g. ``{"user_id": "userId", "value": "rating"}``.
            Fields are ``user_id``, ``item_id``, ``timestamp`` (required), ``value`` and ``event``.
        format: ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"``; by default from the file's suffix.
        value_range: Inclusive ``(low, high)`` every ``value`` must lie in (e.g. ``(0.5, 5.0)`` for stars).
        default_event: Event type of rows without an ``event`` column.

    Returns:
        A frame with exactly :data:`~llmrec.data.schema.INTERACTION_COLUMNS`, in file order.

    Raises:
        DataValidationError: Listing each problem with file, line, field and fix.
        ConfigError: The mapping or format argument itself is invalid.

    """

    def validate(df: pd.DataFrame, source: str, *, lines: np.ndarray) -> pd.DataFrame:
        return validate_interactions(df, source, lines=lines, value_range=value_range, default_event=default_event)

    return _read(path, "interactions", mapping, format, validate)


def read_items(
    path: str | Path, mapping: Mapping[str, str] | None = None, *, format: str | None = None
) -> pd.DataFrame:
    """Read an items file (``item_id``, optional ``title`` and ``text``; other columns are kept as attributes).

    Args:
        path: CSV, TSV, JSON Lines or Parquet file (CSV/TSV/JSONL may be gzipped).
        mapping: Canonical field -> the file's column, e.g. ``{"item_id": "movieId", "text": "overview"}``.
        format: Overrides the format told by the suffix.

    Raises:
        DataValidationError: Listing each problem with file, line, field and fix.
        ConfigError: The mapping or format argument itself is invalid.

    """
    return _read(path, "items", mapping, format, validate_items)


def read_users(
    path: str | Path, mapping: Mapping[str, str] | None = None, *, format: str | None = None
) -> pd.DataFrame:
    """Read a users file (``user_id``, optional ``profile``; other columns are kept as attributes).

    Args:
        path: CSV, TSV, JSON Lines or Parquet file (CSV/TSV/JSONL may be gzipped).
        mapping: Canonical field -> the file's column, e.g. ``{"user_id": "userId"}``.
        format: Overrides the format told by the suffix.

    Raises:
        DataValidationError: Listing each problem with file, line, field and fix.
        ConfigError: The mapping or format argument itself is invalid.

    """
    return _read(path, "users", mapping, format, validate_users)


_NOT_FOR_ITEMS = frozenset({"user_id", "timestamp", "value", "event", "profile"})
_NOT_FOR_USERS = frozenset({"item_id", "timestamp", "value", "event", "title", "text"})


class Tables(NamedTuple):
    """The validated frames of a dataset's files (``items`` and ``users`` are ``None`` when not given)."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None


def read_tables(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    item_mapping: Mapping[str, str] | None = None,
    user_mapping: Mapping[str, str] | None = None,
    format: str | None = None,
    value_range: tuple[float, float] | None = None,
    default_event: str = "interaction",
) -> Tables:
    """Read and validate a dataset's interactions file and optional items and users files.

    Every file is read and validated before anything is returned; the first file with problems raises. This
    is what :func:`read_dataset` and ``Store.ingest_files`` build on.

    Args:
        interactions_path: The interactions file.
        items_path: Optional items file.
        users_path: Optional users file.
        mapping: Canonical field -> column, applied to the interactions file in full and to the items and users
            files where their columns exist (so ``{"item_id": "movieId"}`` serves ratings and movies alike).
        item_mapping: Mapping for the items file only (replaces the entries taken from ``mapping``).
        user_mapping: Mapping for the users file only (replaces the entries taken from ``mapping``).
        format: Format of every file, overriding the suffixes.
        value_range: Inclusive range of interaction values.
        default_event: Event type of interactions without an ``event`` column.

    Raises:
        DataValidationError: Listing each problem of the first bad file, with file, line, field and fix.
        ConfigError: A mapping or the format argument is invalid.

    """
    mapping = dict(mapping or {})
    interactions = read_interactions(
        interactions_path,
        {k: v for k, v in mapping.items() if k in INTERACTION_COLUMNS},
        format=format,
        value_range=value_range,
        default_event=default_event,
    )
    items, users = read_entity_tables(
        items_path, users_path, mapping, item_mapping=item_mapping, user_mapping=user_mapping, format=format
    )
    return Tables(interactions, items, users)


def read_entity_tables(
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    item_mapping: Mapping[str, str] | None = None,
    user_mapping: Mapping[str, str] | None = None,
    format: str | None = None,
    delimiter: str | None = None,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Read and validate the optional items and users files of a dataset (``None`` for a file not given).

    These are catalogues (one row per item or user), read whole; interactions, the large file, are streamed
    (:mod:`llmrec.data.stream`). Arguments are those of :func:`read_tables`; ``delimiter`` is sniffed when
    ``None``.

    Raises:
        DataValidationError: Listing each problem of the first bad file, with file, line, field and fix.
        ConfigError: A mapping or the format argument is invalid.

    """
    mapping = dict(mapping or {})
    items = users = None
    if items_path is not None:
        if item_mapping is not None:
            items = _read(items_path, "items", item_mapping, format, validate_items, delimiter=delimiter)
        else:
            shared = {k: v for k, v in mapping.items() if k not in _NOT_FOR_ITEMS}
            items = _read(items_path, "items", shared, format, validate_items, lenient=True, delimiter=delimiter)
    if users_path is not None:
        if user_mapping is not None:
            users = _read(users_path, "users", user_mapping, format, validate_users, delimiter=delimiter)
        else:
            shared = {k: v for k, v in mapping.items() if k not in _NOT_FOR_USERS}
            users = _read(users_path, "users", shared, format, validate_users, lenient=True, delimiter=delimiter)
    return items, users


def read_dataset(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    item_mapping: Mapping[str, str] | None = None,
    user_mapping: Mapping[str, str] | None = None,
    format: str | None = None,
    value_range: tuple[float, float] | None = None,
    default_event: str = "interaction",
) -> Dataset:
    """Read interactions (and optionally items and users) files into a :class:`Dataset`.

    Arguments are those of :func:`read_tables`, plus ``name``: the dataset name, by default the
    interactions file name without its suffixes (``ratings.csv.gz`` -> ``ratings``).

    Raises:
        DataValidationError: Listing each problem of the first bad file, with file, line, field and fix.
        ConfigError: A mapping or the format argument is invalid.

    """
    tables = read_tables(
        interactions_path,
        items_path,
        users_path,
        mapping,
        item_mapping=item_mapping,
        user_mapping=user_mapping,
        format=format,
        value_range=value_range,
        default_event=default_event,
    )
    if name is None:
        name = Path(interactions_path).name.split(".")[0] or "dataset"
    return Dataset(tables.interactions, tables.items, tables.users, name=name, validate=False)
