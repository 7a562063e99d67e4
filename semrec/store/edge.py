"""Embedded store: Qdrant Edge (the Qdrant engine in-process, HNSW) on local disk.

One process owns a shard at a time (Edge locks it); ``Home.lock`` turns a second opener
into a clear error before Edge's own ``WouldBlock``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from semrec.faults import failpoint
from semrec.store.base import INDEXED_FIELDS, Filters, Hit, StoredItem, point_id

_SCHEMA = {"keyword": qe.PayloadSchemaType.Keyword, "float": qe.PayloadSchemaType.Float,
           "bool": qe.PayloadSchemaType.Bool}


class EdgeStore:
    def __init__(self, shard: qe.EdgeShard, path: Path, dim: int) -> None:
        self.shard = shard
        self.dim = dim
        self.location = f"edge://{path}"
        self.path = path

    @classmethod
    def open(cls, path: Path, dim: int) -> EdgeStore:
        """Load the shard at ``path``, creating it if absent; either way with every payload
        index of ``INDEXED_FIELDS`` (a crash right after creating a shard left it without
        some: they are added on the next open). Edge replays its WAL on load, so writes
        acknowledged before a SIGKILL are there."""
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))
        if (path / "edge_config.json").exists() or (path / "segments").is_dir():
            shard = qe.EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(path), config)
            failpoint("edge:created")
        have = set(shard.info().payload_schema)
        for name, kind in INDEXED_FIELDS.items():
            if name not in have:
                shard.update(qe.UpdateOperation.create_field_index(name, _SCHEMA[kind]))
        return cls(shard, path, dim)

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]]) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        points = [qe.Point(point_id(pid), vec.tolist(), payload)
                  for pid, vec, payload in zip(product_ids, vectors, payloads, strict=True)]
        for start in range(0, len(points), 1024):
            self.shard.update(qe.UpdateOperation.upsert_points(points[start:start + 1024]))

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.shard.update(qe.UpdateOperation.delete_points([point_id(p) for p in product_ids]))

    def get(self, product_ids: Sequence[str], with_vectors: bool = True) -> list[StoredItem]:
        if not product_ids:
            return []
        records = self.shard.retrieve([point_id(p) for p in product_ids], with_payload=True,
                                      with_vector=with_vectors)
        by_id = {r.payload["product_id"]: r for r in records}
        return [_item(by_id[p], with_vectors) for p in product_ids if p in by_id]

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None,
               with_vectors: bool = False) -> list[Hit]:
        request = qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(np.asarray(vector, np.float32).tolist()),
            filter=_filter(filters), with_payload=True, with_vector=with_vectors,
        )
        return [Hit(p.payload["product_id"], float(p.score), p.payload,
                    np.asarray(p.vector, np.float32) if with_vectors else None)
                for p in self.shard.query(request)]

    def count(self) -> int:
        return self.shard.count(qe.CountRequest(exact=True))

    def product_ids(self) -> Iterator[str]:
        offset = None
        while True:
            records, offset = self.shard.scroll(qe.ScrollRequest(
                offset=offset, limit=1024, with_payload=["product_id"], with_vector=False))
            yield from (r.payload["product_id"] for r in records)
            if offset is None:
                return

    def optimize(self) -> None:
        self.shard.optimize()
        self.shard.flush()

    def activate(self) -> None:
        """Nothing to switch: ``models/CURRENT`` names the served version's shard."""

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()


def _item(record: Any, with_vector: bool) -> StoredItem:
    vector = np.asarray(record.vector, np.float32) if with_vector else None
    return StoredItem(record.payload["product_id"], vector, record.payload)


def _filter(filters: Filters | None) -> qe.Filter | None:
    if filters is None:
        return None
    must: list[Any] = []
    if filters.category is not None:
        must.append(qe.FieldCondition("category", match=qe.MatchValue(filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(qe.FieldCondition(
            "price", range=qe.RangeFloat(gte=filters.min_price, lte=filters.max_price)))
    must_not: list[Any] = []
    # qdrant-edge 0.9 reads a Python bool as the integer 0/1, which never matches a bool
    # payload; numpy's bool_ is not an int and reaches the engine as a bool.
    out_of_stock = qe.FieldCondition("in_stock", match=qe.MatchValue(np.bool_(False)))
    if filters.in_stock is True:  # a product with no stock field counts as in stock
        must_not.append(out_of_stock)
    elif filters.in_stock is False:
        must.append(out_of_stock)
    if filters.only_new:
        must.append(qe.FieldCondition("new", match=qe.MatchValue(np.bool_(True))))
    if filters.exclude:
        must_not.append(qe.HasIdCondition({point_id(p) for p in filters.exclude}))
    if filters.only is not None:
        must.append(qe.HasIdCondition({point_id(p) for p in filters.only}))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)
