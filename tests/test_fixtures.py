"""The committed fixture set in ``fixtures/`` matches its documented, known structure."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCRIPT = FIXTURES / "make_fixtures.py"
COLUMNS = [
    "product_id", "title", "description", "category", "brand",
    "price", "in_stock", "image", "color", "material",
]


def _load_script() -> ModuleType:
    name = "semrec_fixtures_make_fixtures"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


make_fixtures = _load_script()
CATEGORIES: list[str] = make_fixtures.CATEGORIES


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def catalog() -> list[dict[str, str]]:
    header, rows = _read_csv(FIXTURES / "catalog.csv")
    assert header == COLUMNS
    return rows


@pytest.fixture(scope="module")
def events() -> list[dict[str, str]]:
    header, rows = _read_csv(FIXTURES / "events.csv")
    assert header == ["user_id", "product_id", "timestamp", "event"]
    return rows


def _parse_ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


def _check_image(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (64, 64)
        assert image.mode == "RGB"


def test_catalog_shape(catalog: list[dict[str, str]]) -> None:
    assert len(catalog) == 300
    assert [r["product_id"] for r in catalog] == [f"P{k:04d}" for k in range(1, 301)]
    assert Counter(r["category"] for r in catalog) == {c: 50 for c in CATEGORIES}
    # Interleaved: the first 50 ids are not all one category.
    assert len({r["category"] for r in catalog[:50]}) == 6


def test_catalog_values(catalog: list[dict[str, str]]) -> None:
    brands: dict[str, set[str]] = defaultdict(set)
    for row in catalog:
        assert row["title"].strip() and row["description"].strip()
        price = float(row["price"])
        assert price > 0 and row["price"] == f"{price:.2f}"
        assert row["in_stock"] in ("true", "false")
        assert row["image"] == f"images/{row['product_id']}.png"
        assert row["color"] and row["material"]
        brands[row["category"]].add(row["brand"])
    assert all(3 <= len(b) <= 4 for b in brands.values())
    assert len({r["title"] for r in catalog}) >= 290
    n_out = sum(r["in_stock"] == "false" for r in catalog)
    assert 10 <= n_out <= 60


def test_catalog_images(catalog: list[dict[str, str]]) -> None:
    for row in catalog:
        _check_image(FIXTURES / row["image"])


def test_events_refer_to_catalog(
    catalog: list[dict[str, str]], events: list[dict[str, str]]
) -> None:
    ids = {r["product_id"] for r in catalog}
    assert events
    for e in events:
        assert e["product_id"] in ids
        assert e["event"] in ("view", "add_to_cart", "purchase")


def test_events_users(events: list[dict[str, str]]) -> None:
    users = {e["user_id"] for e in events}
    assert users == {f"U{i:03d}" for i in range(1, 101)}
    assert not users & {f"U{i:03d}" for i in range(101, 121)}


def test_events_timestamps(events: list[dict[str, str]]) -> None:
    stamps = [_parse_ts(e["timestamp"]) for e in events]
    assert stamps == sorted(stamps)
    assert all(ts.year == 2024 for ts in stamps)
    last: dict[str, datetime] = {}
    for e, ts in zip(events, stamps, strict=True):
        if e["user_id"] in last:
            assert ts > last[e["user_id"]], e
        last[e["user_id"]] = ts


def test_events_home_category(
    catalog: list[dict[str, str]], events: list[dict[str, str]]
) -> None:
    category = {r["product_id"]: r["category"] for r in catalog}
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append(e)
    n_home_total = 0
    for user, history in by_user.items():
        home = CATEGORIES[int(user[1:]) % len(CATEGORIES)]
        assert 4 <= len(history) <= 10, user
        assert sum(e["event"] == "purchase" for e in history) >= 2, user
        n_home = sum(category[e["product_id"]] == home for e in history)
        assert n_home * 2 > len(history), user
        n_home_total += n_home
    assert 0.85 <= n_home_total / len(events) <= 0.97


def test_new_products(catalog: list[dict[str, str]]) -> None:
    lines = (FIXTURES / "new_products.jsonl").read_text(encoding="utf-8").splitlines()
    products = [json.loads(line) for line in lines]
    assert [p["product_id"] for p in products] == ["N001", "N002", "N003"]
    catalog_ids = {r["product_id"] for r in catalog}
    for p in products:
        assert list(p) == COLUMNS
        assert p["product_id"] not in catalog_ids
        assert p["category"] in CATEGORIES
        assert isinstance(p["price"], float) and p["price"] > 0
        assert isinstance(p["in_stock"], bool)
        assert p["title"] and p["description"]
        assert p["image"] == f"images/{p['product_id']}.png"
        _check_image(FIXTURES / p["image"])


def test_bad_catalog() -> None:
    header, rows = _read_csv(FIXTURES / "bad_catalog.csv")
    assert header == COLUMNS
    assert len(rows) == 8
    # rows[k] is file line k + 2
    assert [r["product_id"] for r in rows] == [
        "B001", "", "B002", "B003", "B004", "B005", "B001", "B006",
    ]
    assert rows[3]["title"] == ""
    assert rows[4]["price"] == "abc"
    assert rows[5]["image"] == "images/missing.png"
    assert not (FIXTURES / "images" / "missing.png").exists()
    for k in (0, 1, 2, 5, 6, 7):
        assert rows[k]["title"]
    for k, row in enumerate(rows):
        assert row["category"] in CATEGORIES
        if k != 4:
            assert float(row["price"]) > 0
        if k != 5:
            _check_image(FIXTURES / row["image"])


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".csv", ".jsonl", ".md", ".png")
    }


def test_regeneration_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True)
    a, b = _files(first), _files(second)
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []

    # The committed files are what the script writes (PNGs compared by pixels, so that a
    # different zlib build cannot fail this).
    committed = _files(FIXTURES)
    assert committed.keys() == a.keys()
    for name, data in a.items():
        if name.endswith(".png"):
            with Image.open(FIXTURES / name) as old, Image.open(first / name) as new:
                assert old.tobytes() == new.tobytes(), name
        else:
            assert committed[name] == data, name
