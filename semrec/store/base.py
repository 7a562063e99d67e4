"""The vector store contract every backend honours, and the records it speaks in.

Products are addressed by their string ID; backends map it to a stable Qdrant point ID
(a UUIDv5 of the product ID) and keep the product ID in the payload. Scores are cosine
similarities. What works on one backend works, with the same answers, on the others.

Each point holds its fused vector as the default (unnamed, ``""``) vector, and beside it one
named vector per modality the product has (``MODALITIES``: a product without an image has
no ``"image"`` vector), so "looks like this" is a real index search (``using="image"``) with
the same filters. A point leaves out its ``text`` vector where it equals the fused one
(``SHARED_WITH_FUSED``), and is then read and searched ``using="text"`` by its fused vector.
A collection made before the named vectors existed has only the default one
(``modalities`` empty): it serves the default search as before, and a search or get
``using`` a modality raises ``NoModalityVectors``, which says how to rebuild it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from semrec.errors import InvalidInput, UserError

#: Namespace for product-ID -> point-ID mapping. Never change it: it would orphan every index.
POINT_NAMESPACE = uuid.UUID("6f0c1d2e-7a4b-5c3d-9e8f-0a1b2c3d4e5f")

#: Payload fields with an index (filterable fast); their Qdrant schema types.
INDEXED_FIELDS = {"category": "keyword", "price": "float", "in_stock": "bool",
                  "model_version": "keyword", "new": "bool"}


#: The named per-modality vectors a point may carry beside its fused default vector ``""``.
MODALITIES = ("text", "image")

#: The modality whose named vector a point leaves out where it equals the fused vector: a
#: product without an image (and without an ID embedding) has its text vector as its fused
#: one, and a second copy would only double the write and the HNSW build (on a text-only
#: catalog that copy cost ingest 11 % more time than the encoder, issue 14). A point without
#: it is read and searched ``using`` it by its fused vector, so no caller sees the difference.
SHARED_WITH_FUSED = "text"

#: How close (per component) a ``SHARED_WITH_FUSED`` vector must be to the fused one to be
#: left out: float32 rounding of one normalisation more, never a different vector.
SAME_VECTOR_ATOL = 1e-6


class NoModalityVectors(UserError):
    """A collection built before per-modality vectors was asked for one."""

    def __init__(self, location: str, using: str) -> None:
        super().__init__(
            f"the index {location} has no per-modality ({using!r}) vectors: it was built by an "
            "older semrec; rebuild it with `semrec verify --repair` (or `semrec train`), then "
            "ask again")
        self.using = using


def check_using(using: str, modalities: Sequence[str], location: str) -> None:
    """``ValueError`` for a name that is no vector of the contract; ``NoModalityVectors``
    for a modality this collection (an old one) does not hold."""
    if using and using not in MODALITIES:
        raise ValueError(f"unknown vector {using!r}: use '' (fused) or one of {MODALITIES}")
    if using and using not in modalities:
        raise NoModalityVectors(location, using)


def present_rows(matrix: np.ndarray) -> np.ndarray:
    """Which rows of a per-modality matrix hold a vector (an all-zero row: the product
    lacks that modality, and its point gets no vector of that name)."""
    return np.any(np.asarray(matrix) != 0, axis=1)


def point_vectors(vectors: np.ndarray, by_modality: dict[str, np.ndarray] | None,
                  modalities: Sequence[str]) -> list[Any]:
    """What each point stores, in the shape both backends take: the fused vector as a list
    where the collection has no ``modalities``; otherwise ``{"": fused, name: vector}`` with
    the named vectors the product has (not an all-zero row), the ``SHARED_WITH_FUSED`` one
    only where it differs from the fused vector."""
    fused = np.asarray(vectors, dtype=np.float32)
    rows = fused.tolist()
    if not modalities:
        return rows
    named: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, matrix in (by_modality or {}).items():
        if name in modalities:
            matrix = np.asarray(matrix, np.float32)
            keep = present_rows(matrix)
            if name == SHARED_WITH_FUSED:
                keep &= ~np.all(np.abs(matrix - fused) <= SAME_VECTOR_ATOL, axis=1)
            named[name] = (matrix, keep)
    return [{"": row, **{n: m[i].tolist() for n, (m, keep) in named.items() if keep[i]}}
            for i, row in enumerate(rows)]


def wanted_vectors(with_vectors: bool, using: str, modalities: Sequence[str]) -> bool | list[str]:
    """The vector names to ask a backend for: only ``using`` (and the fused one too for
    ``SHARED_WITH_FUSED``, which a point may lack); a collection without ``modalities`` has
    one vector, asked for as ``with_vectors``."""
    if not with_vectors or not modalities:
        return with_vectors
    return ["", using] if using == SHARED_WITH_FUSED else [using]


def pick_vector(vector: Any, using: str) -> np.ndarray | None:
    """The ``using`` vector of a record as a backend returns it, float32 of unit length:
    from a dict of the names asked for, less those the point lacks, or a plain list, the
    default vector alone (Edge's answer for a point that has no other). A point without its
    ``SHARED_WITH_FUSED`` vector gives its fused one for it; None where the point has no
    vector of that name."""
    fallback = using == SHARED_WITH_FUSED
    if isinstance(vector, dict):
        vector = vector.get(using, vector.get("") if fallback else None)
    elif using and not fallback:
        vector = None
    if vector is None:
        return None
    array = np.asarray(vector, np.float32)  # qdrant-client's in-process mode keeps it as sent
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def stored_items(records: Iterable[Any], product_ids: Sequence[str], with_vectors: bool,
                 using: str) -> list[StoredItem]:
    """``StoredItem``s in ``product_ids`` order from a backend's retrieved records (each with
    ``payload`` and ``vector``); IDs without a record are skipped."""
    by_id = {r.payload["product_id"]: r for r in records}
    return [StoredItem(p, pick_vector(by_id[p].vector, using) if with_vectors else None,
                       by_id[p].payload) for p in product_ids if p in by_id]


def searches(using: str) -> list[tuple[str, str | None]]:
    """The searches that answer one ``using`` a vector name, as (name searched, name the
    points must lack): one, except for ``SHARED_WITH_FUSED``, whose points that lack it are
    searched by their fused vector. ``merge_hits`` joins the answers."""
    if using == SHARED_WITH_FUSED:
        return [(using, None), ("", using)]
    return [(using, None)]


def merge_hits(answers: Iterable[Iterable[Any]], k: int, with_vectors: bool,
               using: str) -> list[Hit]:
    """The ``k`` best ``Hit``s of searches over disjoint sets of points, best first, from a
    backend's scored points (each with ``payload``, ``score`` and ``vector``)."""
    hits = [Hit(p.payload["product_id"], float(p.score), p.payload,
                pick_vector(p.vector, using) if with_vectors else None)
            for points in answers for p in points]
    return sorted(hits, key=lambda h: -h.score)[:k]


