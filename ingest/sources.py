"""Turning a CSV or JSONL file into raw records (one per data row), before validation.

Structural problems of a single row (invalid JSON, broken CSV quoting, too many CSV values,
bytes that are not UTF-8, a line longer than ``MAX_LINE_CHARS``) become a ``RowError`` naming
the line, and reading goes on with the next line: one bad row never costs the good ones.
Problems that make the whole file unusable (unknown suffix, empty file, missing or duplicate
header column, a header that is not UTF-8) raise ``ValueError`` naming the file.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ingest.errors import RowError

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")

#: Longest raw line kept as ``RowError.value`` for a line that is not valid JSON.
_KEPT_LINE_CHARS = 200
#: Longest physical line read (characters in CSV, bytes in JSONL); longer lines are skipped
#: unread and reported, so an enormous field cannot exhaust memory.
MAX_LINE_CHARS = 1 << 20
_NOT_UTF8 = "contains bytes that are not UTF-8 text"


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


class _LineTooLong(Exception):
    """A physical line longer than ``MAX_LINE_CHARS``; its text was skipped, not kept."""


class _Lines:
    """The physical lines of a text file, with line numbers, a length bound, and the
    ability to give lines back: after a broken CSV row, parsing restarts on its second line,
    so an unterminated quote swallows one row, not the rest of the file."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.back: deque[str] = deque()
        self.taken: list[str] = []  # lines handed out since the last ``mark``
        self.line = 0  # physical lines handed out so far

    def mark(self) -> None:
        self.taken = []

    def give_back_all_but_first(self) -> None:
        self.back.extendleft(reversed(self.taken[1:]))
        self.line -= max(len(self.taken) - 1, 0)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.back:
            text = self.back.popleft()
        else:
            text = self.handle.readline(MAX_LINE_CHARS + 1)
            if not text:
                raise StopIteration
            if len(text) > MAX_LINE_CHARS and not text.endswith(("\n", "\r")):
                while (rest := self.handle.readline(MAX_LINE_CHARS)) and not rest.endswith(
                        ("\n", "\r")):
                    pass
                self.line += 1
                raise _LineTooLong
        self.line += 1
        self.taken.append(text)
        return text


def _iter_csv(path: Path, required: Sequence[str]) -> Iterator[Record | RowError]:
    # surrogateescape: bytes that are not UTF-8 survive decoding as lone surrogates, so the
    # row holding them is reported and the rest of the file is still read.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        lines = _Lines(handle)
        header = _read_header(lines, path, required)
        yield from _csv_rows(lines, header, path.name)


def _next_row(lines: _Lines) -> list[str] | None:
    """The next CSV row (None at the end); raises ``csv.Error`` or ``_LineTooLong``."""
    lines.mark()
    reader = csv.reader(lines, strict=True)  # one reader per row: restartable after errors
    return next(reader, None)


def _read_header(lines: _Lines, path: Path, required: Sequence[str]) -> list[str]:
    """The stripped column names of the first non-blank row."""
    while True:
        try:
            cells = _next_row(lines)
        except (csv.Error, _LineTooLong) as exc:
            raise ValueError(f"{path}: malformed CSV header ({exc or 'line too long'})") from exc
        if cells is None:
            raise ValueError(f"{path}: empty file, expected a header row")
        if any(cell.strip() for cell in cells):
            break
    if any(_has_bad_bytes(cell) for cell in cells):
        raise ValueError(f"{path}: the header (line {lines.line}) is not UTF-8 text")
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


def _csv_rows(lines: _Lines, header: list[str], source: str) -> Iterator[Record | RowError]:
    while True:
        start = lines.line + 1
        try:
            cells = _next_row(lines)
        except _LineTooLong:
            lines.give_back_all_but_first()
            yield RowError(source, start, None, f"has a line longer than {MAX_LINE_CHARS} "
                                                "characters; skipped")
            continue
        except csv.Error as exc:
            lines.give_back_all_but_first()
            yield RowError(source, start, None, f"malformed CSV row ({exc})")
            continue
        if cells is None:
            return
        if not any(cell.strip() for cell in cells):
            continue  # blank line, or a row of empty cells
        bad = [i for i, cell in enumerate(cells) if _has_bad_bytes(cell)]
        if bad:
            field = header[bad[0]] if bad[0] < len(header) and header[bad[0]] else None
            yield RowError(source, start, field, _NOT_UTF8)
            continue
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


def _has_bad_bytes(text: str) -> bool:
    """Whether ``text`` holds a byte that was not UTF-8 (a surrogateescape'd character)."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _iter_jsonl(path: Path) -> Iterator[Record | RowError]:
    source = path.name
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(raw) > MAX_LINE_CHARS and not raw.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_CHARS)) and not rest.endswith(b"\n"):
                    pass
                reason = f"is longer than {MAX_LINE_CHARS} bytes; skipped"
                yield RowError(source, number, None, reason)
                continue
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
