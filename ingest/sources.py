"""Turning a CSV or JSONL file into raw records (one per data row), before validation.

Structural problems of a single row (invalid JSON, a malformed CSV row, too many CSV
values) become ``RowError``; problems that make the whole file unusable (unknown suffix,
no header, missing or duplicate header column, text that is not UTF-8 in a CSV file)
raise ``ValueError`` naming the file.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ingest.errors import RowError

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")

#: Longest raw line kept as ``RowError.value`` for a line that is not valid JSON.
_KEPT_LINE_CHARS = 200


class _CsvReader(Protocol):
    """What ``csv.reader`` returns: rows, and the count of physical lines read so far."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


@dataclass(frozen=True)
class Record:
    """One data row: the 1-based physical line it starts on, and its values by column
    (CSV: ``str``; JSONL: any JSON value). Absent columns are absent keys."""

    line: int
    values: dict[str, object]


def iter_records(path: Path, required: Sequence[str]) -> Iterator[Record | RowError]:
    """The records of ``path`` in file order, or a ``RowError`` in place of a broken row.

    The format is chosen by suffix (case-insensitive): ``.csv``, or ``.jsonl``/``.ndjson``.
    ``required`` names the columns a CSV header must have. Raises ``ValueError`` at once for
    an unknown suffix; for a CSV file whose header lacks one of ``required`` (or repeats a
    column, or is absent) or whose text is not UTF-8, ``ValueError`` is raised during
    iteration. ``OSError`` (e.g. ``FileNotFoundError``) from opening the file propagates.
    """
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _iter_csv(path, required)
    if suffix in JSONL_SUFFIXES:
        return _iter_jsonl(path)
    raise ValueError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
        "expected .csv, .jsonl or .ndjson"
    )


def _iter_csv(path: Path, required: Sequence[str]) -> Iterator[Record | RowError]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = _read_header(reader, path, required)
            yield from _csv_rows(reader, header, path.name)
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}: not UTF-8 text near line {reader.line_num + 1} ({exc.reason})"
            ) from exc


def _read_header(reader: _CsvReader, path: Path, required: Sequence[str]) -> list[str]:
    """The stripped column names of the first non-blank row."""
    try:
        cells = next((row for row in reader if any(cell.strip() for cell in row)), None)
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed CSV header ({exc})") from exc
    if cells is None:
        raise ValueError(f"{path}: empty file, expected a header row")
    names = [cell.strip() for cell in cells]
    for index, name in enumerate(names):
        if name and name in names[:index]:
            raise ValueError(f"{path}: column {name!r} appears twice in the header")
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(
            f"{path}: required column {missing[0]!r} is missing from the header "
            f"(columns: {', '.join(name for name in names if name) or 'none'})"
        )
    return names


def _csv_rows(reader: _CsvReader, header: list[str], source: str) -> Iterator[Record | RowError]:
    while True:
        start = reader.line_num + 1  # line_num counts physical lines read so far
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(source, start, None, f"malformed CSV row ({exc})")
            continue
        if not any(cell.strip() for cell in cells):
            continue  # blank line, or a row of empty cells
        extra = cells[len(header) :]
        if any(cell.strip() for cell in extra):
            yield RowError(
                source,
                start,
                None,
                f"has {len(cells)} values but the header has {len(header)} columns",
            )
            continue
        values: dict[str, object] = {
            name: cell for name, cell in zip(header, cells, strict=False) if name
        }
        yield Record(start, values)


def _iter_jsonl(path: Path) -> Iterator[Record | RowError]:
    source = path.name
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            data = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            try:
                line = data.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield RowError(source, number, None, f"is not UTF-8 text ({exc.reason})")
                continue
            if not line:
                continue
            kept = line[:_KEPT_LINE_CHARS]
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"is not valid JSON ({exc.msg} at column {exc.colno})"
                yield RowError(source, number, None, reason, value=kept)
                continue
            except RecursionError:
                yield RowError(source, number, None, "is nested too deeply", value=kept)
                continue
            if not isinstance(value, dict):
                yield RowError(source, number, None, "is not a JSON object", value=kept)
                continue
            yield Record(number, value)
