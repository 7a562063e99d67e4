"""The storefront's API through FastAPI's test client, on a real home built from a copy of
the fixtures (so their images can be tampered with): semantic search, product images,
history, and that no response names a file on the server."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ingest import image_source, read_catalog, read_events
from semrec.config import ApiSettings, SearchSettings, load_settings
from semrec.index import ingest as index_ingest
from semrec.serving.rerank import pool_size
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, api_client, write_config
from tests.test_api import CATALOG, EVENTS, OUT_OF_STOCK


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a copy of the fixture catalog and images, and a home built from it."""
    root = tmp_path_factory.mktemp("shop")
    shutil.copy(FIXTURES / "catalog.csv", root / "catalog.csv")
    shutil.copytree(FIXTURES / "images", root / "images")
    home = root / "home"
    write_config(home)
    with Workspace(load_settings(home=home), role="test") as ws:
        index_ingest(ws, read_catalog(root / "catalog.csv").items, image_source())
        ws.events.add(read_events(FIXTURES / "events.csv").items)
    report = home / "reports" / "latest"
    report.mkdir(parents=True)
    (report / "report.md").write_text(f"# Evaluation\n\n- data: `{root}/catalog.csv`\n")
    return root


def _client(home: Path, **update: Any) -> Iterator[TestClient]:
    yield from api_client(home, **update)


def _copy(shop: Path, to: Path) -> Path:
    """A copy of the shop (catalog folder, images and home) at ``to``, its products'
    image paths moved along (the content hashes stay valid: the bytes are the same)."""
    shutil.copytree(shop, to)
    home = to / "home"
    with Workspace(load_settings(home=home), role="test") as ws, ws.conn:
        for row in list(ws.products.all()):
            moved = row.payload["image"].replace(str(shop), str(to))
            payload = {**row.payload, "image": moved}
            ws.conn.execute("UPDATE products SET image_path = ?, payload = ?, content_hash = ? "
                            "WHERE product_id = ?", (moved, json.dumps(payload),
                                                     _rehash(payload, Path(moved)),
                                                     row.product_id))
    return to


def _rehash(payload: dict, image: Path) -> str:
    import hashlib

    from semrec.index import product_hash

    return product_hash(payload, hashlib.sha256(image.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def api(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Read-only tests share one server on a copy of the shop."""
    yield from _client(_copy(shop, tmp_path_factory.mktemp("ro") / "shop") / "home")


@pytest.fixture
def copy(shop: Path, tmp_path: Path) -> Path:
    """A writable copy of the shop, for one test."""
    return _copy(shop, tmp_path / "shop")


def ids(response) -> list[str]:  # noqa: ANN001 - an httpx response
    assert response.status_code == 200, response.text
    return [i["product_id"] for i in response.json()["items"]]


# -- semantic search ---------------------------------------------------------------------
def test_search_finds_products_from_a_sentence(api: TestClient) -> None:
    for query, category in (("an espresso machine for my kitchen", "coffee makers"),
                            ("a shoe for marathon training", "running shoes"),
                            ("a summer dress for a wedding", "dresses")):
        response = api.get("/search", params={"q": query, "k": 5})
        assert len(ids(response)) == 5
        assert {i["category"] for i in response.json()["items"]} == {category}, query
    title = CATALOG["P0003"]["title"]
    assert ids(api.get("/search", params={"q": title, "k": 3}))[0] == "P0003"


def test_search_takes_every_filter_and_diversity(api: TestClient) -> None:
    params = {"q": "a laptop for travel", "k": 6, "category": "laptops", "min_price": 300,
              "max_price": 1500, "in_stock": "true"}
    items = api.get("/search", params=params).json()["items"]
    assert 0 < len(items) <= 6
    for item in items:
        assert item["category"] == "laptops" and 300 <= item["price"] <= 1500
        assert item["product_id"] not in OUT_OF_STOCK and item["source"] == "search"
    first = ids(api.get("/search", params={"q": "a laptop", "k": 3}))
    rest = ids(api.get("/search", params={"q": "a laptop", "k": 3, "exclude": first}))
    assert not set(first) & set(rest)
    plain = ids(api.get("/search", params={"q": "garden", "k": 10}))
    mixed = ids(api.get("/search", params={"q": "garden", "k": 10, "diversity": 0.6}))
    assert plain != mixed and plain[0] == mixed[0]


def test_personalised_search_reorders_the_querys_matches(copy: Path) -> None:
    """U001 shops coffee makers: a vague query leans to them for U001, and every
    personalised result is among the query's own best matches (the re-rank pool)."""
    home = copy / "home"
    for client in _client(home, search=SearchSettings(user_weight=1.0)):
        q = {"q": "a classic deluxe gift", "k": 10}
        anonymous = client.get("/search", params=q).json()
        mine = client.get("/search", params={**q, "user_id": "U001"}).json()
        assert not anonymous["personalised"] and mine["personalised"]
        share = [sum(i["category"] == "coffee makers" for i in r["items"])
                 for r in (anonymous, mine)]
        assert share[1] > share[0] and share[1] >= 6
        pool = ids(client.get("/search", params={**q, "k": pool_size(10, 1.0)}))
        assert {i["product_id"] for i in mine["items"]} <= set(pool)
        new_user = client.get("/search", params={**q, "user_id": "U101"}).json()
        assert not new_user["personalised"]
        assert [i["product_id"] for i in new_user["items"]] == ids(client.get("/search",
                                                                              params=q))


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}, {"q": "x" * 501},
                                    {"q": "shoe", "k": 0}, {"q": "shoe", "diversity": 2}])
