"""Parsers for single field values, shared by the CSV and JSONL readers.

Each parser takes a raw value (a ``str`` from CSV; any JSON value from JSONL), returns the
parsed value or None when the value is missing or blank, and raises ``InvalidValue`` when
the value is present but unusable.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

#: Latest accepted timestamp (2100-01-01T00:00:00Z): larger numbers are milliseconds or
#: typos, not seconds.
MAX_TIMESTAMP = 4_102_444_800.0
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class InvalidValue(ValueError):
    """A present but unusable value; ``str(exc)`` is the reason, phrased to follow the value
    (``"is not a number"``)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_number(value: object) -> float:
    """A JSON number as a float (a huge integer overflows: not a finite number)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise InvalidValue("is not a finite number") from None


def text(value: object) -> str | None:
    """Stripped text; None for None or blank. JSON numbers are accepted and converted with
    ``str``; booleans, arrays and objects raise InvalidValue."""
    if value is None:
        return None
    if not (isinstance(value, str) or _is_number(value)):
        raise InvalidValue("is not text")
    return str(value).strip() or None


def price(value: object) -> float | None:
    """A finite, non-negative float; None for None or blank. Raises InvalidValue for text
    that is not a number, NaN, infinities and negative numbers."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            number = float(value)
        except ValueError:
            raise InvalidValue("is not a number") from None
    elif _is_number(value):
        number = _json_number(value)
    else:
        raise InvalidValue("is not a number")
    if not math.isfinite(number):
        raise InvalidValue("is not a finite number")
    if number < 0:
        raise InvalidValue("is negative")
    return 0.0 if number == 0 else number  # no -0.0


def boolean(value: object) -> bool | None:
    """True/False from a JSON boolean, the numbers 1/0, or (case-insensitive, stripped)
    ``true/false``, ``1/0``, ``yes/no``; None for None or blank. Raises InvalidValue for
    anything else."""
    if value is None or isinstance(value, bool):
        return value
    if _is_number(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if not word:
            return None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InvalidValue("is not a boolean (expected true/false, 1/0 or yes/no)")


def timestamp(value: object) -> float | None:
    """Seconds as a float; None for None or blank.

    A number (or text that ``float`` parses) is kept as is: an ordinal or epoch seconds.
    Other text must be an ISO-8601 date or datetime (``2024-01-03``, ``2024-01-03T08:47:55Z``,
    ``...+02:00``) and is converted to epoch seconds; a naive datetime is taken as UTC.
    Raises InvalidValue for anything else, for non-finite numbers, and for values outside
    0 .. ``MAX_TIMESTAMP`` (before 1970, or milliseconds rather than seconds).
    """
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return None
        try:
            number = float(stripped)
        except ValueError:
            number = _iso_seconds(stripped)
    elif _is_number(value):
        number = _json_number(value)
    else:
        raise InvalidValue("is neither a number nor an ISO-8601 date/datetime")
    if not math.isfinite(number):
        raise InvalidValue("is not a finite number")
    if not 0 <= number <= MAX_TIMESTAMP:
        raise InvalidValue("is out of range (expected seconds between 1970 and 2100)")
    return number


def _iso_seconds(stamp: str) -> float:
    try:
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise InvalidValue("is neither a number nor an ISO-8601 date/datetime") from None


def attribute(value: object) -> str | None:
    """An extra column's value as text; None for None, blank text and empty arrays/objects.

    Text is stripped, booleans become ``true``/``false``, numbers ``str(number)``, arrays and
    objects their JSON text. Never raises.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return str(value)
    if isinstance(value, dict | list) and not value:
        return None
    return json.dumps(value, ensure_ascii=False, default=str)


def display(value: object) -> str:
    """A raw value as text for an error report: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
