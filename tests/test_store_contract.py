"""One contract, every store: the same fixture vectors go into Qdrant Edge, qdrant-client's
in-process mode and (when ``QDRANT_URL`` is set) a real Qdrant server, and each must give
the answers of an exact numpy search with the same filter semantics, and so each other's.

The vectors are the real ones: the fixture catalog indexed once with the bundled MiniLM and
the tiny CLIP image tower, every fifth product without its image (so its point has no
"image" vector, and no "text" one either: its fused vector is its text vector): the fused
default vector and the per-modality "text" and "image" ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models

from ingest import image_source, read_catalog, read_events
from semrec.config import load_settings
from semrec.index import ingest as index_ingest
from semrec.serving.recommender import Campaign, NoSuchModality, Recommender, open_recommender
from semrec.store import MODALITIES, SERVED_ALIAS, Filters, NoModalityVectors, VectorStore
from semrec.store.edge import EdgeStore
from semrec.store.server import QdrantServerStore
from semrec.workspace import Workspace
from tests.conftest import FIXTURES, write_config

BACKENDS = ["edge", "memory"] + (["server"] if os.environ.get("QDRANT_URL") else [])


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    vectors: np.ndarray  # unit rows
    payloads: list[dict[str, Any]]
    home: Path
    #: per modality, unit rows; a zero row where the product lacks it (no image)
    by_modality: dict[str, np.ndarray]

    def exact(self, query: np.ndarray, k: int, filters: Filters | None = None,
              using: str = "") -> list[str]:
        """The reference answer: brute-force cosine over the products ``filters`` passes
        (that have a ``using`` vector)."""
        f = filters or Filters()
        vectors = self.by_modality[using] if using else self.vectors
        scores = vectors @ (query / np.linalg.norm(query))
        has = np.any(vectors != 0, axis=1)
        order = np.argsort(-scores, kind="stable")
        return [self.ids[i] for i in order if has[i] and f.passes(self.payloads[i])][:k]


NO_IMAGE = {f"P{n:04d}" for n in range(5, 301, 5)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_clip: dict[str, str]) -> Corpus:
    home = tmp_path_factory.mktemp("contract-home")
    write_config(home, tiny_clip)
    settings = load_settings(home=home)
    products = [replace(p, image=None) if p.product_id in NO_IMAGE else p
                for p in read_catalog(FIXTURES / "catalog.csv").items]
    with Workspace(settings, role="test") as ws:
        index_ingest(ws, products, image_source())
        ws.events.add(read_events(FIXTURES / "events.csv").items)
        store = ws.served_store()
        ids = sorted(store.product_ids())
        items = store.get(ids)
        named = {m: store.get(ids, using=m) for m in MODALITIES}
    vectors = np.stack([i.vector for i in items])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    by_modality = {m: np.stack([i.vector if i.vector is not None else np.zeros(vectors.shape[1],
                                                                                np.float32)
                                for i in got]) for m, got in named.items()}
    has_image = np.any(by_modality["image"] != 0, axis=1)
    assert {pid for pid, has in zip(ids, has_image, strict=True) if not has} == NO_IMAGE
    # a trained version marks the products it had no events for as new: every 7th here
    payloads = [{**item.payload, "new": n % 7 == 0} for n, item in enumerate(items)]
    return Corpus(ids, vectors, payloads, home, by_modality)


def _open(kind: str, root: Path, dim: int, collection: str) -> VectorStore:
    if kind == "edge":
        return EdgeStore.open(root / collection, dim)
    url = ":memory:" if kind == "memory" else os.environ["QDRANT_URL"]
    return QdrantServerStore.open(url, collection, dim, alias=f"{collection}-alias")


def _drop(store: VectorStore) -> None:
    if isinstance(store, QdrantServerStore) and store.client.collection_exists(store.collection):
        store.client.delete_collection(store.collection)
    store.close()


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, corpus: Corpus,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    collection = f"semrec-contract-{uuid.uuid4().hex[:8]}"
    opened = _open(request.param, tmp_path_factory.mktemp("store"), corpus.vectors.shape[1],
                   collection)
    opened.upsert(corpus.ids, corpus.vectors, corpus.payloads, corpus.by_modality)
    opened.optimize()
    yield opened
    _drop(opened)


QUERIES = ["P0001", "P0002", "P0050", "P0123", "P0299"]
FILTERS = [
    Filters(),
    Filters(category="laptops"),
    Filters(min_price=100.0, max_price=300.0),
    Filters(max_price=150.0),
    Filters(in_stock=True),
    Filters(in_stock=False),
    Filters(exclude=frozenset({"P0008", "P0155", "P0132"})),
    Filters(only=frozenset({"P0003", "P0010", "P0200", "P0296", "P0008"})),
    Filters(only=frozenset()),
    Filters(category="running shoes", max_price=200.0, in_stock=True,
            exclude=frozenset({"P0155"})),
    Filters(only_new=True),
    Filters(category="laptops", only_new=True, exclude=frozenset({"P0008"})),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr(f)[8:60])
def test_search_matches_exact_search(store: VectorStore, corpus: Corpus,
                                     filters: Filters) -> None:
    for pid in QUERIES:
        query = corpus.vectors[corpus.ids.index(pid)]
        hits = store.search(query, 10, filters)
        assert [h.product_id for h in hits] == corpus.exact(query, 10, filters), pid
        assert all(filters.passes(h.payload) for h in hits)
        expected = corpus.vectors[[corpus.ids.index(h.product_id) for h in hits]] @ query
        assert np.allclose([h.score for h in hits], expected, atol=1e-4)


def test_search_with_vectors_returns_the_stored_unit_vectors(store: VectorStore,
                                                             corpus: Corpus) -> None:
    query = corpus.vectors[0]
    plain = store.search(query, 5)
    hits = store.search(query, 5, with_vectors=True)
    assert [h.product_id for h in hits] == [h.product_id for h in plain]
    assert all(h.vector is None for h in plain)
    for h in hits:
        assert np.allclose(h.vector, corpus.vectors[corpus.ids.index(h.product_id)], atol=1e-5)


def test_get_count_and_ids(store: VectorStore, corpus: Corpus) -> None:
    assert store.count() == len(corpus.ids)
    assert sorted(store.product_ids()) == corpus.ids
    got = store.get(["P0010", "NOPE", "P0002"])
    assert [i.product_id for i in got] == ["P0010", "P0002"]
    assert np.allclose(got[0].vector, corpus.vectors[corpus.ids.index("P0010")], atol=1e-5)
    assert got[1].payload == corpus.payloads[corpus.ids.index("P0002")]
    assert store.get(["P0010"], with_vectors=False)[0].vector is None


def test_delete_and_upsert_are_visible_at_once(store: VectorStore, corpus: Corpus) -> None:
    i = corpus.ids.index("P0042")
    query = corpus.vectors[i]
    assert store.search(query, 1)[0].product_id == "P0042"
    store.delete(["P0042"])
    try:
        assert "P0042" not in {h.product_id for h in store.search(query, 20)}
        assert store.get(["P0042"]) == [] and store.count() == len(corpus.ids) - 1
    finally:
        store.upsert(["P0042"], corpus.vectors[i:i + 1], [corpus.payloads[i]],
                     {m: v[i:i + 1] for m, v in corpus.by_modality.items()})
    assert store.search(query, 1)[0].product_id == "P0042"


@pytest.mark.parametrize("using", MODALITIES)
@pytest.mark.parametrize("filters", FILTERS[:7] + FILTERS[9:10], ids=lambda f: repr(f)[8:60])
def test_search_by_modality_matches_exact_search(store: VectorStore, corpus: Corpus,
                                                 using: str, filters: Filters) -> None:
    """Each modality's own vectors, searched in the store with the same filters; only the
    products that have the modality come back (none of ``NO_IMAGE`` by image)."""
    assert store.modalities == MODALITIES
    for pid in [p for p in [*QUERIES, "P0101"] if using == "text" or p not in NO_IMAGE]:
        query = corpus.by_modality[using][corpus.ids.index(pid)]
        hits = store.search(query, 10, filters, using=using)
        assert [h.product_id for h in hits] == corpus.exact(query, 10, filters, using), pid
        if using == "image":
            assert not NO_IMAGE & {h.product_id for h in hits}
        rows = corpus.by_modality[using][[corpus.ids.index(h.product_id) for h in hits]]
        assert np.allclose([h.score for h in hits], rows @ query, atol=1e-4)


def test_get_and_search_by_modality_return_that_vector(store: VectorStore,
                                                       corpus: Corpus) -> None:
    got = store.get(["P0010", "P0011", "NOPE"], using="image")
    assert [i.product_id for i in got] == ["P0010", "P0011"]
    assert got[0].vector is None  # P0010 has no image
    i = corpus.ids.index("P0011")
    assert np.allclose(got[1].vector, corpus.by_modality["image"][i], atol=1e-5)
    assert not np.allclose(got[1].vector, corpus.vectors[i], atol=1e-2)
    text = store.get(["P0010"], using="text")[0].vector
    assert np.allclose(text, corpus.by_modality["text"][corpus.ids.index("P0010")], atol=1e-5)
    hits = store.search(corpus.by_modality["image"][i], 3, using="image", with_vectors=True)
    for h in hits:
        assert np.allclose(h.vector, corpus.by_modality["image"][corpus.ids.index(h.product_id)],
                           atol=1e-5)
    with pytest.raises(ValueError, match="unknown vector 'colour'"):
        store.search(corpus.vectors[0], 3, using="colour")


def test_upsert_without_an_image_drops_the_old_image_vector(store: VectorStore,
                                                            corpus: Corpus) -> None:
    i = corpus.ids.index("P0042")
    image = corpus.by_modality["image"][i]
    assert store.search(image, 1, using="image")[0].product_id == "P0042"
    lost = {"text": corpus.by_modality["text"][i:i + 1], "image": np.zeros((1, image.size))}
    store.upsert(["P0042"], corpus.vectors[i:i + 1], [corpus.payloads[i]], lost)
    try:
        assert store.get(["P0042"], using="image")[0].vector is None
        assert "P0042" not in {h.product_id for h in store.search(image, 20, using="image")}
        assert store.search(corpus.vectors[i], 1)[0].product_id == "P0042"
    finally:
        store.upsert(["P0042"], corpus.vectors[i:i + 1], [corpus.payloads[i]],
                     {m: v[i:i + 1] for m, v in corpus.by_modality.items()})
    assert store.search(image, 1, using="image")[0].product_id == "P0042"


def _with_text_vector(store: VectorStore) -> set[str]:
    """The product IDs whose points store a named "text" vector, asked of the engine."""
    if isinstance(store, EdgeStore):
        records, _ = store.shard.scroll(qe.ScrollRequest(
            limit=10_000, with_payload=["product_id"], with_vector=False,
            filter=qe.Filter(must=[qe.HasVectorCondition("text")])))
    else:
        records, _ = store.client.scroll(
            store.collection, limit=10_000, with_payload=["product_id"], with_vectors=False,
            scroll_filter=models.Filter(must=[models.HasVectorCondition(has_vector="text")]))
    return {r.payload["product_id"] for r in records}


def test_a_text_vector_equal_to_the_fused_one_is_stored_once(store: VectorStore,
                                                            corpus: Corpus) -> None:
    """A product without an image (untrained: no ID embedding) has its text vector as its
    fused one, and its point keeps only the fused copy; one with an image keeps both. Read
    or searched by text, each gives its text vector all the same."""
    same = {pid for i, pid in enumerate(corpus.ids)
            if np.allclose(corpus.by_modality["text"][i], corpus.vectors[i], atol=1e-6)}
    assert same == NO_IMAGE  # the fixture's own answer: fused = text without an image
    assert _with_text_vector(store) == set(corpus.ids) - NO_IMAGE
    got = store.get(["P0010", "P0011"], using="text")  # P0010 has no image, P0011 has one
    for item in got:
        i = corpus.ids.index(item.product_id)
        assert np.allclose(item.vector, corpus.by_modality["text"][i], atol=1e-5)
    assert not np.allclose(got[1].vector, corpus.vectors[corpus.ids.index("P0011")], atol=1e-2)
    query = corpus.by_modality["text"][corpus.ids.index("P0011")]
    hits = store.search(query, 30, using="text", with_vectors=True)
    assert [h.product_id for h in hits] == corpus.exact(query, 30, using="text")
    found = {h.product_id for h in hits}
    assert found & NO_IMAGE and found - NO_IMAGE  # both kinds of point among the answers
    for h in hits:
        assert np.allclose(h.vector, corpus.by_modality["text"][corpus.ids.index(h.product_id)],
                           atol=1e-5)


def test_a_text_vector_unlike_the_fused_one_is_kept(store: VectorStore, corpus: Corpus) -> None:
    """A product without an image whose fused vector moved away from its text (a trained
    version's ID embedding) keeps its own text vector, and is found by it."""
    i = corpus.ids.index("P0010")
    text = corpus.by_modality["text"][i:i + 1]
    moved = corpus.vectors[corpus.ids.index("P0002"):corpus.ids.index("P0002") + 1]
    store.upsert(["P0010"], moved, [corpus.payloads[i]],
                 {"text": text, "image": np.zeros_like(text)})
    try:
        assert "P0010" in _with_text_vector(store)
        assert np.allclose(store.get(["P0010"], using="text")[0].vector, text[0], atol=1e-5)
        assert np.allclose(store.get(["P0010"])[0].vector, moved[0], atol=1e-5)
        hit = store.search(text[0], 1, using="text")[0]
        assert hit.product_id == "P0010" and hit.score == pytest.approx(1.0, abs=1e-4)
    finally:
        store.upsert(["P0010"], corpus.vectors[i:i + 1], [corpus.payloads[i]],
                     {m: v[i:i + 1] for m, v in corpus.by_modality.items()})
    assert "P0010" not in _with_text_vector(store)


def _legacy(kind: str, root: Path, dim: int, collection: str) -> VectorStore:
    """A collection as semrec made it before the named vectors: one unnamed vector."""
    if kind == "edge":
        qe.EdgeShard.create(str(root / collection), qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))).close()
        return EdgeStore.open(root / collection, dim)
    url = ":memory:" if kind == "memory" else os.environ["QDRANT_URL"]
    client = QdrantServerStore.open(url, f"{collection}-probe", dim).client
    client.create_collection(collection, vectors_config=models.VectorParams(
        size=dim, distance=models.Distance.COSINE))
    return QdrantServerStore.open(url, collection, dim, client=client)


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_old_collection_serves_the_default_search_until_recreated(
        kind: str, corpus: Corpus, tmp_path: Path) -> None:
    """Opened as it is (no migration on open); ``--by`` there says how to rebuild it, and
    ``recreate`` gives it every named vector."""
    dim = corpus.vectors.shape[1]
    old = _legacy(kind, tmp_path, dim, f"semrec-legacy-{uuid.uuid4().hex[:8]}")
    try:
        assert old.modalities == ()
        old.upsert(corpus.ids, corpus.vectors, corpus.payloads, corpus.by_modality)
        query = corpus.vectors[corpus.ids.index("P0002")]
        assert [h.product_id for h in old.search(query, 10)] == corpus.exact(query, 10)
        assert np.allclose(old.get(["P0002"])[0].vector, query, atol=1e-5)
        with pytest.raises(NoModalityVectors, match="semrec verify --repair"):
            old.search(query, 10, using="image")
        with pytest.raises(NoModalityVectors, match="'text'"):
            old.get(["P0002"], using="text")
        old.recreate()
        assert old.modalities == MODALITIES and old.count() == 0
        old.upsert(corpus.ids, corpus.vectors, corpus.payloads, corpus.by_modality)
        image = corpus.by_modality["image"][corpus.ids.index("P0002")]
        assert ([h.product_id for h in old.search(image, 10, using="image")]
                == corpus.exact(image, 10, using="image"))
    finally:
        _drop(old)


