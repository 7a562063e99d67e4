"""Scale-out store: a Qdrant server or cluster through qdrant-client.

``location`` ``:memory:`` runs qdrant-client's in-process mode, which speaks the same API;
the contract tests use it where no server runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from semrec.index.base import INDEXED_FIELDS, Filters, Hit, StoredItem, point_id

_SCHEMA = {"keyword": models.PayloadSchemaType.KEYWORD, "float": models.PayloadSchemaType.FLOAT,
           "bool": models.PayloadSchemaType.BOOL}


class QdrantServerStore:
    def __init__(self, client: QdrantClient, collection: str, dim: int, location: str) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.location = f"{location}#{collection}"

    @classmethod
    def open(cls, url: str, collection: str, dim: int, api_key: str | None = None,
             client: QdrantClient | None = None) -> QdrantServerStore:
        """Connect (``url`` ``:memory:`` for in-process) and create the collection if absent."""
        if client is None:
            client = (QdrantClient(location=":memory:") if url == ":memory:"
                      else QdrantClient(url=url, api_key=api_key, timeout=30))
        if not client.collection_exists(collection):
            client.create_collection(
                collection, vectors_config=models.VectorParams(size=dim,
                                                               distance=models.Distance.COSINE))
            for name, kind in INDEXED_FIELDS.items():
                client.create_payload_index(collection, name, _SCHEMA[kind])
        return cls(client, collection, dim, url)

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]]) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        points = [models.PointStruct(id=point_id(pid), vector=vec.tolist(), payload=payload)
                  for pid, vec, payload in zip(product_ids, vectors, payloads, strict=True)]
        for start in range(0, len(points), 512):
            self.client.upsert(self.collection, points[start:start + 512], wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.client.delete(self.collection, models.PointIdsList(
                points=[point_id(p) for p in product_ids]), wait=True)

    def get(self, product_ids: Sequence[str], with_vectors: bool = True) -> list[StoredItem]:
        if not product_ids:
            return []
        records = self.client.retrieve(self.collection, [point_id(p) for p in product_ids],
                                       with_payload=True, with_vectors=with_vectors)
        by_id = {r.payload["product_id"]: r for r in records}
        return [StoredItem(p, np.asarray(by_id[p].vector, np.float32) if with_vectors else None,
                           by_id[p].payload) for p in product_ids if p in by_id]

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        result = self.client.query_points(
            self.collection, query=np.asarray(vector, np.float32).tolist(), limit=k,
            query_filter=_filter(filters), with_payload=True,
        )
        return [Hit(p.payload["product_id"], float(p.score), p.payload) for p in result.points]

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def product_ids(self) -> Iterator[str]:
        offset = None
        while True:
            records, offset = self.client.scroll(self.collection, limit=1024, offset=offset,
                                                 with_payload=["product_id"], with_vectors=False)
            yield from (r.payload["product_id"] for r in records)
            if offset is None:
                return

    def optimize(self) -> None:
        """The server optimises in the background; nothing to do."""

    def close(self) -> None:
        self.client.close()


def _filter(filters: Filters | None) -> models.Filter | None:
    if filters is None:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if filters.category is not None:
        must.append(models.FieldCondition(key="category",
                                          match=models.MatchValue(value=filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(models.FieldCondition(
            key="price", range=models.Range(gte=filters.min_price, lte=filters.max_price)))
    if filters.in_stock is True:  # a product with no stock field counts as in stock
        must_not.append(models.FieldCondition(key="in_stock", match=models.MatchValue(value=False)))
    elif filters.in_stock is False:
        must.append(models.FieldCondition(key="in_stock", match=models.MatchValue(value=False)))
    if filters.exclude:
        must_not.append(models.HasIdCondition(has_id=[point_id(p) for p in filters.exclude]))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
