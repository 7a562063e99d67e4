"""Row-level error reports and the result type the catalog readers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: Longest value shown in full by ``RowError.__str__``; longer values are cut with "...".
_SHOWN_VALUE_CHARS = 80


@dataclass(frozen=True)
class RowError:
    """One problem with one row of an input file; the row itself is skipped.

    ``source`` is the file name, ``line`` the 1-based physical line the row starts on (for
    CSV the header is line 1), ``field`` the column at fault (None for a row-level problem
    such as invalid JSON), ``reason`` a phrase that reads after the value (``"is not a
    number"``) or on its own when ``value`` is None, ``value`` the offending raw value as
    text, and ``product_id`` the row's product id when it could be read.
    """

    source: str
    line: int
    field: str | None
    reason: str
    value: str | None = None
    product_id: str | None = None
    unit: str = "line"  # what ``line`` counts: "item" for the items of a request body

    def __str__(self) -> str:
        """E.g. ``catalog.csv line 6, field 'price': 'abc' is not a number (product B004)``."""
        text = f"{self.source} {self.unit} {self.line}"
        if self.field is not None:
            text += f", field {self.field!r}"
        if self.value is None:
            text += f": {self.reason}"
        else:
            shown = self.value
            if len(shown) > _SHOWN_VALUE_CHARS:
                shown = shown[: _SHOWN_VALUE_CHARS - 3] + "..."
            text += f": {shown!r} {self.reason}"
        if self.product_id is not None:
            text += f" (product {self.product_id})"
        return text


@dataclass
class ReadResult(Generic[T]):
    """What a reader returns: the valid ``items`` in file order, one ``RowError`` per
    problem that cost its row (a row may have several; rows with any error are not in
    ``items``), and one per problem that cost a field of a row that was kept."""

    items: list[T]
    errors: list[RowError]
    warnings: list[RowError] = field(default_factory=list)