def test_recommender_gives_the_same_answers_on_every_backend(store: VectorStore,
                                                             corpus: Corpus) -> None:
    """Feeds (with ``because``), diversified lists and ads: identical to the Edge index the
    fixture home was built with."""
    settings = load_settings(home=corpus.home)
    with Workspace(settings, role="test") as ws:
        reference = open_recommender(ws)
        other = Recommender(store, ws.events, ws.products, settings.user)
        for user in ("U001", "U002", "U050", "U101"):
            for diversity in (0.0, 0.4):
                a, b = (r.feed(user, 8, Filters(in_stock=True), diversity)
                        for r in (reference, other))
                assert [(i.product_id, i.because) for i in a.items] == \
                       [(i.product_id, i.because) for i in b.items], (user, diversity)
        for pid in QUERIES:
            for by in ("both", "text", "image"):
                if by == "image" and pid in NO_IMAGE:
                    for r in (reference, other):
                        with pytest.raises(NoSuchModality, match=f"{pid!r} has no image"):
                            r.similar(pid, 6, by=by)
                    continue
                a, b = (r.similar(pid, 6, diversity=0.5, by=by) for r in (reference, other))
                assert [i.product_id for i in a] == [i.product_id for i in b], (pid, by)
        campaign = Campaign(slots=4, category="laptops", max_price=900.0)
        assert ([i.product_id for i in reference.ads("U002", campaign).items]
                == [i.product_id for i in other.ads("U002", campaign).items])


