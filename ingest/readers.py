"""Catalog and event readers: a CSV or JSONL file in, validated records and row errors out."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from ingest import values
from ingest.errors import ReadResult, RowError
from ingest.images import ImageError, inside_roots, is_url
from ingest.sources import Record, iter_records
from semrec.catalog import KNOWN_FIELDS, MAX_CHARS, Event, Product

V = TypeVar("V")

CATALOG_REQUIRED = ("product_id", "title")
EVENTS_REQUIRED = ("user_id", "product_id", "timestamp")
DEFAULT_EVENT = "purchase"


def read_catalog(path: str | Path, *, image_roots: Sequence[str | Path] = (),
                 allow_urls: bool = False, strict: bool = False) -> ReadResult[Product]:
    """Read a product catalog (``.csv``, or ``.jsonl``/``.ndjson``: one JSON object a line).

    Fields: ``product_id`` and ``title`` required (stripped, blank is an error);
    ``description`` (default ""), ``category``, ``brand``; ``price`` (finite float >= 0);
    ``in_stock`` (true/false, 1/0, yes/no, any case; blank is None); ``image`` (a local path
    relative to the catalog file's folder, resolved to an absolute path with symlinks
    followed; it must lie inside that folder or one of ``image_roots``, so ``../..``, an
    absolute path elsewhere or a symlink out of the folder is an error; whether the file
    exists and is an image is checked when it is loaded. With ``allow_urls`` an ``http://``
    or ``https://`` URL is kept as given, a ``str``, to be fetched when indexed; without it
    such a URL is an error naming ``image.allow_urls``, and any other URL (``file://``,
    ``ftp://``...) is always an error). Text fields longer than
    ``semrec.catalog.MAX_CHARS`` allows are errors. Every other column goes to ``attributes``
    as text (blank values skipped; JSON numbers/booleans/arrays/objects converted to text).

    A row whose ``product_id`` or ``title`` is bad is left out, reported as a ``RowError``
    per bad field in ``errors``; any other bad field (an optional one, an attribute that is
    too long, an image path or URL that is refused) is left out of its product, which is
    kept, and reported in ``warnings`` (``strict``: as errors, and the row left out). Good
    rows are returned in file order. A ``product_id`` already taken by an earlier good row
    is an error naming that row's line (the first good occurrence wins). In CSV, blank rows
    are skipped, a UTF-8 BOM is tolerated, header names are stripped, columns with an empty
    header name are ignored, a row with fewer values than columns has the rest blank, and a
    row with more (non-blank) values than columns is an error.

    Raises ``ValueError`` (naming the file) for an unsupported suffix, a CSV header missing
    ``product_id`` or ``title`` or repeating a column, or a CSV file that is not UTF-8;
    ``OSError`` (e.g. ``FileNotFoundError``) if the file cannot be read.
    """
    path = Path(path)
    folder = path.absolute().parent
    return read_products(iter_records(path, CATALOG_REQUIRED), path.name, folder,
                         (folder, *image_roots), allow_urls=allow_urls, strict=strict)


def read_products(records: Iterable[Record | RowError], source: str, folder: Path,
                  roots: Sequence[Path | str], *, allow_urls: bool = False,
                  strict: bool = False, unit: str = "line") -> ReadResult[Product]:
    """Products from records (a catalog file's, or the items of a ``PUT /items`` body,
    ``unit="item"``), validated by ``parse_product``; a ``product_id`` already taken by an
    earlier good record is an error naming that record."""
    items: list[Product] = []
    errors: list[RowError] = []
    warnings: list[RowError] = []
    first_line: dict[str, int] = {}
    for record in records:
        if isinstance(record, RowError):
            errors.append(record)
            continue
        product, row_errors, row_warnings = parse_product(record, source, folder, roots,
                                                          allow_urls, strict)
        warnings += [replace(w, unit=unit) for w in row_warnings]
        if product is None:
            errors += [replace(e, unit=unit) for e in row_errors]
        elif product.product_id in first_line:
            errors.append(RowError(source, record.line, "product_id",
                                   f"duplicates the product on {unit} "
                                   f"{first_line[product.product_id]}",
                                   value=product.product_id, product_id=product.product_id,
                                   unit=unit))
        else:
            first_line[product.product_id] = record.line
            items.append(product)
    return ReadResult(items, errors, warnings)


def read_events(path: str | Path, *,
                event_types: Collection[str] | None = None) -> ReadResult[Event]:
    """Read interaction events (``.csv``, or ``.jsonl``/``.ndjson``).

    Fields: ``user_id``, ``product_id`` (required, stripped, at most 200 characters),
    ``timestamp`` (required: a number, kept as float seconds or ordinal, or an ISO-8601
    date/datetime converted to epoch seconds, naive taken as UTC, trailing ``Z`` accepted;
    either way between 0 and ``values.MAX_TIMESTAMP`` (2100-01-01), so milliseconds and
    dates before 1970 are errors) and ``event`` (optional, stripped and lower-cased, blank or
    absent means ``"purchase"``; with ``event_types``, any other type is an error). Other
    columns are ignored. Whether the user or product exists is not checked: a new user is
    fine, and unknown products are the caller's to report.

    Bad rows are reported as ``RowError`` (one per bad field) and left out; CSV handling and
    exceptions are as for ``read_catalog`` (required header columns: ``user_id``,
    ``product_id``, ``timestamp``).
    """
    path = Path(path)
    known = None if event_types is None else {t.lower() for t in event_types}
    items: list[Event] = []
    errors: list[RowError] = []
    for record in iter_records(path, EVENTS_REQUIRED):
        if isinstance(record, RowError):
            errors.append(record)
            continue
        fields = _Fields(path.name, record)
        user_id = fields.parse("user_id", _text("user_id"), required=True)
        product_id = fields.parse("product_id", _text("product_id"), required=True)
        stamp = fields.parse("timestamp", values.timestamp, required=True)
        kind = (fields.parse("event", _text("event")) or DEFAULT_EVENT).lower()
        if known is not None and kind not in known and not fields.problems:
            fields.problems.append(("event", "is not a known event type (expected one of "
                                             f"{', '.join(sorted(known))})", kind))
        if user_id is None or product_id is None or stamp is None or fields.problems:
            errors.extend(fields.errors(product_id))
            continue
        items.append(Event(user_id, product_id, stamp, kind))
    return ReadResult(items, errors)


#: Fields a product can do without: a bad value costs the field, not the product.
OPTIONAL = ("description", "category", "brand", "price", "in_stock", "image")


def parse_product(record: Record, source: str, folder: Path, roots: Sequence[Path | str],
                  allow_urls: bool = False, strict: bool = False
                  ) -> tuple[Product | None, list[RowError], list[RowError]]:
    """One catalog record as a ``Product`` (catalog files and ``PUT /items`` alike), with
    the row's errors and warnings. A bad ``product_id`` or ``title`` rejects the row (the
    product is None and ``errors`` says why); a bad optional field or attribute (``OPTIONAL``:
    a price of ``Free to Play``, an image path outside the catalog's folder, ...) is left
    out, and a warning names the line, field and value. With ``strict`` every problem is an
    error."""
    fields = _Fields(source, record)
    product_id = fields.parse("product_id", _text("product_id"), required=True)
    title = fields.parse("title", _text("title"), required=True)
    required_problems = len(fields.problems)
    description = fields.parse("description", _text("description"))
    category = fields.parse("category", _text("category"))
    brand = fields.parse("brand", _text("brand"))
    price = fields.parse("price", values.price)
    in_stock = fields.parse("in_stock", values.boolean)
    image = fields.parse("image", lambda raw: _image(raw, folder, roots, allow_urls))
    attributes: dict[str, str] = {}
    for name, raw in record.values.items():
        if name in KNOWN_FIELDS or (text := values.attribute(raw)) is None:
            continue
        if len(text) > MAX_CHARS["attribute"]:
            fields.problems.append(
                (name, f"is longer than {MAX_CHARS['attribute']} characters", text))
        else:
            attributes[name] = text
    if product_id is None or title is None or required_problems or (strict and fields.problems):
        return None, fields.errors(product_id), []
    product = Product(product_id=product_id, title=title, description=description or "",
                      category=category, brand=brand, price=price, in_stock=in_stock,
                      image=image, attributes=attributes)
    return product, [], fields.errors(product_id)


def _text(name: str) -> Callable[[object], str | None]:
    """``values.text`` bounded by the field's ``MAX_CHARS`` (the API's limits too)."""
    limit = MAX_CHARS[name]

    def parse(raw: object) -> str | None:
        value = values.text(raw)
        if value is not None and len(value) > limit:
            raise values.InvalidValue(f"is longer than {limit} characters")
        return value

    return parse


def _image(raw: object, folder: Path, roots: Sequence[Path | str],
           allow_urls: bool) -> Path | str | None:
    name = values.text(raw)
    if name is None:
        return None
    if is_url(name):
        if not allow_urls:
            raise values.InvalidValue("is a URL; fetching image URLs is not enabled "
                                      "(set image.allow_urls = true)")
        return name
    if "://" in name:
        raise values.InvalidValue("is a URL; only http:// and https:// image URLs can be "
                                  "fetched")
    try:
        return inside_roots(folder / name, roots)
    except ImageError as exc:
        raise values.InvalidValue(exc.reason) from None


class _Fields:
    """Parses the fields of one record, remembering every bad one."""

    def __init__(self, source: str, record: Record) -> None:
        self.source = source
        self.record = record
        self.problems: list[tuple[str, str, str | None]] = []  # (field, reason, value)

    def parse(
        self, name: str, parser: Callable[[object], V | None], *, required: bool = False
    ) -> V | None:
        """The parsed value of column ``name`` (None if absent/blank or bad)."""
        raw = self.record.values.get(name)
        try:
            value = parser(raw)
        except values.InvalidValue as exc:
            self.problems.append((name, str(exc), values.display(raw)))
            return None
        if value is None and required:
            self.problems.append((name, "missing value", None))
        return value

    def errors(self, product_id: str | None) -> list[RowError]:
        """One RowError per bad field, tagged with the row's product id when known."""
        return [
            RowError(self.source, self.record.line, name, reason, value, product_id)
            for name, reason, value in self.problems
        ]
