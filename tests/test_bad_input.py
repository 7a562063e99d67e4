"""Bad input, case by case (the list in docs/reliability.md): each gets a message naming the
file and line (or field), the good rows still land, and a failed ingest changes nothing
already stored. Plus property tests: any bytes at all, as a catalog or an events file,
give either one file-level ``ValueError`` or rows and row errors that account for every
data line."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from ingest import ImageError, read_catalog, read_events
from ingest.images import image_source, inside_roots
from semrec.cli import app
from tests.conftest import write_config

GOOD = "G1,Good lamp\n"


def catalog(tmp_path: Path, body: bytes | str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    data = body.encode() if isinstance(body, str) else body
    path.write_bytes(data)
    return path


def lines(result) -> list[int]:  # noqa: ANN001 - a ReadResult
    return [e.line for e in result.errors]


# -- catalogs ----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "message"), [
    ("", "empty file"),
    ("product_id,description\nX,d\n", "'title' is missing"),
    (b"product_id,t\xe9tle\nX,t\n", "header (line 1) is not UTF-8"),
])
def test_unusable_files_are_one_clear_error(tmp_path: Path, body: str | bytes,
                                            message: str) -> None:
    with pytest.raises(ValueError, match=rf"c\.csv.*{re.escape(message)}"):
        read_catalog(catalog(tmp_path, body))


def test_header_only_is_an_empty_catalog(tmp_path: Path) -> None:
    result = read_catalog(catalog(tmp_path, "product_id,title\n"))
    assert result.items == [] and result.errors == []


@pytest.mark.parametrize(("row", "field", "reason"), [
    (b"X1,Caf\xe9\n", "title", "not UTF-8"),
    (b'X1,"unterminated\n', None, "malformed CSV row"),
    (b'X1,"a"b\n', None, "malformed CSV row"),
    (b"X1," + b"x" * 200_000 + b"\n", None, "field larger than field limit"),
    (b"X1," + b"y" * (2 << 20) + b"\n", None, "longer than"),
    (b"X1," + b"t" * 1001 + b"\n", "title", "longer than 1000 characters"),
    (b"G1,Duplicate\n", "product_id", "duplicates the product on line 2"),
])
def test_bad_row_is_named_and_good_rows_land(tmp_path: Path, row: bytes, field: str | None,
                                            reason: str) -> None:
    header = b"\xef\xbb\xbfproduct_id,title,price,in_stock,image\n"  # with a UTF-8 BOM
    path = catalog(tmp_path, header + GOOD.encode() + b"\n" + row + b"G2,Also good\n")
    result = read_catalog(path)
    assert [p.product_id for p in result.items] == ["G1", "G2"]
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.line == 4 and error.field == field and reason in str(error)
    assert str(error).startswith("c.csv line 4")


@pytest.mark.parametrize(("row", "field", "reason"), [
    (b"X1,t,NaN\n", "price", "not a finite number"),
    (b"X1,t,-1\n", "price", "negative"),
    (b"X1,t,ten\n", "price", "not a number"),
    (b"X1,t,1,perhaps\n", "in_stock", "not a boolean"),
    (b"X1,t,1,yes,../../etc/passwd\n", "image", "outside the allowed image folders"),
    (b"X1,t,1,yes,/etc/passwd\n", "image", "outside the allowed image folders"),
    (b"X1,t,1,yes,https://example.com/a.png\n", "image", "is a URL"),
])
def test_bad_optional_field_costs_the_field_and_is_named(tmp_path: Path, row: bytes,
                                                         field: str, reason: str) -> None:
    """The product lands without the field; the warning names line, field, value and ID.
    ``strict`` rejects the row instead, with the same message."""
    header = b"product_id,title,price,in_stock,image\n"
    path = catalog(tmp_path, header + GOOD.encode() + b"\n" + row + b"G2,Also good\n")
    result = read_catalog(path)
    assert [p.product_id for p in result.items] == ["G1", "X1", "G2"]
    assert result.errors == [] and len(result.warnings) == 1, result.warnings
    warning = result.warnings[0]
    assert warning.line == 4 and warning.field == field and reason in str(warning)
    assert str(warning).startswith("c.csv line 4") and str(warning).endswith("(product X1)")
    assert getattr(result.items[1], field) is None
    strict = read_catalog(path, strict=True)
    assert [p.product_id for p in strict.items] == ["G1", "G2"]
    assert [str(e) for e in strict.errors] == [str(warning)]


def test_symlink_out_of_the_catalog_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "a.png")
    folder = tmp_path / "shop"
    folder.mkdir()
    os.symlink(outside / "a.png", folder / "link.png")
    path = catalog(folder, "product_id,title,image\nX1,t,link.png\n")
    refused = read_catalog(path)
    assert refused.warnings[0].field == "image" and refused.items[0].image is None
    allowed = read_catalog(path, image_roots=[outside])
    assert [p.image for p in allowed.items] == [(outside / "a.png").resolve()]


def test_image_source_checks_the_roots_again_when_reading(tmp_path: Path) -> None:
    """A path that was inside when the catalog was read, then became a symlink out."""
    (tmp_path / "shop").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    target = tmp_path / "shop" / "a.png"
    os.symlink(tmp_path / "secret.png", target)
    source = image_source(roots=[tmp_path / "shop"])
    with pytest.raises(ImageError, match="outside"):
        source.load(target)
    with pytest.raises(ImageError, match="outside"):
        inside_roots("/etc/passwd", [tmp_path])


def test_jsonl_enormous_and_broken_lines(tmp_path: Path) -> None:
    body = (b'{"product_id": "G1", "title": "ok"}\n' + b'{"product_id": "X", "title": "'
            + b"z" * (2 << 20) + b'"}\n' + b"\xff\xfe\n" + b'{"product_id": "G2", "title": "ok"}')
    result = read_catalog(catalog(tmp_path, body, "c.jsonl"))
    assert [p.product_id for p in result.items] == ["G1", "G2"]
    assert lines(result) == [2, 3]


# -- events ------------------------------------------------------------------------------
@pytest.mark.parametrize(("row", "field", "reason"), [
    ("U1,P1,yesterday,view", "timestamp", "neither a number nor an ISO-8601"),
    ("U1,P1,1712345678901,view", "timestamp", "out of range"),
    ("U1,P1,1850-01-01,view", "timestamp", "out of range"),
    ("U1,P1,-5,view", "timestamp", "out of range"),
    ("U1,P1,2024-01-01,teleport", "event", "not a known event type"),
    (",P1,2024-01-01,view", "user_id", "missing value"),
])
def test_bad_events_are_named(tmp_path: Path, row: str, field: str, reason: str) -> None:
    body = f"user_id,product_id,timestamp,event\nNEW_USER,UNKNOWN,2024-01-01,view\n{row}\n"
    result = read_events(catalog(tmp_path, body, "e.csv"),
                         event_types={"view", "purchase", "add_to_cart"})
    assert [(e.user_id, e.product_id) for e in result.items] == [("NEW_USER", "UNKNOWN")]
    [error] = result.errors
    assert (error.line, error.field) == (3, field) and reason in str(error)


# -- the CLI: nothing already stored is lost ---------------------------------------------
def test_a_broken_file_changes_nothing_stored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, {"enabled": False})
    good = catalog(tmp_path, "product_id,title,price\nG1,Lamp,3\nG2,Desk,40\n")
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(home), "ingest", str(good)]).exit_code == 0
    bad = catalog(tmp_path, b"product_id,title,price\nG1,Lamp \xff,x\n\"G2\nG3,Chair,-1\n",
                  "bad.csv")
    result = runner.invoke(app, ["--home", str(home), "ingest", str(bad), "--json"])
    assert result.exit_code == 0
    assert "bad.csv line 2" in result.stderr and "bad.csv line 4" in result.stderr
    similar = runner.invoke(app, ["--home", str(home), "similar", "G1", "--json"])
    assert '"product_id": "G2"' in similar.stdout and '"price": 40.0' in similar.stdout


# -- properties --------------------------------------------------------------------------
text_bytes = st.lists(st.one_of(
    st.sampled_from([b"product_id,title,price\n", b"user_id,product_id,timestamp\n", b",",
                     b'"', b"\n", b"\r\n", b"\xff", b"\xef\xbb\xbf", b"P1", b"NaN", b"-1",
                     b"2024-01-01", b"{", b"}", b'{"product_id": "P1", "title": "t"}']),
    st.binary(max_size=20)), max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=text_bytes, suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_bytes_give_rows_and_row_errors_or_one_file_error(data: bytes,
                                                              suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for reader in (read_catalog, read_events):
            path = Path(folder) / f"f{suffix}"
            path.write_bytes(data)
            try:
                result = reader(path)
            except ValueError as exc:
                assert path.name in str(exc)
                continue
            # CSV counts a lone CR as a line break too (universal newlines), JSONL only LF.
            physical = len(re.split(rb"\r\n|\r|\n", data))
            assert all(1 <= e.line <= physical for e in result.errors)
            assert all(str(e).startswith(f"{path.name} line ") for e in result.errors)
            if reader is read_catalog:
                ids = [p.product_id for p in result.items]
                assert len(ids) == len(set(ids))  # duplicates never land twice
