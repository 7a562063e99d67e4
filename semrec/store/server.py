"""Scale-out store: a Qdrant server or cluster through qdrant-client.

``location`` ``:memory:`` runs qdrant-client's in-process mode, which speaks the same API;
the contract tests use it where no server runs.

A collection holds the fused default vector (named ``""``) and the named ``MODALITIES``
vectors (``text`` only where it differs from the fused one, as on Edge); one made before
them (a single unnamed vector) keeps serving the default search with ``modalities`` () until
``recreate`` rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from semrec.store.base import (
    INDEXED_FIELDS,
    MODALITIES,
    Filters,
    Hit,
    StoredItem,
    check_using,
    merge_hits,
    point_id,
    point_vectors,
    searches,
    stored_items,
    wanted_vectors,
)

_SCHEMA = {"keyword": models.PayloadSchemaType.KEYWORD, "float": models.PayloadSchemaType.FLOAT,
           "bool": models.PayloadSchemaType.BOOL}


class QdrantServerStore:
    """One versioned collection (``semrec-<model version>``) on a server or cluster.

    ``alias`` is the stable name readers outside semrec may query (``semrec``); ``activate``
    points it at this collection in one atomic ``update_collection_aliases`` call, so a
    re-index builds a new collection beside the served one and swaps it in whole.
    """

    def __init__(self, client: QdrantClient, collection: str, dim: int, location: str,
                 alias: str | None = None, modalities: tuple[str, ...] = MODALITIES,
                 shards: int | None = None, replicas: int | None = None) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.location = f"{location}#{collection}"
        self.alias = alias
        self.modalities = modalities
        self._url = location
        self._layout = (shards, replicas)

    @classmethod
    def open(cls, url: str, collection: str, dim: int, api_key: str | None = None,
             client: QdrantClient | None = None, alias: str | None = None,
             shards: int | None = None, replicas: int | None = None) -> QdrantServerStore:
        """Connect (``url`` ``:memory:`` for in-process) and create the collection if absent,
        with ``shards`` shards of ``replicas`` copies each on a cluster (server defaults
        otherwise; both are ignored by the in-process mode)."""
        if client is None:
            client = (QdrantClient(location=":memory:") if url == ":memory:"
                      else QdrantClient(url=url, api_key=api_key, timeout=30))
        if not client.collection_exists(collection):
            _create(client, url, collection, dim, shards, replicas)
        vectors = client.get_collection(collection).config.params.vectors
        modalities = tuple(m for m in MODALITIES if isinstance(vectors, dict) and m in vectors)
        return cls(client, collection, dim, url, alias, modalities, shards, replicas)

    def recreate(self) -> None:
        """Delete the collection and create it empty with every named vector; the alias,
        where it named this collection, names the new one."""
        served = self.alias is not None and self.aliased_collection() == self.collection
        self.client.delete_collection(self.collection)
        _create(self.client, self._url, self.collection, self.dim, *self._layout)
        self.modalities = MODALITIES
        if served:
            self.activate()

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]],
               by_modality: dict[str, np.ndarray] | None = None) -> None:
        points = [models.PointStruct(id=point_id(pid), vector=vector, payload=payload)
                  for pid, vector, payload in zip(
                      product_ids, point_vectors(vectors, by_modality, self.modalities),
                      payloads, strict=True)]
        for start in range(0, len(points), 512):
            self.client.upsert(self.collection, points[start:start + 512], wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.client.delete(self.collection, models.PointIdsList(
                points=[point_id(p) for p in product_ids]), wait=True)

    def get(self, product_ids: Sequence[str], with_vectors: bool = True,
            using: str = "") -> list[StoredItem]:
        check_using(using, self.modalities, self.location)
        if not product_ids:
            return []
        records = self.client.retrieve(
            self.collection, [point_id(p) for p in product_ids], with_payload=True,
            with_vectors=wanted_vectors(with_vectors, using, self.modalities))
        return stored_items(records, product_ids, with_vectors, using)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None,
               with_vectors: bool = False, using: str = "") -> list[Hit]:
        check_using(using, self.modalities, self.location)
        query = np.asarray(vector, np.float32).tolist()
        requests = [models.QueryRequest(
            query=query, limit=k, using=name or None, filter=_filter(filters, lacks),
            with_payload=True, with_vector=wanted_vectors(with_vectors, name, self.modalities),
        ) for name, lacks in searches(using)]
        answers = self.client.query_batch_points(self.collection, requests)
        return merge_hits((answer.points for answer in answers), k, with_vectors, using)

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

    def activate(self) -> None:
        """Point ``alias`` at this collection (drop + create in one atomic request)."""
        if self.alias is None:
            return
        self.client.update_collection_aliases(change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)),
            models.CreateAliasOperation(create_alias=models.CreateAlias(
                collection_name=self.collection, alias_name=self.alias)),
        ] if self._alias_exists() else [
            models.CreateAliasOperation(create_alias=models.CreateAlias(
                collection_name=self.collection, alias_name=self.alias)),
        ])

    def aliased_collection(self) -> str | None:
        """The collection ``alias`` points at now (None if the alias does not exist)."""
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        return None

    def _alias_exists(self) -> bool:
        return self.alias is not None and self.aliased_collection() is not None

    def close(self) -> None:
        self.client.close()


def _create(client: QdrantClient, url: str, collection: str, dim: int, shards: int | None,
            replicas: int | None) -> None:
    params = {name: models.VectorParams(size=dim, distance=models.Distance.COSINE)
              for name in ("", *MODALITIES)}
    client.create_collection(collection, vectors_config=params, shard_number=shards,
                             replication_factor=replicas)
    for name, kind in INDEXED_FIELDS.items():
        if url != ":memory:":  # the in-process mode has no payload indexes
            client.create_payload_index(collection, name, _SCHEMA[kind], wait=True)


def _filter(filters: Filters | None, lacks: str | None = None) -> models.Filter | None:
    """The server's filter for ``filters``, and for points without the vector ``lacks``."""
    must_not: list[Any] = [models.HasVectorCondition(has_vector=lacks)] if lacks else []
    if filters is None:
        return models.Filter(must_not=must_not) if must_not else None
    must: list[Any] = []
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
    if filters.only_new:
        must.append(models.FieldCondition(key="new", match=models.MatchValue(value=True)))
    if filters.exclude:
        must_not.append(models.HasIdCondition(has_id=[point_id(p) for p in filters.exclude]))
    if filters.only is not None:
        must.append(models.HasIdCondition(has_id=[point_id(p) for p in filters.only]))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
