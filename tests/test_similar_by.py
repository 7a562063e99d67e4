"""Similar items by look (``similar --by image|text|both``), on a real home: the fixture
catalog's first 90 products (12-20 of each category) indexed with the bundled MiniLM and
the bundled efficientnet-lite0 (a real ImageNet network) into Qdrant Edge, plus two products
made here with known answers:

- ``X-LOOK``: a laptop's text with a dress's photo (``images/P0002.png``, a pink ring; see
  fixtures/README.md): by image it looks like the dresses, by text it reads like the laptops;
- ``X-NOIMG``: a dress without an image: by image it has nothing to look like.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest import image_source, read_catalog
from semrec.config import load_settings
from semrec.index import embed_rows, ingest
from semrec.serving.cli import app
from semrec.serving.recommender import NoSuchModality, open_recommender
from semrec.store import Filters, point_id
from semrec.towers import VersionItems
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, api_client, write_config

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("look-home")
    write_config(home, {"model": "efficientnet-lite0"})
    products = read_catalog(FIXTURES / "catalog.csv").items[:90]  # 12-20 a category
    by_id = {p.product_id: p for p in products}
    laptop = next(p for p in products if p.category == "laptops")
    extra = [replace(laptop, product_id="X-LOOK", image=by_id["P0002"].image),
             replace(by_id["P0002"], product_id="X-NOIMG", image=None)]
    with Workspace(load_settings(home=home), role="test") as ws:
        report = ingest(ws, [*products, *extra], image_source())
    assert report.images_encoded == 90 and not report.image_errors  # X-LOOK's is P0002's
    return home


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def categories(home: Path, product_id: str, by: str, k: int = 10) -> Counter[str]:
    code, stdout, stderr = cli(home, "similar", product_id, "-k", str(k), "--by", by, "--json")
    assert code == 0, stderr
    return Counter(item["category"] for item in json.loads(stdout))


def test_by_image_finds_what_looks_alike_and_by_text_what_reads_alike(home: Path) -> None:
    assert categories(home, "X-LOOK", "image") == {"dresses": 10}
    assert categories(home, "X-LOOK", "text") == {"laptops": 10}
    both = categories(home, "X-LOOK", "both", k=40)
    assert both["laptops"] > 0 and both["dresses"] > 0  # the fused vector is both


def test_by_image_neighbours_share_the_query_photo(home: Path) -> None:
    """Each category's photos share one colour and shape, so by image every neighbour of a
    catalog product is of its category, and P0002's twin photo (X-LOOK's) comes first with
    cosine 1; default is both."""
    with Workspace(load_settings(home=home), role="test") as ws:
        rec = open_recommender(ws)
        twin = rec.similar("P0002", 1, by="image")[0]
        assert twin.product_id == "X-LOOK" and twin.score == pytest.approx(1.0, abs=1e-4)
        assert rec.similar("P0002", 1, by="text")[0].payload["category"] == "dresses"
        for pid in ("P0001", "P0002", "P0005", "P0090"):
            category = ws.products.get_many([pid])[pid].payload["category"]
            hits = rec.similar(pid, 10, Filters(exclude=frozenset({"X-LOOK"})), by="image")
            assert {h.payload["category"] for h in hits} == {category}, pid
            assert pid not in {h.product_id for h in hits}
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
        assert ([h.product_id for h in rec.similar("P0002", 10)]
                == [h.product_id for h in rec.similar("P0002", 10, by="both")])


def test_a_product_without_an_image_gets_a_clear_error_by_image(home: Path) -> None:
    code, stdout, stderr = cli(home, "similar", "X-NOIMG", "--by", "image")
    assert code == 1 and stdout == ""
    assert "'X-NOIMG' has no image" in stderr and len(stderr.strip().splitlines()) == 1
    assert categories(home, "X-NOIMG", "text") == {"dresses": 10}
    # never a neighbour by image either: it has no image vector
    code, stdout, _ = cli(home, "similar", "P0002", "-k", "100", "--by", "image", "--json")
    assert code == 0 and "X-NOIMG" not in {i["product_id"] for i in json.loads(stdout)}


@pytest.fixture(scope="module")
def api(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    copy = Path(shutil.copytree(home, tmp_path_factory.mktemp("look-api") / "home"))
    yield from api_client(copy)


def test_api_takes_by(api: TestClient, home: Path) -> None:
    answer = api.get("/items/X-LOOK/similar", params={"by": "image", "k": 5,
                                                      "in_stock": "true"})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) == 5 and {i["category"] for i in items} == {"dresses"}
    assert all(i["in_stock"] for i in items)
    text = api.get("/items/X-LOOK/similar", params={"by": "text", "k": 5}).json()["items"]
    assert {i["category"] for i in text} == {"laptops"}
    missing = api.get("/items/X-NOIMG/similar", params={"by": "image"})
    assert missing.status_code == 404 and "'X-NOIMG' has no image" in missing.json()["detail"]
    bad = api.get("/items/X-LOOK/similar", params={"by": "colour"})
    assert bad.status_code == 422 and "by" in bad.json()["detail"]


def test_the_id_embedding_moves_the_fused_vector_only(home: Path) -> None:
    """A trained version's ID embedding is learnt from behaviour: it belongs to the fused
    vector, never to the per-modality ones ("by look" is the look alone)."""
    with Workspace(load_settings(home=home), role="test") as ws:
        version = ws.served_version()
        rows = list(ws.products.get_many(["P0001", "P0002"]).values())
        plain = embed_rows(ws.features, ws.items(version), rows)
        tower = ws.items(version).tower
        shift = np.zeros(tower.config.dim, np.float32)
        shift[0] = 5.0
        trained = VersionItems(version, tower, ids={"P0001": shift})
        moved = embed_rows(ws.features, trained, rows)
    assert not np.allclose(moved.fused[0], plain.fused[0], atol=1e-3)
    assert np.allclose(moved.fused[1], plain.fused[1])
    for modality in ("text", "image"):
        assert np.allclose(moved.by_modality[modality], plain.by_modality[modality])
        assert np.allclose(np.linalg.norm(plain.by_modality[modality], axis=1), 1.0, atol=1e-5)


def test_an_old_index_serves_and_verify_repair_adds_the_vectors(tmp_path: Path) -> None:
    """A data directory whose shard has only the fused vector (an older semrec): default
    similar works, ``--by`` names the repair, ``verify --repair`` rebuilds it."""
    write_config(tmp_path)  # text only: fast
    with Workspace(load_settings(home=tmp_path), role="test") as ws:
        ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
        version = ws.served_version()
        store = ws.store(version)
        items = store.get(sorted(store.product_ids()))
        before = [h.product_id for h in open_recommender(ws).similar("P0002", 10)]
        path, dim = store.path, store.dim  # type: ignore[attr-defined]
    shutil.rmtree(path)  # the same points, as an old semrec wrote them
    old = qe.EdgeShard.create(str(path), qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)))
    old.update(qe.UpdateOperation.upsert_points([
        qe.Point(point_id(i.product_id), i.vector.tolist(), i.payload) for i in items]))
    old.close()

    assert [i["product_id"] for i in _similar(tmp_path, "P0002")] == before
    code, _, stderr = cli(tmp_path, "similar", "P0002", "--by", "text")
    assert code == 1 and "semrec verify --repair" in stderr
    code, stdout, _ = cli(tmp_path, "verify", "--json")
    assert "no_modality_vectors" in json.loads(stdout)["differences"]
    code, stdout, stderr = cli(tmp_path, "verify", "--repair", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["remaining"] == 0
    assert [i["product_id"] for i in _similar(tmp_path, "P0002")] == before
    by_text = _similar(tmp_path, "P0002", "--by", "text")
    assert len(by_text) == 10 and {i["category"] for i in by_text} == {"dresses"}
    with Workspace(load_settings(home=tmp_path), role="test") as ws, \
            pytest.raises(NoSuchModality, match="'P0002' has no image"):
        open_recommender(ws).similar("P0002", by="image")  # text-only home


def _similar(home: Path, product_id: str, *args: str) -> list[dict]:
    code, stdout, stderr = cli(home, "similar", product_id, "--json", *args)
    assert code == 0, stderr
    return json.loads(stdout)



def test_by_text_on_a_text_only_catalog_finds_the_text_neighbours(tmp_path: Path) -> None:
    """A text-only catalog's points store no text vector (each is its fused one: no image, no
    ID embedding), yet by text answers from the text vectors: each product's exact nearest
    neighbours by its own text vector, with their cosines, as by both does; and ``semrec
    verify`` finds nothing to repair."""
    write_config(tmp_path)  # text only
    with Workspace(load_settings(home=tmp_path), role="test") as ws:
        ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
        version = ws.served_version()
        rows = sorted(ws.products.all(), key=lambda r: r.product_id)
        ids = [r.product_id for r in rows]
        text = embed_rows(ws.features, ws.items(version), rows).by_modality["text"]
        store = ws.store(version)
        assert store.shard.count(qe.CountRequest(  # type: ignore[attr-defined]
            filter=qe.Filter(must=[qe.HasVectorCondition("text")]))) == 0
        rec = open_recommender(ws)
        for pid in ("P0002", "P0050", "P0123", "P0299"):
            query = text[ids.index(pid)]
            scores = text @ query
            exact = [ids[i] for i in np.argsort(-scores, kind="stable") if ids[i] != pid][:10]
            by_text = rec.similar(pid, 10, by="text")
            assert [h.product_id for h in by_text] == exact, pid
            assert np.allclose([h.score for h in by_text],
                               [scores[ids.index(h.product_id)] for h in by_text], atol=1e-4)
            assert [h.product_id for h in rec.similar(pid, 10, by="both")] == exact, pid
            diverse = rec.similar(pid, 10, diversity=0.5, by="text")
            assert len(diverse) == 10 and pid not in {h.product_id for h in diverse}
    code, stdout, stderr = cli(tmp_path, "verify", "--json")
    assert code == 0 and json.loads(stdout)["ok"], stderr
