"""Interactions files read in blocks and validated block by block, in memory that does not grow with the file.

:func:`stream_interactions` is what ``Store.ingest_files`` (``llmrec ingest``) reads an interactions file with.
A CSV/TSV file is cut into blocks of whole records (1 MiB by default) that pyarrow parses, and each block is
validated vectorised by :func:`~llmrec.data.schema.validate_interactions`; JSON Lines go a few thousand lines at
a time, Parquet a row group batch at a time. Memory holds one block, whatever the file's size.

Problems are collected over the whole file, up to a cap (50), and raised together at the end as one
:class:`~llmrec.errors.DataValidationError`, each with file, line, field and fix: a file with ten bad rows
needs one run to learn about all ten, not ten runs. Once a problem is found no further block is handed on to
be written (the caller rolls back what it wrote); reading continues only to find the other problems.

Line numbers are the file's lines as an editor shows them, as in :mod:`llmrec.data.files`: blank lines and
quoted values spanning several lines are counted. Each block's record boundaries are found with numpy (a
newline ends a record when the quotes before it are balanced), so the line of every row is known without a
Python loop; a block that pyarrow and that count disagree on (odd quoting, rows with too few or too many
fields) is re-read by Python's csv module, which names the line of each malformed record.

The delimiter is sniffed (``,``, tab, ``;`` or ``|``; see :func:`~llmrec.data.files.sniff_delimiter`) unless
given. Duplicate rows inside one block are found here; duplicates across blocks by the store, which sees all the
rows (in its staging table) before any is kept.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from llmrec.data.files import (
    _TEXT_FIELDS,
    FileFormat,
    _check_mapping,
    _encoding_problems,
    _header_problems,
    _name_file_columns,
    _parse_csv,
    _parse_jsonl,
    _Raw,
    detect_format,
    sniff_delimiter,
    validate_safely,
)
from llmrec.data.schema import INTERACTION_COLUMNS, validate_interactions
from llmrec.errors import ConfigError, DataProblem, DataValidationError

__all__ = ["DEFAULT_BLOCK_BYTES", "MAX_PROBLEMS", "InteractionStream", "ProblemLog", "stream_interactions"]

DEFAULT_BLOCK_BYTES = 1 << 20
"""Bytes of CSV read per block: about 25k rows of a typical interactions file (larger blocks are no faster)."""
MAX_PROBLEMS = 50
"""Problems listed at most per file; the count of those beyond it is reported too."""
_JSONL_LINES = 20_000
_PARQUET_ROWS = 100_000
_GZIP_MAGIC = b"\x1f\x8b"
_NEWLINE, _QUOTE, _CR = 10, 34, 13


class ProblemLog:
    """Problems of one file, kept up to a cap; those beyond the cap are only counted.

    Args:
        source: The file, for the closing note when problems were left out.
        cap: Problems kept.

    """

    def __init__(self, source: str, cap: int = MAX_PROBLEMS) -> None:
        self.source = source
        self.cap = cap
        self.problems: list[DataProblem] = []
        self.left_out = 0

    def add(self, problems: list[DataProblem]) -> None:
        """Keep ``problems`` (in file order), counting those beyond the cap."""
        room = max(self.cap - len(self.problems), 0)
        self.problems.extend(problems[:room])
        self.left_out += max(len(problems) - room, 0)

    @property
    def full(self) -> bool:
        """Whether the cap is reached (reading on would only count more)."""
        return len(self.problems) >= self.cap

    def __bool__(self) -> bool:
        return bool(self.problems)

    def error(self) -> DataValidationError:
        """The problems as one error, sorted by line, with a note on any left out."""
        problems = sorted(self.problems, key=lambda p: (p.line is not None, p.line or 0))
        if self.left_out or self.full:
            problems.append(
                DataProblem(
                    self.source,
                    None,
                    None,
                    f"listing stopped at {self.cap} problems"
                    + (f" ({self.left_out} more seen in the part read)" if self.left_out else ""),
                    "fix the problems listed (often one cause, such as a wrong delimiter or mapping) and run again",
                )
            )
        return DataValidationError(problems)


@dataclasses.dataclass(frozen=True)
class _Block:
    """Whole records of a file: their bytes and the file line the first one starts on."""

    data: bytes
    first_line: int


def _open(path: Path, source: str) -> IO[bytes]:
    """The file as a binary stream, gunzipped on the fly when it starts with the gzip magic number."""
    if not path.exists():
        raise DataValidationError([DataProblem(source, None, None, "file not found", "check the path")])
    if not path.is_file():
        raise DataValidationError([DataProblem(source, None, None, "is not a file", "point to a file, not a folder")])
    try:
        handle = path.open("rb")
        magic = handle.read(2)
        handle.seek(0)
    except OSError as exc:
        raise DataValidationError(
            [DataProblem(source, None, None, f"cannot read the file ({exc.strerror or exc})", "check permissions")]
        ) from exc
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _read(stream: IO[bytes], size: int, source: str) -> bytes:
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataValidationError(
            [
                DataProblem(
                    source,
                    None,
                    None,
                    f"damaged gzip data ({exc})",
                    "re-create the .gz file, or store it uncompressed",
                )
            ]
        ) from exc


def _record_ends(arr: np.ndarray, newlines: np.ndarray, quoted: bool) -> np.ndarray:
    """Positions of the newlines that end a record: those with balanced quotes before them."""
    if not quoted:
        return newlines
    parity = np.cumsum(arr == _QUOTE, dtype=np.uint8) & 1  # uint8 wraps at 256: parity survives
    return newlines[parity[newlines] == 0]


def _cut(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole records (0 when no record ends in it)."""
    if data.find(b'"') < 0:
        return data.rfind(b"\n") + 1
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = _record_ends(arr, np.flatnonzero(arr == _NEWLINE), True)
    return int(ends[-1]) + 1 if len(ends) else 0