def test_bad_queries_are_a_clear_422(api: TestClient, params: dict) -> None:
    response = api.get("/search", params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    if params.get("q", "").strip() == "" and "k" not in params:
        assert detail.split(":")[0].endswith("q")  # names the parameter


# -- images ------------------------------------------------------------------------------
def test_image_is_the_products_file_with_cache_headers(api: TestClient) -> None:
    response = api.get("/items/P0007/image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (FIXTURES / "images" / "P0007.png").read_bytes()
    etag = response.headers["etag"]
    assert etag.startswith('"') and "max-age" in response.headers["cache-control"]
    again = api.get("/items/P0007/image", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = api.get("/items/P0008/image", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


@pytest.mark.parametrize("pid", ["NOPE", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e",
                                 "P0001%00", "P0001%2F..%2F..%2Fcatalog.csv"])
def test_image_of_an_unknown_or_crafted_id_is_404(api: TestClient, pid: str) -> None:
    response = api.get(f"/items/{pid}/image")
    assert response.status_code == 404
    assert "root:" not in response.text and "product_id" not in response.text


def test_image_refuses_anything_but_the_indexed_bytes(copy: Path) -> None:
    images = copy / "images"
    (images / "P0010.png").write_bytes((images / "P0011.png").read_bytes())  # replaced
    (images / "P0012.png").unlink()
    (images / "P0012.png").symlink_to(images / "P0012.png.gone")
    (images / "P0013.png").unlink()
    (images / "P0013.png").symlink_to(images / "P0014.png")  # a symlink to another image
    home = copy / "home"
    with Workspace(load_settings(home=home), role="test") as ws, ws.conn:
        for pid, image in (("P0020", "/etc/passwd"), ("P0021", str(images / "P0022.png"))):
            row = ws.products.get(pid)
            ws.conn.execute("UPDATE products SET image_path = ?, payload = ? WHERE "
                            "product_id = ?",
                            (image, json.dumps({**row.payload, "image": image}), pid))
        row = ws.products.get("P0023")  # the payload and the image column disagree
        ws.conn.execute("UPDATE products SET image_path = ? WHERE product_id = 'P0023'",
                        (str(images / "P0024.png"),))
    for client in _client(home):
        for pid in ("P0010", "P0012", "P0013", "P0020", "P0021", "P0023"):
            response = client.get(f"/items/{pid}/image")
            assert response.status_code == 404, pid
            assert str(copy) not in response.text and "root:" not in response.text
        assert "indexed from" in client.get("/items/P0010/image").json()["detail"]
        assert client.get("/items/P0015/image").status_code == 200
        client.put("/items", json={"items": [{"product_id": "X1", "title": "plain tote"}]})
        response = client.get("/items/X1/image")
        assert response.status_code == 404 and "has no image" in response.json()["detail"]
        assert client.get("/items/X1").json()["image_url"] is None


def test_a_url_image_is_not_fetched_unless_allowed(copy: Path) -> None:
    home = copy / "home"
    with Workspace(load_settings(home=home), role="test") as ws, ws.conn:
        row = ws.products.get("P0030")
        url = "http://127.0.0.1:9/p.png"
        ws.conn.execute("UPDATE products SET image_path = ?, payload = ? WHERE "
                        "product_id = 'P0030'", (url, json.dumps({**row.payload, "image": url})))
    for client in _client(home):
        response = client.get("/items/P0030/image")
        assert response.status_code == 404 and "allow_urls" in response.json()["detail"]
        assert url not in client.get("/items/P0030").text


# -- no file paths -----------------------------------------------------------------------
_PATH = re.compile(r"(?<![\w.:])/(?:[^\s/'\"`]+/)+[^\s/'\"`]*")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_response_holds_a_file_path(copy: Path) -> None:
    """Every endpoint's JSON, walked: no string is a path on the server (only the API's own
    URL paths), and nothing names the home, the catalog folder or the store's folder."""
    home = copy / "home"
    for client in _client(home):
        campaign = {"slots": 3, "category": "laptops"}
        answers = [
            client.get("/info"), client.get("/items/P0001/similar", params={"k": 5}),
            client.get("/users/U001/feed", params={"k": 5}),
            client.post("/users/U001/ads", json=campaign),
            client.post("/users/U101/ads", json={"slots": 2, "product_ids": ["P0001", "P0002"]}),
            client.get("/search", params={"q": "running shoe", "k": 5}),
            client.get("/search", params={"q": "running shoe", "user_id": "U002"}),
            client.get("/popular"), client.get("/items/P0001"),
            client.get("/users/U001/history"), client.get("/categories"), client.get("/report"),
            client.get("/items/NOPE"), client.get("/items/NOPE/image"),
            client.put("/items", json={"items": [{"product_id": "X2", "title": "t",
                                                  "image": str(copy / "images/P0001.png")}]}),
            client.post("/events", json={"events": [{"user_id": "U9", "product_id": "P0001"}]}),
            client.delete("/items/X2"),
        ]
        allowed = re.compile(r"^/(items/[^/]+/image|report/recall\.png)$")
        for response in answers:
            body = response.json()
            for text in _strings(body):
                assert str(copy) not in text and "edge://" not in text, (response.url, text)
                for match in _PATH.findall(text):
                    assert allowed.match(match), (response.url, text)
        item = client.get("/items/P0001/similar", params={"k": 1}).json()["items"][0]
        assert item["image_url"] == f"/items/{item['product_id']}/image" and "image" not in item
        assert client.get("/info").json()["store"] == "edge (embedded)"


def test_info_and_report_show_paths_to_the_key_holder_only(copy: Path) -> None:
    home = copy / "home"
    guarded = {"api_key": SecretStr("k3y"), "api": ApiSettings(read_requires_key=False)}
    for client in _client(home, **guarded):
        public = client.get("/info").json()
        assert "home" not in public and public["store"] == "edge (embedded)"
        wrong = client.get("/info", headers={"X-API-Key": "nope"}).json()
        assert "home" not in wrong
        private = client.get("/info", headers={"X-API-Key": "k3y"}).json()
        assert Path(private["home"]) == home.resolve() and private["store"].startswith("edge://")
        public_md = client.get("/report").json()["markdown"]
        assert "<path>" in public_md and "/catalog.csv" not in public_md
        private_md = client.get("/report", headers={"X-API-Key": "k3y"}).json()["markdown"]
        assert "/catalog.csv`" in private_md


def test_reads_need_the_key_when_configured_and_the_page_says_so(copy: Path) -> None:
    guarded = {"api_key": SecretStr("k3y"), "api": ApiSettings(read_requires_key=True)}
    for client in _client(copy / "home", **guarded):
        for path in ("/search?q=shoe", "/items/P0001/image", "/users/U001/history", "/report",
                     "/items/P0001", "/categories", "/popular"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "k3y"}).status_code == 200, path
        page = client.get("/")
        assert page.status_code == 200
        assert '<meta name="semrec-reads-need-key" content="true">' in page.text
        image = client.get("/items/P0001/image", headers={"X-API-Key": "k3y"})
        assert image.headers["cache-control"].startswith("private")


# -- history, product, page --------------------------------------------------------------
def test_history_is_newest_first_with_product_fields(api: TestClient) -> None:
    expected = [e for e in EVENTS if e["user_id"] == "U001"][::-1]
    body = api.get("/users/U001/history", params={"limit": 3}).json()
    assert [(i["product_id"], i["event"]) for i in body["items"]] == [
        (e["product_id"], e["event"]) for e in expected[:3]]
    first = body["items"][0]
    assert first["known"] and first["title"] == CATALOG[first["product_id"]]["title"]
    assert first["image_url"] == f"/items/{first['product_id']}/image"
    assert api.get("/users/U101/history").json()["items"] == []
    assert api.get("/users/U001/history", params={"limit": 0}).status_code == 422


def test_product_categories_and_the_page(api: TestClient) -> None:
    item = api.get("/items/P0002").json()
    assert item["title"] == CATALOG["P0002"]["title"] and item["category"] == "dresses"
    assert item["attributes"] == {"color": "mustard", "material": "silk"}
    assert api.get("/items/NOPE").status_code == 404
    cats = api.get("/categories").json()["categories"]
    assert {c["name"]: c["products"] for c in cats} == {
        c: 50 for c in {row["category"] for row in CATALOG.values()}}
    page = api.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert 'content="false"' in page.text
    for name in ("app.js", "api.js", "ui.js", "views.js", "style.css", "favicon.svg"):
        assert api.get(f"/static/{name}").status_code == 200, name
    assert api.get("/static/../storefront.py").status_code == 404
    assert os.path.basename(api.get("/report").json()["markdown"]) != ""


def test_concurrent_queries_share_encoder_passes(shop: Path) -> None:
    """Eight different queries at once share one encoder pass; each vector is the one the
    query gets encoded alone, and asking again is answered from the cache."""
    import asyncio

    import numpy as np

    from semrec.serving.search import QueryVectors, query_vector

    texts = [f"{colour} {thing}" for colour, thing in zip(
        ("red", "blue", "green", "black", "white", "pink", "grey", "brown"),
        ("dress", "kettle", "laptop", "spade", "espresso machine", "lamp", "tote", "sofa"),
        strict=True)]
    with Workspace(load_settings(home=shop / "home"), own_index=False) as ws:
        version = ws.served_version()
        vectors = QueryVectors()

        async def all_at_once() -> list[np.ndarray]:
            return await asyncio.gather(*(vectors.get(ws, version, t) for t in texts))

        batched = asyncio.run(all_at_once())
        assert vectors.passes == 1
        alone = [query_vector(ws, version, t) for t in texts]
        np.testing.assert_allclose(np.stack(batched), np.stack(alone), atol=1e-5)
        again = asyncio.run(all_at_once())
        assert vectors.passes == 1 and all(a is b for a, b in zip(again, batched, strict=True))
