"""Embedded store: Qdrant Edge (the Qdrant engine in-process, HNSW) on local disk.

One process owns a shard at a time (Edge locks it); ``Home.lock`` turns a second opener
into a clear error before Edge's own ``WouldBlock``.

A shard holds the fused default vector and the named ``MODALITIES`` vectors. Edge refuses to
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
    point_id,
    present_rows,
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
        vectors = np.asarray(vectors, dtype=np.float32)
        named = {m: (np.asarray(v, np.float32), present_rows(v))
                 for m, v in (by_modality or {}).items() if m in self.modalities}
        points = []
        for i, (pid, payload) in enumerate(zip(product_ids, payloads, strict=True)):
            vector: Any = vectors[i].tolist()
            if self.modalities:
                vector = {"": vector, **{m: v[i].tolist() for m, (v, has) in named.items()
                                         if has[i]}}
            points.append(qe.Point(point_id(pid), vector, payload))
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
        records = self.shard.retrieve([point_id(p) for p in product_ids], with_payload=True,
                                      with_vector=self._with(with_vectors, using))
        by_id = {r.payload["product_id"]: r for r in records}
        return [StoredItem(p, _pick(by_id[p].vector, using) if with_vectors else None,
                           by_id[p].payload) for p in product_ids if p in by_id]

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None,
               with_vectors: bool = False, using: str = "") -> list[Hit]:
        check_using(using, self.modalities, self.location)
        request = qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(np.asarray(vector, np.float32).tolist(),
                                            using=using or None),
            filter=_filter(filters), with_payload=True,
            with_vector=self._with(with_vectors, using),
        )
        return [Hit(p.payload["product_id"], float(p.score), p.payload,
                    _pick(p.vector, using) if with_vectors else None)
                for p in self.shard.query(request)]

    def _with(self, with_vectors: bool, using: str) -> bool | list[str]:
        """Ask Edge for the ``using`` vector only (a shard without named vectors has one)."""
        return [using] if with_vectors and self.modalities else with_vectors

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


def _pick(vector: Any, using: str) -> np.ndarray | None:
    """The ``using`` vector of a record: Edge gives a dict of the names asked for (without
    those the point lacks), or a plain list for the default vector."""
    if isinstance(vector, dict):
        vector = vector.get(using)
    elif using:
        vector = None
    return None if vector is None else np.asarray(vector, np.float32)


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
