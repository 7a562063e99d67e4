"""Embedded store: Qdrant Edge (the Qdrant engine in-process, HNSW) on local disk.

One process owns a shard at a time (Edge locks it); ``Home.lock`` turns a second opener
into a clear error before Edge's own ``WouldBlock``.

A shard holds the fused default vector and the named ``MODALITIES`` vectors (a point's
``text`` one only where it differs from the fused one: ``SHARED_WITH_FUSED``; a search by
text is then one batch of two searches, see ``base.searches``). Edge refuses to
load a shard under a config whose vector names differ from its own, and cannot add a vector
to a shard, so a shard made before the named vectors is loaded as it is (``modalities`` ())
and keeps serving the default search until ``recreate`` rebuilds it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from semrec.faults import failpoint
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

_SCHEMA = {"keyword": qe.PayloadSchemaType.Keyword, "float": qe.PayloadSchemaType.Float,
           "bool": qe.PayloadSchemaType.Bool}


class EdgeStore:
    def __init__(self, shard: qe.EdgeShard, path: Path, dim: int,
                 modalities: tuple[str, ...] = MODALITIES) -> None:
        self.shard = shard
        self.dim = dim
        self.location = f"edge://{path}"
        self.path = path
        self.modalities = modalities

    @classmethod
    def open(cls, path: Path, dim: int) -> EdgeStore:
        """Load the shard at ``path``, creating it if absent; either way with every payload
        index of ``INDEXED_FIELDS`` (a crash right after creating a shard left it without
        some: they are added on the next open). Edge replays its WAL on load, so writes
        acknowledged before a SIGKILL are there. A shard made before the named vectors
        opens with ``modalities`` () (Edge would refuse it the new config)."""
        modalities = MODALITIES
        if (path / "edge_config.json").exists() or (path / "segments").is_dir():
            try:
                shard = qe.EdgeShard.load(str(path), _config(dim, MODALITIES))
            except Exception as exc:  # qdrant-edge raises a bare Exception
                if "incompatible" not in str(exc).lower():
                    raise
                modalities = ()
                shard = qe.EdgeShard.load(str(path), _config(dim, modalities))
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(path), _config(dim, MODALITIES))
            failpoint("edge:created")
        _index_payload(shard)
        return cls(shard, path, dim, modalities)

    def recreate(self) -> None:
        """Close and delete the shard, and create it empty with every named vector."""
        self.shard.close()
        shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self.shard = qe.EdgeShard.create(str(self.path), _config(self.dim, MODALITIES))
        _index_payload(self.shard)
        self.modalities = MODALITIES

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]],
               by_modality: dict[str, np.ndarray] | None = None) -> None:
        points = [qe.Point(point_id(pid), vector, payload) for pid, vector, payload in zip(
            product_ids, point_vectors(vectors, by_modality, self.modalities), payloads,
            strict=True)]
        for start in range(0, len(points), 1024):
            self.shard.update(qe.UpdateOperation.upsert_points(points[start:start + 1024]))

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.shard.update(qe.UpdateOperation.delete_points([point_id(p) for p in product_ids]))

    def get(self, product_ids: Sequence[str], with_vectors: bool = True,
            using: str = "") -> list[StoredItem]:
        check_using(using, self.modalities, self.location)
        if not product_ids:
            return []
        records = self.shard.retrieve(
            [point_id(p) for p in product_ids], with_payload=True,
            with_vector=wanted_vectors(with_vectors, using, self.modalities))
        return stored_items(records, product_ids, with_vectors, using)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None,
               with_vectors: bool = False, using: str = "") -> list[Hit]:
        check_using(using, self.modalities, self.location)
        query = np.asarray(vector, np.float32).tolist()
        requests = [qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(query, using=name or None),
            filter=_filter(filters, lacks), with_payload=True,
            with_vector=wanted_vectors(with_vectors, name, self.modalities),
        ) for name, lacks in searches(using)]
        answers = (self.shard.query_batch(qe.QueryBatchRequest(requests)) if len(requests) > 1
                   else [self.shard.query(requests[0])])
        return merge_hits(answers, k, with_vectors, using)

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


def _config(dim: int, modalities: Sequence[str]) -> qe.EdgeConfig:
    params = {name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
              for name in ("", *modalities)}
    return qe.EdgeConfig(vectors=params)


def _index_payload(shard: qe.EdgeShard) -> None:
    have = set(shard.info().payload_schema)
    for name, kind in INDEXED_FIELDS.items():
        if name not in have:
            shard.update(qe.UpdateOperation.create_field_index(name, _SCHEMA[kind]))


def _filter(filters: Filters | None, lacks: str | None = None) -> qe.Filter | None:
    """Edge's filter for ``filters``, and for points without the vector named ``lacks``."""
    must_not: list[Any] = [qe.HasVectorCondition(lacks)] if lacks else []
    if filters is None:
        return qe.Filter(must_not=must_not) if must_not else None
    must: list[Any] = []
    if filters.category is not None:
        must.append(qe.FieldCondition("category", match=qe.MatchValue(filters.category)))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(qe.FieldCondition(
            "price", range=qe.RangeFloat(gte=filters.min_price, lte=filters.max_price)))
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