class InteractionStream:
    """An interactions file read block by block: iterate for validated chunks, problems raised at the end.

    Build it with :func:`stream_interactions`. Opening it checks the header (columns against the mapping);
    iterating yields ``(frame, lines)``: the canonical frame of each block (the columns of
    :data:`~llmrec.data.schema.INTERACTION_COLUMNS`) and the file line of each of its rows. When the file has
    problems, iteration ends by raising :class:`~llmrec.errors.DataValidationError` with all of them (up to the
    cap), and no chunk is yielded after the first problem was found.

    Attributes:
        source: The file's name, for messages.
        format: The file's format.
        delimiter: The CSV/TSV delimiter used (sniffed unless given); ``None`` for JSON Lines and Parquet.
        rows: Rows yielded so far.

    """

    def __init__(
        self,
        path: str | Path,
        mapping: Mapping[str, str] | None = None,
        *,
        format: str | None = None,
        delimiter: str | None = None,
        value_range: tuple[float, float] | None = None,
        default_event: str = "interaction",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        max_problems: int = MAX_PROBLEMS,
    ) -> None:
        if block_bytes < 1024:
            raise ConfigError("block_bytes must be at least 1024", field="block_bytes")
        if delimiter is not None and len(delimiter) != 1:
            raise ConfigError(
                f"a delimiter is one character, got {delimiter!r}",
                field="delimiter",
                fix="use e.g. ';' or '\\t' (a tab)",
            )
        self.path = Path(path)
        self.source = str(path)
        self.format: FileFormat = detect_format(self.path, format)
        self.mapping = _check_mapping(mapping, "interactions")
        self.value_range = value_range
        self.default_event = default_event
        self.block_bytes = block_bytes
        self.log = ProblemLog(self.source, max_problems)
        self.rows = 0
        self.delimiter: str | None = None
        self._given_delimiter = delimiter
        self._header: list[str] = []
        self._header_line = 1
        self._header_lines = 1
        self._stream: IO[bytes] | None = None
        self._pending = b""
        self._started = False
        if self.format in ("csv", "tsv"):
            self._open_csv()

    def close(self) -> None:
        """Close the file (iterating to the end closes it too)."""
        if self._stream is not None:
            self._stream.close()

    # -- CSV ----------------------------------------------------------------------------------------------
    def _open_csv(self) -> None:
        """Open the file, sniff the delimiter, read the header and check it against the mapping."""
        self._stream = _open(self.path, self.source)
        head = _read(self._stream, self.block_bytes, self.source)
        while True:  # make sure the head holds the whole header record
            cut = _cut(head)
            if cut or len(head) % self.block_bytes:
                break
            more = _read(self._stream, self.block_bytes, self.source)
            if not more:
                break
            head += more
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        self.delimiter = self._given_delimiter or sniff_delimiter(head[:65536], self.format)
        cut = _cut(head) or len(head)
        try:
            text = head[:cut].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataValidationError(
                _encoding_problems(head[:cut], self.source, self.format, exc.start, sep=self.delimiter)
            ) from exc
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True)
        header: list[str] | None = None
        prev = 0
        try:
            for record in reader:
                start, prev = prev + 1, reader.line_num
                if record and not (len(record) == 1 and not record[0].strip()):
                    header, self._header_line = record, start
                    break
        except csv.Error as exc:
            raise DataValidationError(
                [DataProblem(self.source, prev + 1, None, f"malformed CSV header ({exc})", "fix the header row")]
            ) from exc
        if header is None:
            raise DataValidationError(
                [DataProblem(self.source, None, None, "the file is empty", "give the file a header row and data")]
            )
        self._header_lines = prev
        # Bytes after the header record: skip exactly `prev` newlines (the header may hold quoted newlines).
        offset = 0
        for _ in range(prev):
            found = head.find(b"\n", offset)
            offset = len(head) if found < 0 else found + 1
        self._pending = head[offset:]
        self._header = [c.strip() for c in header]
        dupes = sorted({c for c in self._header if self._header.count(c) > 1})
        if dupes:
            raise DataValidationError(
                [
                    DataProblem(
                        self.source, self._header_line, c, f"column '{c}' appears more than once", "rename one of them"
                    )
                    for c in dupes
                ]
            )
        problems, self.mapping = _header_problems(
            self._header, self.mapping, "interactions", self.source, self._header_line, False
        )
        if problems:
            raise DataValidationError(problems)

    def _blocks(self) -> Iterator[_Block]:
        """The file after the header, in blocks of whole records."""
        assert self._stream is not None
        line = self._header_lines + 1
        data = self._pending
        self._pending = b""
        eof = False
        while True:
            while not eof and len(data) < self.block_bytes:
                more = _read(self._stream, self.block_bytes, self.source)
                eof = not more
                data += more
            if eof and not data:
                return
            cut = len(data) if eof else _cut(data)
            if not cut:  # one record longer than a block: read on until it ends
                more = _read(self._stream, self.block_bytes, self.source)
                eof = not more
                data += more
                continue
            block, data = data[:cut], data[cut:]
            if block:
                yield _Block(block, line)
                line += block.count(b"\n")
            if eof and not data:
                return

    def _csv_chunks(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Raw frames (file column names) and their file lines, one per block."""
        assert self.delimiter is not None
        wanted = [c for c in self._header if c in self._wanted_columns()]
        try:
            for block in self._blocks():
                try:
                    block.data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problems = _encoding_problems(
                        block.data, self.source, self.format, exc.start, header=self._header, sep=self.delimiter
                    )
                    self.log.add([dataclasses.replace(p, line=(p.line or 1) + block.first_line - 1) for p in problems])
                    if self.log.full:
                        return
                    continue
                parsed = self._fast(block, wanted)
                if parsed is None:
                    parsed = self._slow(block, wanted)
                if parsed is not None:
                    yield parsed
                if self.log.full:
                    return
        finally:
            if self._stream is not None:
                self._stream.close()

    def _wanted_columns(self) -> set[str]:
        return {self.mapping.get(f, f) for f in INTERACTION_COLUMNS}

    def _fast(self, block: _Block, wanted: list[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
        """Parse a block with pyarrow; ``None`` when it needs the careful path (a malformed or odd record)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        data = block.data
        arr = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(arr == _NEWLINE)
        quoted = data.find(b'"') >= 0
        ends = _record_ends(arr, newlines, quoted)
        quoted_newlines = len(ends) < len(newlines)
        if not len(data) or data[-1] != _NEWLINE:
            ends = np.append(ends, len(data))
        starts = np.r_[0, ends[:-1] + 1]
        lengths = ends - starts
        first_byte = arr[np.minimum(starts, len(arr) - 1)] if len(arr) else np.zeros(len(starts), np.uint8)
        blank = (lengths == 0) | ((lengths == 1) & (first_byte == _CR))
        lines = np.asarray(block.first_line + np.searchsorted(newlines, starts), dtype=np.int64)[~blank]
        invalid: list[object] = []

        def skip(row: Any) -> Literal["skip"]:
            invalid.append(row)
            return "skip"

        assert self.delimiter is not None

        text_columns = {self.mapping.get(f, f) for f in _TEXT_FIELDS["interactions"]}
        pool = pa.system_memory_pool()  # gives freed blocks back (the default pool keeps them: +30 MB of RSS)
        try:
            table = pacsv.read_csv(
                io.BytesIO(data),
                memory_pool=pool,
                read_options=pacsv.ReadOptions(column_names=self._header, use_threads=False),  # threads: +20 MB RSS,
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter,
                    newlines_in_values=quoted_newlines,
                    invalid_row_handler=skip,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in wanted if c in text_columns},
                    include_columns=wanted,
                    timestamp_parsers=[],
                    null_values=[""],
                    strings_can_be_null=True,
                    true_values=[],
                    false_values=[],
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if invalid or table.num_rows != len(lines):
            return None
        return table.to_pandas(memory_pool=pool), lines

    def _slow(self, block: _Block, wanted: list[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
        """Parse a block with Python's csv module, which names the line of every malformed record."""
        text_columns = {self.mapping.get(f, f) for f in _TEXT_FIELDS["interactions"]}
        found: list[DataProblem] = []
        try:
            raw = _parse_csv(
                block.data.decode("utf-8"),
                self.source,
                self.format,
                text_columns,
                sep=self.delimiter,
                header=self._header,
                header_line=self._header_line,
                first_line=block.first_line,
                found=found,
            )
        except DataValidationError as exc:
            self.log.add(exc.problems)
            return None
        finally:
            self.log.add(found)
        return raw.frame[[c for c in raw.frame.columns if c in wanted]], raw.lines

    # -- JSON Lines and Parquet ---------------------------------------------------------------------------
    def _jsonl_chunks(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        stream = _open(self.path, self.source)
        try:
            line_no, buffered, first = 1, [], True
            while True:
                raw = stream.readline()
                if raw and first and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if raw:
                    buffered.append(raw)
                if buffered and (len(buffered) >= _JSONL_LINES or not raw):
                    chunk = self._jsonl_chunk(b"".join(buffered), line_no, first)
                    line_no += len(buffered)
                    buffered, first = [], False
                    if chunk is not None:
                        yield chunk
                    if self.log.full:
                        return
                if not raw:
                    return
        except (OSError, EOFError, zlib.error) as exc:
            raise DataValidationError(
                [DataProblem(self.source, None, None, f"damaged gzip data ({exc})", "re-create the .gz file")]
            ) from exc
        finally:
            stream.close()

    def _jsonl_chunk(self, data: bytes, first_line: int, first: bool) -> tuple[pd.DataFrame, np.ndarray] | None:
        def shift(problems: list[DataProblem]) -> list[DataProblem]:
            return [dataclasses.replace(p, line=p.line + first_line - 1) if p.line else p for p in problems]

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.log.add(shift(_encoding_problems(data, self.source, "jsonl", exc.start)))
            return None
        if not text.strip():
            return None
        try:
            raw = _parse_jsonl(text, self.source)
        except DataValidationError as exc:
            self.log.add(shift(exc.problems))
            return None
        return self._checked(raw, first, raw.lines + first_line - 1)

    def _parquet_chunks(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        import pyarrow.parquet as pq

        if not self.path.exists():
            raise DataValidationError([DataProblem(self.source, None, None, "file not found", "check the path")])
        try:
            handle = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not readable Parquet"
            raise DataValidationError(
                [
                    DataProblem(
                        self.source,
                        None,
                        None,
                        f"not a readable Parquet file ({type(exc).__name__}: {exc})",
                        "re-export the file as Parquet, or use CSV/JSON Lines",
                    )
                ]
            ) from exc
        columns = [c for c in handle.schema_arrow.names if c in self._wanted_columns()]
        row = 1
        for first, batch in enumerate(handle.iter_batches(batch_size=_PARQUET_ROWS, columns=columns or None)):
            frame = batch.to_pandas()
            lines = np.arange(row, row + len(frame), dtype=np.int64)
            row += len(frame)
            chunk = self._checked(_Raw(frame, lines, self.source, "parquet", None), first == 0, lines)
            if chunk is not None:
                yield chunk
            if self.log.full:
                return

    def _checked(self, raw: _Raw, first: bool, lines: np.ndarray) -> tuple[pd.DataFrame, np.ndarray] | None:
        """The header check (on the first chunk) and the nested-value check of a JSON Lines or Parquet chunk."""
        from llmrec.data.files import _check_scalars

        columns = [str(c) for c in raw.frame.columns]
        if first:
            problems, self.mapping = _header_problems(
                columns, self.mapping, "interactions", self.source, int(lines[0]) if len(lines) else None, False
            )
            if problems:
                raise DataValidationError(problems)
        renamed = raw.frame.rename(columns={v: k for k, v in self.mapping.items()})
        try:
            _check_scalars(renamed, dataclasses.replace(raw, lines=lines), "interactions", self.mapping)
        except DataValidationError as exc:
            self.log.add(exc.problems)
            return None
        return raw.frame, lines

    # -- validation ---------------------------------------------------------------------------------------
    def _raw_chunks(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        if self.format in ("csv", "tsv"):
            return self._csv_chunks()
        if self.format == "jsonl":
            return self._jsonl_chunks()
        return self._parquet_chunks()

    def __iter__(self) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        if self._started:
            raise ConfigError("an InteractionStream is read once; open the file again to re-read it")
        self._started = True
        inverse = {v: k for k, v in self.mapping.items()}

        def validate(df: pd.DataFrame, source: str, *, lines: np.ndarray) -> pd.DataFrame:
            return validate_interactions(
                df, source, lines=lines, value_range=self.value_range, default_event=self.default_event
            )

        seen_rows = False
        for frame, lines in self._raw_chunks():
            if not len(frame):
                continue
            seen_rows = True
            renamed = frame.rename(columns=inverse)
            try:
                canonical = validate_safely(validate, renamed, self.source, lines)
            except DataValidationError as exc:
                self.log.add(_name_file_columns(exc, self.mapping).problems)
                if self.log.full:
                    break
                continue
            if self.log:
                continue  # a problem was found: nothing more is handed on to be written
            self.rows += len(canonical)
            yield canonical, lines
        if not seen_rows and not self.log:
            self.log.add(
                [
                    DataProblem(
                        self.source, None, None, "the file has no data rows", "add at least one row of interactions"
                    )
                ]
            )
        if self.log:
            raise self.log.error()


def stream_interactions(
    path: str | Path,
    mapping: Mapping[str, str] | None = None,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    value_range: tuple[float, float] | None = None,
    default_event: str = "interaction",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_problems: int = MAX_PROBLEMS,
) -> InteractionStream:
    """Open an interactions file for reading in blocks (see the module docstring).

    Args:
        path: CSV, TSV, JSON Lines or Parquet file (CSV/TSV/JSONL may be gzipped).
        mapping: Canonical field -> the file's column, e.g. ``{"user_id": "userId", "value": "rating"}``.
        format: Overrides the format told by the suffix.
        delimiter: The CSV/TSV delimiter; sniffed from the first lines when ``None``.
        value_range: The dataset's rating scale: every ``value`` must lie in ``[low, high]``.
        default_event: Event type of rows without an ``event`` column.
        block_bytes: Bytes of CSV parsed at a time (memory is a small multiple of it).
        max_problems: Problems listed at most.

    Returns:
        The stream: iterate it for ``(canonical frame, file lines)`` chunks.

    Raises:
        DataValidationError: At once for a missing or unreadable file or a header that does not fit the mapping;
            from the iteration, every problem of the rows (up to ``max_problems``).
        ConfigError: The mapping, format or delimiter argument is invalid.

    """
    return InteractionStream(
        path,
        mapping,
        format=format,
        delimiter=delimiter,
        value_range=value_range,
        default_event=default_event,
        block_bytes=block_bytes,
        max_problems=max_problems,
    )
