"""The vector store contract every backend honours, and the records it speaks in.

Products are addressed by their string ID; backends map it to a stable Qdrant point ID
(a UUIDv5 of the product ID) and keep the product ID in the payload. Scores are cosine
similarities. What works on one backend works, with the same answers, on the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: Namespace for product-ID -> point-ID mapping. Never change it: it would orphan every index.
POINT_NAMESPACE = uuid.UUID("6f0c1d2e-7a4b-5c3d-9e8f-0a1b2c3d4e5f")

#: Payload fields with an index (filterable fast); their Qdrant schema types.
INDEXED_FIELDS = {"category": "keyword", "price": "float", "in_stock": "bool",
                  "model_version": "keyword"}


def point_id(product_id: str) -> str:
    """The Qdrant point ID of a product: stable across runs, machines and backends."""
    return str(uuid.uuid5(POINT_NAMESPACE, product_id))


@dataclass(frozen=True)
class Filters:
    """Constraints on results. ``exclude`` lists product IDs that must not come back."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)

    def with_exclude(self, product_ids: Sequence[str] | set[str]) -> Filters:
        return Filters(self.category, self.min_price, self.max_price, self.in_stock,
                       self.exclude | frozenset(product_ids))


@dataclass(frozen=True)
class Hit:
    product_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredItem:
    product_id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


class VectorStore(Protocol):
    """One collection of product vectors (cosine)."""

    dim: int
    location: str

    def upsert(self, product_ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[dict[str, Any]]) -> None:
        """Insert or replace; visible to queries when the call returns."""

    def delete(self, product_ids: Sequence[str]) -> None: ...

    def get(self, product_ids: Sequence[str], with_vectors: bool = True) -> list[StoredItem]:
        """The stored items among ``product_ids``, in that order; unknown IDs are skipped."""

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        """The ``k`` nearest items that pass ``filters``, best first."""

    def count(self) -> int: ...

    def product_ids(self) -> Iterator[str]: ...

    def optimize(self) -> None:
        """Build search indexes after bulk writes (a no-op where the engine does it itself)."""

    def close(self) -> None: ...
