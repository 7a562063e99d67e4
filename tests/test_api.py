"""The HTTP API through FastAPI's test client, on a real home: the fixture catalog indexed
with the bundled MiniLM into Qdrant Edge, the fixture events in SQLite. User U<i> shops
mostly in category i % 6 (see fixtures/README.md)."""

from __future__ import annotations

import asyncio
import csv
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ingest import image_source, read_catalog, read_events
from semrec.config import load_settings
from semrec.home import HomeBusy
from semrec.index import ingest as index_ingest
from semrec.index import write_all
from semrec.serving.api import ApiService, Scheduler
from semrec.towers import ItemTower, ItemTowerConfig, ModelRegistry
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, api_client, write_config

with open(FIXTURES / "catalog.csv", newline="", encoding="utf-8") as _f:
    CATALOG = {row["product_id"]: row for row in csv.DictReader(_f)}
with open(FIXTURES / "events.csv", newline="", encoding="utf-8") as _f:
    EVENTS = list(csv.DictReader(_f))
OUT_OF_STOCK = {pid for pid, row in CATALOG.items() if row["in_stock"] == "false"}


def bought(user: str) -> set[str]:
    return {e["product_id"] for e in EVENTS if e["user_id"] == user and e["event"] == "purchase"}


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("api-home")
    write_config(home)
    with Workspace(load_settings(home=home), role="test") as ws:
        index_ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
        ws.events.add(read_events(FIXTURES / "events.csv").items)
    return home


def _client(home: Path) -> Iterator[TestClient]:
    yield from api_client(home)