@functools.lru_cache(maxsize=1 << 17)
def point_id(product_id: str) -> str:
    """The Qdrant point ID of a product: stable across runs, machines and backends (cached:
    a feed maps its user's whole history, and a UUIDv5 is a SHA-1)."""
    return str(uuid.uuid5(POINT_NAMESPACE, product_id))


@dataclass(frozen=True)
class Filters:
    """Constraints on results. ``exclude`` lists product IDs that must not come back;
    ``only``, when set, is the complete set of product IDs that may (an ad campaign);
    ``only_new`` keeps only products marked ``new`` (the served trained model had no
    events for them)."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    only: frozenset[str] | None = None
    only_new: bool = False

    @classmethod
    def parse(cls, category: str | None = None, min_price: float | None = None,
              max_price: float | None = None, in_stock: bool | None = None,
              exclude: Iterable[str] | None = None) -> Filters:
        """Filters from a caller's options (the CLI's and the API's alike): ``exclude``
        holds product IDs, each value possibly several separated by commas."""
        if min_price is not None and max_price is not None and min_price > max_price:
            raise InvalidInput(f"min_price ({min_price}) is above max_price ({max_price})")
        ids = frozenset(p.strip() for value in exclude or () for p in value.split(",")
                        if p.strip())
        return cls(category=category, min_price=min_price, max_price=max_price,
                   in_stock=in_stock, exclude=ids)

    def with_exclude(self, product_ids: Iterable[str]) -> Filters:
        return replace(self, exclude=self.exclude | frozenset(product_ids))

    def passes(self, payload: dict[str, Any]) -> bool:
        """Whether a product with ``payload`` meets every constraint (the stores' semantics:
        a product with no ``in_stock`` field counts as in stock, one with no price fails a
        price bound). For results that do not come from the store, e.g. popularity."""
        pid = payload.get("product_id")
        if pid in self.exclude or (self.only is not None and pid not in self.only):
            return False
        if self.category is not None and payload.get("category") != self.category:
            return False
        price = payload.get("price")
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        if self.max_price is not None and (price is None or price > self.max_price):
            return False
        if self.only_new and payload.get("new") is not True:
            return False
        out_of_stock = payload.get("in_stock") is False
        return not ((self.in_stock is True and out_of_stock)
                    or (self.in_stock is False and not out_of_stock))


@dataclass(frozen=True)
class Hit:
    product_id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None  # only when searched ``with_vectors`` (unit length)


@dataclass(frozen=True)
class StoredItem:
    product_id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


class VectorStore(Protocol):
    """One collection of product vectors (cosine)."""

    dim: int
    location: str
    #: The named per-modality vectors this collection holds: ``MODALITIES``, or () for one
    #: built before they existed (only the fused default vector).
    modalities: tuple[str, ...]

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]],
               by_modality: dict[str, np.ndarray] | None = None) -> None:
        """Insert or replace (the whole point: a named vector not given again is gone);
        visible to queries when the call returns. ``vectors`` are the fused default ones;
        ``by_modality`` maps a modality of ``MODALITIES`` to an (n, dim) matrix, an all-zero
        row where the product lacks it. A collection without ``modalities`` keeps only the
        fused vectors (it still serves; ``NoModalityVectors`` says how to rebuild it).
        A ``SHARED_WITH_FUSED`` vector equal to the fused one is not stored again."""

    def delete(self, product_ids: Sequence[str]) -> None: ...

    def get(self, product_ids: Sequence[str], with_vectors: bool = True,
            using: str = "") -> list[StoredItem]:
        """The stored items among ``product_ids``, in that order; unknown IDs are skipped.
        Each item's ``vector`` is its ``using`` vector (``""``: fused), None where the point
        has none of that name (a product without an image, for ``"image"``); a point that
        left out its ``SHARED_WITH_FUSED`` vector gives its fused one for it."""

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None,
               with_vectors: bool = False, using: str = "") -> list[Hit]:
        """The ``k`` nearest items that pass ``filters``, best first, by their ``using``
        vector (``""``: the fused one; ``"image"``: only points that have it; ``"text"``:
        every point, by its fused vector where it left its text one out); ``with_vectors``
        also returns each hit's ``using`` vector (for re-ranking without a second round trip)."""

    def count(self) -> int: ...

    def product_ids(self) -> Iterator[str]: ...

    def optimize(self) -> None:
        """Build search indexes after bulk writes (a no-op where the engine does it itself)."""

    def activate(self) -> None:
        """Make this collection the served one under the store's stable name, atomically:
        a collection alias on a server; a no-op for Edge, where ``models/CURRENT`` names the
        served version's shard. Called after a new version is fully built, never before."""

    def recreate(self) -> None:
        """Drop every point and rebuild the collection empty, with the current layout (every
        named vector of ``MODALITIES``): how an old collection gains them, after which the
        caller re-indexes the catalog (``semrec verify --repair`` does both)."""

    def close(self) -> None: ...


def read_vectors(store: VectorStore, product_ids: Sequence[str],
                 on_progress: Callable[[int], None] | None = None,
                 batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Every product's stored vector, in ``product_ids`` order (zeros, and ``present``
    False, where the store has none)."""
    index = {pid: i for i, pid in enumerate(product_ids)}
    vectors = np.zeros((len(product_ids), store.dim), np.float32)
    present = np.zeros(len(product_ids), bool)
    for start in range(0, len(product_ids), batch):
        chunk = list(product_ids[start:start + batch])
        for item in store.get(chunk, with_vectors=True):
            vectors[index[item.product_id]] = item.vector
            present[index[item.product_id]] = True
        if on_progress:
            on_progress(len(chunk))
    return vectors, present
