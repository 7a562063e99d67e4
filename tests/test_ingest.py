"""Tests for the ``ingest`` package: catalog/event readers, row errors, image loading."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import re
import struct
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ingest import ImageError, ReadResult, RowError, load_image, read_catalog, read_events
from ingest.images import image_digest
from semrec.catalog import Event, Product

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

HEADER = "product_id,title,description,category,brand,price,in_stock,image,color,material\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def where(result: ReadResult) -> list[tuple[int, str | None]]:
    """(line, field) of every error, in report order."""
    return [(error.line, error.field) for error in result.errors]


def warned(result: ReadResult) -> list[tuple[int, str | None]]:
    """(line, field) of every field left out of a kept row, in report order."""
    return [(warning.line, warning.field) for warning in result.warnings]


def png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", color=(200, 10, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


# --- catalog: CSV -----------------------------------------------------------------------------


@pytest.fixture
def messy_catalog(tmp_path: Path) -> Path:
    return write(
        tmp_path / "catalog.csv",
        HEADER
        + "A001, Trail shoe ,Grippy,running shoes,Pacer,99.50,TRUE,img/a.png,red,knit\n"  # 2
        + ",No id,,,,1,,,,\n"  # 3 missing id
        + "A002,  ,,,,1,,,,\n"  # 4 missing title
        + "A003,Kettle,,,,abc,,,,\n"  # 5 price abc
        + "A004,Kettle,,,,NaN,,,,\n"  # 6 price NaN
        + "A005,Kettle,,,,-3,,,,\n"  # 7 negative price
        + "A006,Kettle,,,,3,maybe,,,\n"  # 8 in_stock maybe
        + "A001,Second A001,,,,5,,,,\n"  # 9 duplicate of line 2
        + "A007,Lamp,,,,,no,,,\n"  # 10 good, empty price
        + "A008,Lamp,,,,inf,,,,\n",  # 11 price inf
    )


def test_catalog_good_rows_land_and_bad_rows_are_reported(messy_catalog: Path) -> None:
    """A bad product_id or title, or a duplicate, costs the row; any other bad field costs
    that field alone, reported as a warning; ``strict`` rejects those rows too."""
    result = read_catalog(messy_catalog)

    assert [p.product_id for p in result.items] == ["A001", "A003", "A004", "A005", "A006",
                                                    "A007", "A008"]
    assert where(result) == [(3, "product_id"), (4, "title"), (9, "product_id")]
    assert warned(result) == [(5, "price"), (6, "price"), (7, "price"), (8, "in_stock"),
                              (11, "price")]
    kept = {p.product_id: p for p in result.items}
    assert kept["A003"].price is None and kept["A006"].in_stock is None
    assert kept["A006"].price == 3.0
    strict = read_catalog(messy_catalog, strict=True)
    assert [p.product_id for p in strict.items] == ["A001", "A007"]
    assert where(strict) == [(3, "product_id"), (4, "title"), (5, "price"), (6, "price"),
                             (7, "price"), (8, "in_stock"), (9, "product_id"), (11, "price")]
    assert strict.warnings == []
    first = kept["A001"]
    assert first == Product(
        product_id="A001",
        title="Trail shoe",
        description="Grippy",
        category="running shoes",
        brand="Pacer",
        price=99.5,
        in_stock=True,
        image=(messy_catalog.parent / "img" / "a.png").resolve(),
        attributes={"color": "red", "material": "knit"},
    )
    lamp = kept["A007"]
    assert (lamp.price, lamp.in_stock, lamp.image, lamp.attributes) == (None, False, None, {})


def test_catalog_error_details_and_messages(messy_catalog: Path) -> None:
    result = read_catalog(messy_catalog)
    errors = {e.line: e for e in [*result.errors, *result.warnings]}

    message = "catalog.csv line 5, field 'price': 'abc' is not a number (product A003)"
    assert str(errors[5]) == message
    assert errors[3].product_id is None
    assert str(errors[3]) == "catalog.csv line 3, field 'product_id': missing value"
    assert errors[4].product_id == "A002"
    assert (errors[6].value, errors[7].reason) == ("NaN", "is negative")
    assert errors[8].value == "maybe"
    duplicate = errors[9]
    assert (duplicate.value, duplicate.product_id) == ("A001", "A001")
    assert "line 2" in duplicate.reason
    assert str(duplicate).startswith("catalog.csv line 9, field 'product_id': 'A001' ")


def test_row_with_several_bad_fields_reports_each(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "product_id,title,price,in_stock\nX1,,abc,maybe\n")
    result = read_catalog(path)
    assert result.items == []
    assert where(result) == [(2, "title"), (2, "price"), (2, "in_stock")]
    assert {error.product_id for error in result.errors} == {"X1"}


def test_a_price_a_shop_writes_in_words_costs_the_price_only(tmp_path: Path) -> None:
    """A game shop's "Free to Play" and "Free": the products are kept without a price, and
    each warning names the line, the field and the value."""
    path = write(tmp_path / "c.csv", "product_id,title,price\nG1,Space shooter,Free to Play\n"
                                     "G2,Puzzle,Free\nG3,Racer,19.99\n")
    result = read_catalog(path)
    assert [(p.product_id, p.price) for p in result.items] == [("G1", None), ("G2", None),
                                                                 ("G3", 19.99)]
    assert result.errors == []
    assert str(result.warnings[0]) == ("c.csv line 2, field 'price': 'Free to Play' is not a "
                                       "number (product G1)")


def test_duplicate_of_a_bad_row_is_not_a_duplicate(tmp_path: Path) -> None:
    # The first *valid* occurrence wins: an id only seen on a rejected row is still free.
    path = write(tmp_path / "c.csv", "product_id,title,price\nX1,A,abc\nX1,B,1\nX1,C,2\n")
    result = read_catalog(path, strict=True)
    assert [(p.product_id, p.title) for p in result.items] == [("X1", "B")]
    assert where(result) == [(2, "price"), (4, "product_id")]
    assert "line 3" in result.errors[1].reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("Yes", True),
        (" no ", False),
        ("", None),
    ],
)
def test_in_stock_values(tmp_path: Path, raw: str, expected: bool | None) -> None:
    path = write(tmp_path / "c.csv", f"product_id,title,in_stock\nX1,T,{raw}\n")
    [product] = read_catalog(path).items
    assert product.in_stock is expected


def test_bom_header_is_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "\ufeffproduct_id,title\nX1,Kettle\n")
    result = read_catalog(path)
    assert [p.product_id for p in result.items] == ["X1"]
    assert result.errors == []


def test_attribute_columns_are_kept_as_text_and_empty_ones_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "product_id,title,color,size, weight \nX1,T,red,,2 kg\n")
    [product] = read_catalog(path).items
    assert product.attributes == {"color": "red", "weight": "2 kg"}


def test_image_path_is_resolved_relative_to_the_catalog_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "data" / "c.csv", "product_id,title,image\nX1,T,images/x.png\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    [product] = read_catalog(Path("data") / "c.csv").items
    assert product.image == (tmp_path / "data" / "images" / "x.png").resolve()
    assert product.image.is_absolute()


def test_image_url_costs_the_image_unless_enabled(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "product_id,title,image\nX1,T,https://x.org/a.png\n")
    result = read_catalog(path)
    assert [(p.product_id, p.image) for p in result.items] == [("X1", None)]
    assert warned(result) == [(2, "image")] and "image.allow_urls" in result.warnings[0].reason


def test_missing_required_column_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "nameless.csv", "product_id,description\nX1,d\n")
    with pytest.raises(ValueError, match=r"nameless\.csv.*'title'"):
        read_catalog(path)


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_csv_raises(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="empty.csv"):
        read_catalog(write(tmp_path / "empty.csv", text))


def test_duplicate_header_column_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'title'"):
        read_catalog(write(tmp_path / "c.csv", "product_id,title,title\nX1,a,b\n"))


def test_unsupported_suffix_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"catalog\.xlsx"):
        read_catalog(write(tmp_path / "catalog.xlsx", "product_id,title\n"))


def test_non_utf8_csv_rows_are_reported_and_the_rest_land(tmp_path: Path) -> None:
    text = "product_id,title\nX1,Caf\u00e9\nX2,Tea\n"
    result = read_catalog(write(tmp_path / "latin.csv", text, encoding="latin-1"))
    assert [p.product_id for p in result.items] == ["X2"]
    assert where(result) == [(2, "title")] and "not UTF-8" in str(result.errors[0])


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    text = (
        "product_id,title,description\n"  # 1
        'X1,T,"two\nlines"\n'  # 2-3
        "\n"  # 4 blank, skipped
        ",,\n"  # 5 empty cells, skipped
        "X2,,d\n"  # 6 missing title
        "X3,T,d,surplus\n"  # 7 too many values
        "X4,T,d,,\n"  # 8 empty surplus cells are fine
        "X5,T\n"  # 9 short row: the rest is blank
    )
    result = read_catalog(write(tmp_path / "c.csv", text))
    assert [p.product_id for p in result.items] == ["X1", "X4", "X5"]
    assert result.items[0].description == "two\nlines"
    assert where(result) == [(6, "title"), (7, None)]


# --- catalog: JSONL ---------------------------------------------------------------------------


def test_jsonl_typed_values(tmp_path: Path) -> None:
    rows = [
        {
            "product_id": "J1",
            "title": "Kettle",
            "price": 12,
            "in_stock": False,
            "image": "pics/j1.png",
            "watts": 1500,
            "cordless": True,
            "tags": ["a", "b"],
            "dims": {"h": 20},
            "note": None,
            "empty": "",
        },
        {"product_id": 42, "title": "Numbered", "price": 0.5, "in_stock": 1},
    ]
    path = write(tmp_path / "p.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    result = read_catalog(path)
    assert result.errors == []
    kettle, numbered = result.items
    assert (kettle.price, kettle.in_stock) == (12.0, False)
    assert isinstance(kettle.price, float)
    assert kettle.image == (tmp_path / "pics" / "j1.png").resolve()
    assert kettle.attributes == {
        "watts": "1500",
        "cordless": "true",
        "tags": '["a", "b"]',
        "dims": '{"h": 20}',
    }
    assert (numbered.product_id, numbered.price, numbered.in_stock) == ("42", 0.5, True)


def test_jsonl_bad_lines_are_reported(tmp_path: Path) -> None:
    lines = [
        '{"product_id": "J1", "title": "ok"}',  # 1
        "",  # 2 blank, skipped
        '{"product_id": "J2", "title": ',  # 3 invalid JSON
        '["not", "an", "object"]',  # 4
        '{"product_id": "J3", "title": "t", "price": "12x"}',  # 5
        '{"product_id": "J4", "title": "t", "price": NaN}',  # 6
        '{"product_id": "J5", "title": true}',  # 7 title is not text
        '{"product_id": "J6", "title": "t", "in_stock": "maybe"}',  # 8
        '{"product_id": "J1", "title": "again"}',  # 9 duplicate
        "   ",  # 10 blank
        '{"title": "no id"}',  # 11
    ]
    path = write(tmp_path / "p.ndjson", "\n".join(lines) + "\n")
    result = read_catalog(path)
    assert [p.product_id for p in result.items] == ["J1", "J3", "J4", "J6"]
    assert where(result) == [(3, None), (4, None), (7, "title"), (9, "product_id"),
                             (11, "product_id")]
    assert warned(result) == [(5, "price"), (6, "price"), (8, "in_stock")]
    invalid = result.errors[0]
    assert invalid.value == '{"product_id": "J2", "title":'
    assert str(invalid).startswith("p.ndjson line 3: ")
    assert "not valid JSON" in invalid.reason


def test_jsonl_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"product_id": "J1", "title": "a"}\r\n{"product_id": "J2"}\r\n')
    result = read_catalog(path)
    assert [p.product_id for p in result.items] == ["J1"]
    assert where(result) == [(2, "title")]


# --- fixtures shipped with the repository ------------------------------------------------------


def test_fixture_bad_catalog_known_errors() -> None:
    result = read_catalog(FIXTURES / "bad_catalog.csv")
    assert [p.product_id for p in result.items] == ["B001", "B002", "B004", "B005", "B006"]
    assert where(result) == [(3, "product_id"), (5, "title"), (8, "product_id")]
    assert warned(result) == [(6, "price")]  # B004 is kept, without its price
    assert result.items[0].title.startswith("Pacer Labs")  # the first B001 won
    b005 = result.items[3]
    assert b005.image == (FIXTURES / "images" / "missing.png").resolve()
    with pytest.raises(ImageError, match="not found"):
        load_image(b005.image)


def test_fixture_catalog_and_events_read_cleanly() -> None:
    catalog = read_catalog(FIXTURES / "catalog.csv")
    assert (len(catalog.items), catalog.errors) == (300, [])
    events = read_events(FIXTURES / "events.csv")
    assert (len(events.items), events.errors) == (698, [])
    assert {event.event for event in events.items} == {"view", "add_to_cart", "purchase"}
    new = read_catalog(FIXTURES / "new_products.jsonl")
    assert [p.product_id for p in new.items] == ["N001", "N002", "N003"]
    assert all(isinstance(p.price, float) and p.in_stock is True for p in new.items)


# --- events -----------------------------------------------------------------------------------


def epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_events_timestamps_and_default_event(tmp_path: Path) -> None:
    text = (
        "user_id,product_id,timestamp,event\n"
        "U1,P1,2024-01-03T08:47:55Z,purchase\n"  # 2
        "U1,P2,2024-01-03T10:47:55+02:00, View \n"  # 3
        "U1,P3,2024-01-03 08:47:55,\n"  # 4 naive = UTC; empty event = purchase
        "U2,P1,2024-01-03,add_to_cart\n"  # 5 date only
        "U2,P2,17,view\n"  # 6 ordinal
        "U2,P3,1704271675.5,view\n"  # 7 epoch seconds
        "U3,P1,yesterday,view\n"  # 8 bad
        "U3,P1,,view\n"  # 9 missing
        ",P1,5,view\n"  # 10 missing user
        "U3,,5,view\n"  # 11 missing product
        "U3,P1,inf,view\n"  # 12 not finite
    )
    result = read_events(write(tmp_path / "events.csv", text))
    stamp = epoch(2024, 1, 3, 8, 47, 55)
    assert result.items == [
        Event("U1", "P1", stamp, "purchase"),
        Event("U1", "P2", stamp, "view"),
        Event("U1", "P3", stamp, "purchase"),
        Event("U2", "P1", epoch(2024, 1, 3), "add_to_cart"),
        Event("U2", "P2", 17.0, "view"),
        Event("U2", "P3", 1704271675.5, "view"),
    ]
    assert where(result) == [
        (8, "timestamp"),
        (9, "timestamp"),
        (10, "user_id"),
        (11, "product_id"),
        (12, "timestamp"),
    ]
    assert str(result.errors[0]) == (
        "events.csv line 8, field 'timestamp': 'yesterday' is neither a number nor an "
        "ISO-8601 date/datetime (product P1)"
    )


def test_events_without_event_column(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user_id,product_id,timestamp\nU1,P9,3\n")
    assert read_events(path).items == [Event("U1", "P9", 3.0, "purchase")]


def test_events_missing_timestamp_column_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"e\.csv.*'timestamp'"):
        read_events(write(tmp_path / "e.csv", "user_id,product_id\nU1,P1\n"))


def test_events_jsonl(tmp_path: Path) -> None:
    lines = [
        {"user_id": "U1", "product_id": "P1", "timestamp": 5},
        {"user_id": 7, "product_id": "P2", "timestamp": "2024-01-03T08:47:55Z", "event": "VIEW"},
        {"user_id": "U1", "product_id": "P3", "timestamp": True},
    ]
    path = write(tmp_path / "e.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    result = read_events(path)
    assert result.items == [
        Event("U1", "P1", 5.0, "purchase"),
        Event("7", "P2", epoch(2024, 1, 3, 8, 47, 55), "view"),
    ]
    assert where(result) == [(3, "timestamp")]


# --- images -----------------------------------------------------------------------------------


def noisy_png(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A PNG that does not compress away (so cutting its bytes cuts pixel data)."""
    data = hashlib.sha256(b"seed").digest() * (size[0] * size[1] * 3 // 32 + 1)
    Image.frombytes("RGB", size, data[: size[0] * size[1] * 3]).save(path, format="PNG")
    return path


def test_load_image_returns_loaded_rgb(tmp_path: Path) -> None:
    image = load_image(png(tmp_path / "a.png", (5, 3), mode="L", color=77))
    assert (image.mode, image.size) == ("RGB", (5, 3))
    assert image.getpixel((0, 0)) == (77, 77, 77)


def test_load_image_composites_transparency_on_white(tmp_path: Path) -> None:
    path = png(tmp_path / "t.png", (4, 4), mode="RGBA", color=(0, 0, 0, 0))
    assert load_image(path).getpixel((1, 1)) == (255, 255, 255)


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree turn
    path = tmp_path / "r.jpg"
    Image.new("RGB", (30, 10), (0, 0, 255)).save(path, format="JPEG", exif=exif)
    assert load_image(path).size == (10, 30)


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found") as caught:
        load_image(tmp_path / "nope.png")
    assert caught.value.path == tmp_path / "nope.png"


def test_load_image_text_file_named_png(tmp_path: Path) -> None:
    path = write(tmp_path / "fake.png", "this is not an image\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_load_image_truncated_png(tmp_path: Path) -> None:
    whole = noisy_png(tmp_path / "whole.png").read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match="half.png"):
        load_image(path)


def test_load_image_too_many_pixels(tmp_path: Path) -> None:
    path = png(tmp_path / "big.png", (20, 20))
    with pytest.raises(ImageError, match="20x20 is more than 100 pixels"):
        load_image(path, max_pixels=100)
    assert load_image(path, max_pixels=400).size == (20, 20)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize(
    ("side", "max_pixels"),
    [
        (7_000, 40_000_000),  # over our limit only: rejected from the header alone
        (10_000, 10**9),  # over Pillow's warning limit: the warning is turned into an error
        (20_000, 10**9),  # over Pillow's error limit
    ],
)
def test_load_image_decompression_bomb(tmp_path: Path, side: int, max_pixels: int) -> None:
    path = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageError, match="pixels"):
        load_image(path, max_pixels=max_pixels)


