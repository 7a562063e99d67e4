"""End to end on the fixture catalog, through the real CLI: bundled MiniLM, Qdrant Edge on
a temp dir, SQLite. The fixture has six categories of 50 products; user U<i> shops mostly
in category i % 6 (see fixtures/README.md)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from semrec.cli import app
from tests.conftest import FIXTURES, write_config

runner = CliRunner()


def semrec(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def as_json(home: Path, *args: str) -> list | dict:
    code, stdout, stderr = semrec(home, *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def catalog() -> dict[str, dict[str, str]]:
    with open(FIXTURES / "catalog.csv", newline="", encoding="utf-8") as f:
        return {row["product_id"]: row for row in csv.DictReader(f)}


def bought(user: str) -> set[str]:
    with open(FIXTURES / "events.csv", newline="", encoding="utf-8") as f:
        return {r["product_id"] for r in csv.DictReader(f)
                if r["user_id"] == user and r["event"] == "purchase"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the fixture catalog (text-only: no CLIP weights here) and events."""
    home = tmp_path_factory.mktemp("indexed")
    write_config(home)
    report = as_json(home, "ingest", str(FIXTURES / "catalog.csv"))
    assert report["added"] == 300 and report["text_only"]
    events = as_json(home, "events", str(FIXTURES / "events.csv"))
    assert events["inserted"] == 698 and events["unknown_products"] == 0
    return home


@pytest.fixture
def home_copy(indexed: Path, tmp_path: Path) -> Path:
    """A private copy of the indexed home for tests that write."""
    return Path(shutil.copytree(indexed, tmp_path / "home"))


def test_similar_items_share_the_query_category(indexed: Path) -> None:
    products = catalog()
    for pid in sorted(products)[::15]:
        items = as_json(indexed, "similar", pid, "-k", "5")
        assert len(items) == 5
        assert pid not in {i["product_id"] for i in items}
        assert {i["category"] for i in items} == {products[pid]["category"]}, pid
        assert all({"product_id", "score", "title"} <= i.keys() for i in items)
        scores = [i["score"] for i in items]
        assert scores == sorted(scores, reverse=True)


def test_similar_with_category_filter(indexed: Path) -> None:
    items = as_json(indexed, "similar", "P0001", "-k", "7", "--category", "laptops")
    assert len(items) == 7 and {i["category"] for i in items} == {"laptops"}


def test_feed_leaves_out_bought_items_and_follows_the_home_category(indexed: Path) -> None:
    from fixtures.make_fixtures import CATEGORIES

    for i in range(1, 101, 7):
        user = f"U{i:03d}"
        items = as_json(indexed, "feed", user, "-k", "10")
        ids = {item["product_id"] for item in items}
        assert len(items) == 10 and not ids & bought(user), user
        home_share = sum(item["category"] == CATEGORIES[i % 6] for item in items) / 10
        assert home_share >= 0.8, (user, home_share)


def test_feed_for_user_without_history_is_popular_and_says_so(indexed: Path) -> None:
    code, stdout, stderr = semrec(indexed, "feed", "U120", "-k", "5", "--json")
    assert code == 0 and "no history" in stderr
    items = json.loads(stdout)
    assert len(items) == 5 and {i["source"] for i in items} == {"popular"}
    popularity = [i["score"] for i in items]
    assert popularity == sorted(popularity, reverse=True) and popularity[0] > 0


def test_unknown_product_is_a_clear_error(indexed: Path) -> None:
    code, stdout, stderr = semrec(indexed, "similar", "NO-SUCH-ID")
    assert code == 1 and "unknown product ID 'NO-SUCH-ID'" in stderr and stdout == ""


def test_info_counts(indexed: Path) -> None:
    info = as_json(indexed, "info")
    assert (info["products"], info["users"], info["events"]) == (300, 100, 698)
    assert info["model"]["version"].startswith("init-")


def test_reingest_unchanged_catalog_encodes_nothing(home_copy: Path) -> None:
    before = as_json(home_copy, "info")["features_cached"]
    report = as_json(home_copy, "ingest", str(FIXTURES / "catalog.csv"))
    assert (report["unchanged"], report["added"], report["updated"]) == (300, 0, 0)
    assert report["texts_encoded"] == 0 and report["images_encoded"] == 0
    assert as_json(home_copy, "info")["features_cached"] == before