@pytest.mark.parametrize("kind", [b for b in BACKENDS if b != "edge"])
def test_server_alias_swaps_versions_atomically(kind: str, corpus: Corpus,
                                                tmp_path: Path) -> None:
    """A new version's collection is built beside the served one, then the alias moves."""
    tag = uuid.uuid4().hex[:8]
    dim = corpus.vectors.shape[1]
    old = _open(kind, tmp_path, dim, f"semrec-old-{tag}")
    assert isinstance(old, QdrantServerStore)
    url = ":memory:" if kind == "memory" else os.environ["QDRANT_URL"]
    new = QdrantServerStore.open(url, f"semrec-new-{tag}", dim, client=old.client,
                                 alias=old.alias)
    client = old.client
    try:
        old.upsert(corpus.ids[:10], corpus.vectors[:10], corpus.payloads[:10])
        old.activate()
        assert old.aliased_collection() == old.collection
        new.upsert(corpus.ids, corpus.vectors, corpus.payloads)  # built while old is served
        assert client.count(old.alias).count == 10
        new.activate()
        assert old.aliased_collection() == new.collection
        assert client.count(old.alias).count == len(corpus.ids)
    finally:
        client.update_collection_aliases(change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=old.alias))])
        client.delete_collection(new.collection)
        _drop(old)


def test_served_alias_name_is_stable() -> None:
    assert SERVED_ALIAS == "semrec"