def test_load_image_rejects_bad_max_pixels(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_image(png(tmp_path / "a.png"), max_pixels=0)


def test_image_error_pickles(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(ImageError(tmp_path / "x.png", "file not found")))
    assert (error.path, error.reason) == (tmp_path / "x.png", "file not found")
    assert str(error) == f"{tmp_path / 'x.png'}: file not found"


def test_image_digest(tmp_path: Path) -> None:
    path = noisy_png(tmp_path / "a.png")
    assert image_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ImageError, match="not found"):
        image_digest(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        image_digest(tmp_path)  # a folder


# --- property ---------------------------------------------------------------------------------

# Printable text, including whitespace and line breaks that csv.writer must quote.
cell = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n\r"),
    max_size=12,
)
row = st.tuples(st.one_of(cell, st.sampled_from(["P1", "P2", " P1 "])), cell, cell)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row, max_size=12))
def test_catalog_property_keeps_every_usable_row(rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["product_id", "title", "color"])
    starts = []
    for product_id, title, color in rows:
        starts.append(len(re.findall(r"\r\n|\r|\n", buffer.getvalue())) + 1)
        writer.writerow([product_id, title, color])

    expected: dict[str, tuple[str, str]] = {}
    bad_lines = []
    for start, (product_id, title, color) in zip(starts, rows, strict=True):
        if not (product_id.strip() or title.strip() or color.strip()):
            continue  # an all-blank row is skipped silently
        if not product_id.strip() or not title.strip() or product_id.strip() in expected:
            bad_lines.append(start)
        else:
            expected[product_id.strip()] = (title.strip(), color.strip())

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        result = read_catalog(path)

    assert [(p.product_id, p.title) for p in result.items] == [
        (product_id, title) for product_id, (title, _) in expected.items()
    ]
    assert [p.attributes.get("color", "") for p in result.items] == [
        color for _, color in expected.values()
    ]
    assert list(dict.fromkeys(error.line for error in result.errors)) == bad_lines
    assert all(isinstance(error, RowError) for error in result.errors)