@pytest.fixture(scope="module")
def api(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Read-only tests share one server on a copy of the home."""
    home = Path(shutil.copytree(built_home, tmp_path_factory.mktemp("ro") / "home"))
    yield from _client(home)


@pytest.fixture
def writable(built_home: Path, tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(Path(shutil.copytree(built_home, tmp_path / "home")))


def ids(response) -> list[str]:  # noqa: ANN001 - an httpx response
    assert response.status_code == 200, response.text
    return [i["product_id"] for i in response.json()["items"]]


# -- queries -----------------------------------------------------------------------------
def test_similar_filters_hold(api: TestClient) -> None:
    params = {"k": 8, "category": "laptops", "min_price": 100, "max_price": 900,
              "in_stock": "true"}
    response = api.get("/items/P0001/similar", params=params)
    items = response.json()["items"]
    assert ids(response) and len(items) <= 8
    for item in items:
        assert item["category"] == "laptops" and 100 <= item["price"] <= 900
        assert item["in_stock"] is True and item["product_id"] not in OUT_OF_STOCK
        assert {"score", "title", "brand", "description", "source"} <= item.keys()
    out = ids(api.get("/items/P0001/similar", params={"k": 10, "in_stock": "false"}))
    assert out and set(out) <= OUT_OF_STOCK


def test_similar_exclude_holds(api: TestClient) -> None:
    top = ids(api.get("/items/P0001/similar", params={"k": 5}))
    assert "P0001" not in top and {CATALOG[p]["category"] for p in top} == {"running shoes"}
    rest = ids(api.get("/items/P0001/similar",
                       params=[("k", "5"), ("exclude", f"{top[0]},{top[1]}"),
                               ("exclude", top[2])]))
    assert not set(rest) & set(top[:3]) and rest[:2] == top[3:]


def test_feed_leaves_out_bought_and_explains_each_item(api: TestClient) -> None:
    body = api.get("/users/U001/feed", params={"k": 10}).json()
    assert body["personalised"] and body["history_size"] > 0
    history = {e["product_id"] for e in EVENTS if e["user_id"] == "U001"}
    for item in body["items"]:
        assert item["product_id"] not in bought("U001")
        assert item["because"] in history
    home = Counter(i["category"] for i in body["items"]).most_common(1)[0][0]
    assert home == "coffee makers"  # U001: 1 % 6


def test_feed_filters_and_exclude_hold(api: TestClient) -> None:
    first = ids(api.get("/users/U002/feed", params={"k": 3}))
    response = api.get("/users/U002/feed", params={"k": 6, "max_price": 1000, "in_stock": True,
                                                   "exclude": ",".join(first)})
    assert not set(ids(response)) & set(first)
    for item in response.json()["items"]:
        assert item["price"] <= 1000 and item["product_id"] not in OUT_OF_STOCK


def test_mmr_changes_the_list_and_keeps_relevance(api: TestClient) -> None:
    plain = api.get("/users/U003/feed", params={"k": 10}).json()["items"]
    mixed = api.get("/users/U003/feed", params={"k": 10, "diversity": 0.3}).json()["items"]
    pool = ids(api.get("/users/U003/feed", params={"k": 50}))
    assert [i["product_id"] for i in mixed] != [i["product_id"] for i in plain]
    assert mixed[0]["product_id"] == plain[0]["product_id"]  # the best item stays first
    assert {i["product_id"] for i in mixed} <= set(pool)
    mean = sum(i["score"] for i in mixed) / len(mixed)
    assert mean >= 0.8 * sum(i["score"] for i in plain) / len(plain)
    assert Counter(i["category"] for i in mixed)["board games"] >= 6  # U003: 3 % 6
    for pid in ("P0004", "P0100"):
        a = ids(api.get(f"/items/{pid}/similar", params={"k": 8}))
        b = ids(api.get(f"/items/{pid}/similar", params={"k": 8, "diversity": 0.3}))
        assert a != b and a[0] == b[0]


def test_new_user_feed_is_popular(api: TestClient) -> None:
    body = api.get("/users/U101/feed", params={"k": 5}).json()
    assert not body["personalised"] and len(body["items"]) == 5
    assert {i["source"] for i in body["items"]} == {"popular"}


# -- ads ---------------------------------------------------------------------------------
def test_ads_stay_inside_the_campaign_in_stock_and_unbought(api: TestClient) -> None:
    campaign = sorted(CATALOG)[:60]
    for user in ("U001", "U002", "U005", "U101"):
        response = api.post(f"/users/{user}/ads", json={"slots": 5, "product_ids": campaign})
        got = ids(response)
        assert len(got) == 5 and len(set(got)) == 5
        assert set(got) <= set(campaign)
        assert not set(got) & OUT_OF_STOCK and not set(got) & bought(user)


def test_category_campaign_and_price_cap(api: TestClient) -> None:
    body = api.post("/users/U004/ads",
                    json={"slots": 4, "category": "laptops", "max_price": 800}).json()
    assert len(body["items"]) == 4 and body["personalised"]
    for item in body["items"]:
        assert item["category"] == "laptops" and item["price"] <= 800
        assert item["product_id"] not in OUT_OF_STOCK


def test_ads_for_a_new_user_are_the_campaigns_most_popular(api: TestClient) -> None:
    campaign = [pid for pid in sorted(CATALOG) if CATALOG[pid]["category"] == "dresses"]
    counts = Counter(e["product_id"] for e in EVENTS if e["product_id"] in campaign)
    got = ids(api.post("/users/U119/ads", json={"slots": 3, "product_ids": campaign}))
    ranked = [pid for pid, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
              if pid not in OUT_OF_STOCK]
    assert got == ranked[:3]


# -- writes ------------------------------------------------------------------------------
def test_new_product_is_returned_right_after_put(writable: TestClient) -> None:
    row = CATALOG["P0003"]  # a new edition of P0003: its nearest neighbour
    product = {"product_id": "N900", "title": row["title"] + " (2025 edition)",
               "description": row["description"], "category": row["category"],
               "brand": row["brand"], "price": 149.0, "in_stock": True,
               "attributes": {"color": row["color"], "material": row["material"]}}
    response = writable.put("/items", json={"items": [product]})
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 1
    assert ids(writable.get("/items/P0003/similar", params={"k": 10}))[0] == "N900"
    similar = ids(writable.get("/items/N900/similar", params={"k": 5}))
    assert {CATALOG[p]["category"] for p in similar} == {"running shoes"}
    again = writable.put("/items", json={"items": [{**product, "price": 99.0}]}).json()
    assert again["updated"] == 1
    item = writable.get("/items/P0003/similar", params={"k": 10}).json()["items"]
    assert {i["product_id"]: i["price"] for i in item}["N900"] == 99.0


def test_deleted_product_never_comes_back(writable: TestClient) -> None:
    victim = ids(writable.get("/users/U006/feed", params={"k": 1}))[0]
    assert writable.delete(f"/items/{victim}").status_code == 200
    assert writable.get(f"/items/{victim}/similar").status_code == 404
    assert writable.delete(f"/items/{victim}").status_code == 404
    for pid in sorted(CATALOG)[::25]:
        if pid != victim:
            assert victim not in ids(writable.get(f"/items/{pid}/similar", params={"k": 50}))
    for user in ("U006", "U012", "U101", "U102"):
        assert victim not in ids(writable.get(f"/users/{user}/feed", params={"k": 50}))
        assert victim not in ids(writable.post(f"/users/{user}/ads",
                                               json={"slots": 20, "category": "running shoes"}))


def test_events_show_in_the_next_feed(writable: TestClient) -> None:
    assert not writable.get("/users/U120/feed").json()["personalised"]
    response = writable.post("/events", json={"events": [
        {"user_id": "U120", "product_id": "P0004", "event": "view"},
        {"user_id": "U120", "product_id": "P0010", "event": "purchase"},
        {"user_id": "U120", "product_id": "ZZZ", "event": "view"},
    ]})
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 3, "duplicates": 0, "unknown_products": ["ZZZ"]}
    body = writable.get("/users/U120/feed", params={"k": 20}).json()
    assert body["personalised"] and body["history_size"] == 2
    assert "P0010" not in ids(writable.get("/users/U120/feed", params={"k": 50}))
    assert {i["because"] for i in body["items"]} <= {"P0004", "P0010"}


def test_a_version_built_beside_the_server_is_served_caught_up(writable: TestClient) -> None:
    """What `semrec train` does while the API serves: another workspace (no owner lock)
    builds a new version in its own store from the feature cache; meanwhile the API adds a
    product and deletes one; then CURRENT flips. The API's next request is answered from
    the new version, with both changes in it, and nothing was re-encoded."""
    service: ApiService = writable.app.state.service
    before = writable.get("/info").json()["served_version"]
    with Workspace(service.ws.settings, role="train", own_index=False) as ws:
        config = ItemTowerConfig(**{**ws.items(before).tower.config.to_dict(), "seed": 99})
        manifest = ws.models.save(ItemTower(config), kind="init",
                                  encoders=ws.manifest(before).encoders)
        assert write_all(ws, manifest.version) == 300
        ws.close_store(manifest.version)
        features = ws.features.count()
    new = {"product_id": "NEW1", "title": "Crimson silk evening gown", "category": "dresses"}
    put = writable.put("/items", json={"items": [new]})
    assert put.status_code == 200 and put.json()["model_version"] == before
    assert writable.delete("/items/P0002").status_code == 200
    ModelRegistry(service.ws.home.models).promote(manifest.version)
    info = writable.get("/info").json()
    assert info["served_version"] == manifest.version != before
    assert info["products"] == 300 and info["features_cached"] == features + 1
    found = ids(writable.get("/items/P0001/similar", params={"k": 1000}))
    assert len(found) == 299 and "NEW1" in found and "P0002" not in found
    with Workspace(service.ws.settings, own_index=False) as ws:
        assert {r.model_version for r in ws.products.all()} == {manifest.version}


# -- errors and service ------------------------------------------------------------------
@pytest.mark.parametrize(("path", "params"), [
    ("/items/P0001/similar", {"k": 0}),
    ("/items/P0001/similar", {"k": "many"}),
    ("/items/P0001/similar", {"diversity": 1.5}),
    ("/items/P0001/similar", {"min_price": 50, "max_price": 10}),
    ("/users/U001/feed", {"in_stock": "perhaps"}),
    ("/users/U001/feed", {"max_price": -1}),
])
def test_bad_parameters_are_422_json(api: TestClient, path: str, params: dict) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and "Traceback" not in response.text


@pytest.mark.parametrize("body", [
    {"slots": 0, "product_ids": ["P0001"]},
    {"slots": 3},
    {"slots": 3, "product_ids": []},
    {"slots": 3, "category": "laptops", "colour": "red"},
])
def test_bad_campaigns_are_422(api: TestClient, body: dict) -> None:
    response = api.post("/users/U001/ads", json=body)
    assert response.status_code == 422 and "detail" in response.json()


def test_bad_items_are_422_with_the_expected_shape(api: TestClient) -> None:
    for items in ([{"product_id": "X", "title": ""}],
                  [{"product_id": "X", "title": "t"}, {"product_id": "X", "title": "u"}]):
        response = api.put("/items", json={"items": items})
        assert response.status_code == 422, items
    assert "duplicates the product on item 0" in response.json()["detail"]
    for body in ([{"product_id": "X", "title": "t"}], {"items": []}, {"items": ["X"]}, "X"):
        response = api.put("/items", json=body)
        assert response.status_code == 422, body
        assert 'or {"items": [product, ...]}' in response.json()["detail"]


def test_put_items_takes_a_catalog_line_and_a_bad_field_costs_the_field(
        writable: TestClient) -> None:
    """One product as a JSONL catalog line holds it: an unknown field is an attribute (in
    the encoded text), a price of "Free to Play" is left out and reported, and the product
    is indexed; so is an image outside the allowed roots, refused, never the product."""
    line = {"product_id": "G1", "title": "Space shooter", "price": "Free to Play",
            "platform": "PC", "image": "/etc/passwd"}
    response = writable.put("/items", json=line)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["added"] == 1
    assert len(body["fields_left_out"]) == 1 and "price" in body["fields_left_out"][0]
    assert "Free to Play" in body["fields_left_out"][0]
    assert [e["product_id"] for e in body["image_errors"]] == ["G1"]
    assert "/etc" not in response.text
    item = writable.get("/items/G1/similar", params={"k": 1}).status_code
    assert item == 200
    stored = writable.app.state.service.ws.products.get("G1")
    assert stored.payload["attributes"] == {"platform": "PC"} and "price" not in stored.payload
    assert stored.image_path is None


def test_unknown_product_is_404_json(api: TestClient) -> None:
    response = api.get("/items/NOPE/similar")
    assert response.status_code == 404 and "NOPE" in response.json()["detail"]
    assert api.delete("/items/NOPE").status_code == 404


def test_empty_catalog_is_404(tmp_path: Path) -> None:
    write_config(tmp_path)
    for client in _client(tmp_path):
        for path in ("/users/U001/feed", "/items/P0001/similar"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "no products indexed" in response.json()["detail"]


def test_health_info_and_openapi(api: TestClient) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    info = api.get("/info").json()
    assert info["products"] == 300 and info["users"] == 100
    assert info["store"] == "edge (embedded)" and info["served_version"]
    schema = api.get("/openapi.json").json()
    assert {"/items/{product_id}/similar", "/users/{user_id}/feed", "/users/{user_id}/ads",
            "/events", "/items", "/items/{product_id}", "/health",
            "/info"} <= schema["paths"].keys()
    assert api.get("/docs").status_code == 200


def test_the_server_owns_the_home(api: TestClient) -> None:
    home = api.app.state.service.ws.settings.home  # /info names no path without the key
    with pytest.raises(HomeBusy, match="serve"):
        Workspace(load_settings(home=home), role="similar")


# -- limits and security -----------------------------------------------------------------
def _guarded(home: Path, **api: object) -> Iterator[TestClient]:
    from semrec.config import ApiSettings

    yield from api_client(home, api_key=SecretStr("k3y"), api=ApiSettings(**api))


def test_key_limits_and_no_paths_in_errors(built_home: Path, tmp_path: Path) -> None:
    home = Path(shutil.copytree(built_home, tmp_path / "home"))
    for client in _guarded(home, read_requires_key=True, max_body_bytes=4096):
        assert client.get("/items/P0001/similar").status_code == 401
        headers = {"X-API-Key": "k3y"}
        assert client.get("/items/P0001/similar", headers=headers).status_code == 200
        bearer = {"Authorization": "Bearer k3y"}
        assert client.get("/users/U001/feed", headers=bearer).status_code == 200
        assert client.get("/health").status_code == 200
        big = {"items": [{"product_id": "X", "title": "t" * 5000}]}
        response = client.put("/items", json=big, headers=headers)
        assert response.status_code == 413 and "larger than 4096" in response.json()["detail"]
        for params in ({"k": -1}, {"k": 10**12}, {"k": "x"}, {"colour": "red", "k": 0}):
            assert client.get("/items/P0001/similar", params=params,
                              headers=headers).status_code == 422
        bad_type = {"events": [{"user_id": "U1", "product_id": "P1", "event": "teleport"}]}
        response = client.post("/events", json=bad_type, headers=headers)
        assert response.status_code == 422 and "events.0.event" in response.json()["detail"]
        shapeless = {"products": [{"product_id": "X", "title": "t"}], "sku": 1}
        assert client.put("/items", json=shapeless, headers=headers).status_code == 422
        response = client.get("/info", headers=headers)
        empty = client.delete("/items/NOPE", headers=headers)
        assert str(home) not in empty.text and "Traceback" not in empty.text


def test_images_over_the_api_only_inside_allowed_roots(built_home: Path, tmp_path: Path) -> None:
    home = Path(shutil.copytree(built_home, tmp_path / "home"))
    (home / "semrec.toml").write_text(
        f'[image]\nallow_download = false\nallowed_roots = ["{FIXTURES / "images"}"]\n')
    for client in _client(home):
        items = [{"product_id": "I1", "title": "t", "image": str(FIXTURES / "images/P0001.png")},
                 {"product_id": "I2", "title": "t", "image": "/etc/passwd"},
                 {"product_id": "I3", "title": "t",
                  "image": str(FIXTURES / "images/../catalog.csv")}]
        response = client.put("/items", json={"items": items})
        assert response.status_code == 200, response.text
        errors = {e["product_id"]: e["reason"] for e in response.json()["image_errors"]}
        assert set(errors) == {"I2", "I3"} and "outside" in errors["I2"]
        assert "/etc" not in response.text and str(FIXTURES) not in response.text


def test_scheduler_runs_jobs_first_come_first_served_with_a_poll_between() -> None:
    """Jobs run in the order they were queued, one at a time: queries on the event loop's
    thread, a write in a worker thread with the jobs behind it waiting for it. What the
    loop has to do meanwhile (here a callback standing for a newly arrived request) runs
    between two jobs, and a job's exception reaches the request that queued it."""
    order: list[str] = []
    loop_thread = threading.get_ident()

    def job(name: str) -> str:
        on_loop = threading.get_ident() == loop_thread
        order.append(name if on_loop else f"{name} (worker)")
        if name == "a":
            asyncio.get_running_loop().call_soon(order.append, "loop")
        if name == "bad":
            raise ValueError("no such product")
        return name.upper()

    async def scenario() -> list[object]:
        scheduler = Scheduler()
        return await asyncio.gather(
            *(scheduler.query(lambda n=n: job(n)) for n in "ab"),
            scheduler.write(lambda: job("w")), scheduler.query(lambda: job("c")),
            scheduler.query(lambda: job("bad")), return_exceptions=True)

    results = asyncio.run(scenario())
    assert order == ["a", "loop", "b", "w (worker)", "c", "bad"]
    assert results[:4] == ["A", "B", "W", "C"]
    assert isinstance(results[4], ValueError) and str(results[4]) == "no such product"