def test_changed_title_reencodes_that_product_alone(home_copy: Path, tmp_path: Path) -> None:
    rows = list(catalog().values())
    target = next(r for r in rows if r["category"] == "laptops")
    target["title"] = "Stridex cushioned trail running shoe for marathon runners"
    target["description"] = "A running shoe with a grippy outsole for trail running."
    for row in rows:  # same image files, so only the one product changes
        row["image"] = str(FIXTURES / row["image"])
    write_config(home_copy, {"allowed_roots": [str(FIXTURES)]})  # images outside the folder
    changed = tmp_path / "catalog.csv"
    with open(changed, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = as_json(home_copy, "ingest", str(changed))
    assert (report["updated"], report["unchanged"], report["texts_encoded"]) == (1, 299, 1)
    neighbours = as_json(home_copy, "similar", target["product_id"], "-k", "5")
    assert {i["category"] for i in neighbours} == {"running shoes"}


def test_cold_start_product_is_served_at_once(home_copy: Path) -> None:
    report = as_json(home_copy, "ingest", str(FIXTURES / "new_products.jsonl"))
    assert report["added"] == 3
    items = as_json(home_copy, "similar", "N001", "-k", "5")
    assert {i["category"] for i in items} == {"running shoes"}
    # A new user whose first interaction is the new product is served from it at once.
    events = home_copy / "first.jsonl"
    events.write_text(json.dumps({"user_id": "NEWBIE", "product_id": "N002",
                                  "timestamp": "2025-01-01T00:00:00Z", "event": "view"}) + "\n")
    assert as_json(home_copy, "events", str(events))["unknown_products"] == 0
    feed = as_json(home_copy, "feed", "NEWBIE", "-k", "5")
    assert {i["category"] for i in feed} == {"coffee makers"}
    assert {i["source"] for i in feed} == {"history"}
    # And the new laptop shows up among a laptop lover's recommendations.
    laptops = as_json(home_copy, "similar", "N003", "-k", "60", "--category", "laptops")
    assert len(laptops) == 50 and "N003" not in {i["product_id"] for i in laptops}


def test_bad_rows_are_reported_and_good_rows_land(tmp_path: Path) -> None:
    write_config(tmp_path)
    code, stdout, stderr = semrec(tmp_path, "ingest", str(FIXTURES / "bad_catalog.csv"),
                                  "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["rejected"] == 3 and report["added"] == 5 and report["image_errors"] == 1
    assert report["fields_left_out"] == 1
    flat = " ".join(stderr.split())
    for line, field in ((3, "product_id"), (5, "title"), (8, "product_id")):
        assert f"rejected: bad_catalog.csv line {line}, field '{field}'" in flat, (line, flat)
    assert ("field left out: bad_catalog.csv line 6, field 'price': 'abc' is not a number "
            "(product B004)") in flat
    assert "image skipped for B005" in flat
    for pid in ("B001", "B002", "B004", "B005", "B006"):
        assert len(as_json(tmp_path, "similar", pid, "-k", "2")) == 2
    code, _, stderr = semrec(tmp_path, "ingest", str(FIXTURES / "bad_catalog.csv"), "--strict")
    assert code == 1


def test_events_for_unknown_products_are_reported_not_dropped(indexed: Path,
                                                                tmp_path: Path) -> None:
    home = Path(shutil.copytree(indexed, tmp_path / "home"))
    events = tmp_path / "events.csv"
    events.write_text("user_id,product_id,timestamp,event\n"
                      "U001,P0001,2025-01-01T00:00:00Z,view\n"
                      "U001,GHOST,2025-01-02T00:00:00Z,purchase\n")
    code, stdout, stderr = semrec(home, "events", str(events), "--json")
    assert code == 0 and "GHOST" in stderr
    report = json.loads(stdout)
    assert report["inserted"] == 2 and report["unknown_products"] == 1
    # Loading the same file again is a no-op.
    assert as_json(home, "events", str(events))["duplicates"] == 2


def test_second_owner_is_refused_with_a_clear_message(indexed: Path) -> None:
    from semrec.config import load_settings
    from semrec.workspace import Workspace

    with Workspace(load_settings(home=indexed), role="serve"):
        code, _, stderr = semrec(indexed, "similar", "P0001")
    assert code == 1 and "serve" in stderr and "one owner" in " ".join(stderr.split())
    assert semrec(indexed, "similar", "P0001")[0] == 0  # released on close


def test_a_text_only_ingest_still_reports_broken_images(tmp_path: Path) -> None:
    """With no image encoder at all, every image's header and pixel count are still checked,
    so a shop learns of a decompression bomb or a non-image at the first ingest; the
    products are indexed from their text."""
    from tests.test_ingest import png, png_header_only

    shop = tmp_path / "shop"
    png(shop / "ok.png")
    png_header_only(shop / "bomb.png", 20_000, 20_000)
    (shop / "text.png").write_text("not an image", encoding="utf-8")
    (shop / "catalog.csv").write_text(
        "product_id,title,image\nS1,Red lamp,ok.png\nS2,Blue lamp,bomb.png\n"
        "S3,Green lamp,text.png\n", encoding="utf-8")
    home = tmp_path / "home"
    write_config(home, {"enabled": False})
    code, stdout, stderr = semrec(home, "ingest", str(shop / "catalog.csv"), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["added"], report["image_errors"]) == (3, 2)
    flat = " ".join(stderr.split())
    assert "image skipped for S2" in flat and "pixels" in flat
    assert "image skipped for S3" in flat and "not an image" in flat
    assert "S1" not in flat
