"""One contract, every store: the same fixture vectors go into Qdrant Edge, qdrant-client's
in-process mode and (when ``QDRANT_URL`` is set) a real Qdrant server, and each must give
the answers of an exact numpy search with the same filter semantics, and so each other's.

The vectors are the real ones: the fixture catalog indexed once with the bundled MiniLM.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from ingest import image_source, read_catalog, read_events
from semrec.config import load_settings
from semrec.index import ingest as index_ingest
from semrec.serving.recommender import Campaign, Recommender, open_recommender
from semrec.store import SERVED_ALIAS, Filters, VectorStore
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

    def exact(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[str]:
        """The reference answer: brute-force cosine over the products ``filters`` passes."""
        f = filters or Filters()
        scores = self.vectors @ (query / np.linalg.norm(query))
        order = np.argsort(-scores, kind="stable")
        return [self.ids[i] for i in order if f.passes(self.payloads[i])][:k]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    home = tmp_path_factory.mktemp("contract-home")
    write_config(home)
    settings = load_settings(home=home)
    with Workspace(settings, role="test") as ws:
        index_ingest(ws, read_catalog(FIXTURES / "catalog.csv").items, image_source())
        ws.events.add(read_events(FIXTURES / "events.csv").items)
        ids = sorted(ws.served_store().product_ids())
        items = ws.served_store().get(ids)
    vectors = np.stack([i.vector for i in items])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # a trained version marks the products it had no events for as new: every 7th here
    payloads = [{**item.payload, "new": n % 7 == 0} for n, item in enumerate(items)]
    return Corpus(ids, vectors, payloads, home)


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
    opened.upsert(corpus.ids, corpus.vectors, corpus.payloads)
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
        store.upsert(["P0042"], corpus.vectors[i:i + 1], [corpus.payloads[i]])
    assert store.search(query, 1)[0].product_id == "P0042"


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
            a, b = (r.similar(pid, 6, diversity=0.5) for r in (reference, other))
            assert [i.product_id for i in a] == [i.product_id for i in b], pid
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
