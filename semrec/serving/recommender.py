"""Queries: similar items for a product, a personalised feed for a user.

Reads only: the vector store (item vectors), the event log (histories, popularity) and
the config. The user tower pools the vectors of the user's history, so a user needs no
ID embedding and is served from their first interaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semrec.config import UserSettings
from semrec.index.base import Filters, VectorStore
from semrec.state import EventLog, ProductTable
from semrec.towers.user import history_weights, pool


class UnknownProduct(LookupError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"unknown product ID {product_id!r}: it is not in the index "
                         "(ingest it first, or check the ID)")
        self.product_id = product_id


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    score: float
    payload: dict[str, Any]
    source: str  # "similar", "history" or "popular"

    @property
    def title(self) -> str:
        return str(self.payload.get("title", ""))

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.payload.items()
                  if k not in {"product_id", "title", "model_version", "modalities"}}
        return {"product_id": self.product_id, "score": round(self.score, 6),
                "title": self.title, **fields, "source": self.source}


@dataclass(frozen=True)
class Feed:
    user_id: str
    items: list[Recommendation]
    personalised: bool  # False: no usable history, so popular products instead
    history_size: int


class Recommender:
    def __init__(self, store: VectorStore, events: EventLog, products: ProductTable,
                 user: UserSettings) -> None:
        self.store = store
        self.events = events
        self.products = products
        self.user = user

    def similar(self, product_id: str, k: int = 10,
                filters: Filters | None = None) -> list[Recommendation]:
        """The ``k`` products closest to ``product_id``, never the product itself."""
        items = self.store.get([product_id], with_vectors=True)
        if not items:
            raise UnknownProduct(product_id)
        filters = (filters or Filters()).with_exclude([product_id])
        hits = self.store.search(items[0].vector, k, filters)
        return [Recommendation(h.product_id, h.score, h.payload, "similar") for h in hits]

    def user_vector(self, user_id: str) -> tuple[np.ndarray | None, int]:
        """The pooled vector of the user's history (None without indexed history)."""
        history = self.events.history(user_id, limit=self.user.max_history)
        if not history:
            return None, 0
        stored = {s.product_id: s.vector for s in
                  self.store.get(list(dict.fromkeys(pid for pid, _, _ in history)))}
        kept = [(pid, event) for pid, _, event in history if pid in stored]
        if not kept:
            return None, 0
        vectors = np.stack([stored[pid] for pid, _ in kept])
        weights = history_weights([event for _, event in kept], self.user)
        vector = pool(vectors, weights)
        return (vector if np.any(vector) else None), len(kept)

    def feed(self, user_id: str, k: int = 10, filters: Filters | None = None) -> Feed:
        """Top ``k`` for the user, leaving out what they bought; popular items without history."""
        filters = filters or Filters()
        bought = self.events.products_with_event(user_id, self.user.bought_events)
        filters = filters.with_exclude(bought)
        vector, used = self.user_vector(user_id)
        if vector is None:
            return Feed(user_id, self.popular(k, filters), personalised=False, history_size=0)
        hits = self.store.search(vector, k, filters)
        items = [Recommendation(h.product_id, h.score, h.payload, "history") for h in hits]
        return Feed(user_id, items, personalised=True, history_size=used)

    def popular(self, k: int, filters: Filters | None = None) -> list[Recommendation]:
        """Most-interacted products passing ``filters``; score is the share of events."""
        filters = filters or Filters()
        total = max(self.events.count(), 1)
        out: list[Recommendation] = []
        fetch = k * 4
        while True:
            ranked = self.events.popular(fetch, filters.category, sorted(filters.exclude))
            rows = self.products.get_many(pid for pid, _ in ranked)
            out = [Recommendation(pid, n / total, rows[pid].payload, "popular")
                   for pid, n in ranked if pid in rows and _passes(rows[pid].payload, filters)]
            if len(out) >= k or len(ranked) < fetch:
                return out[:k]
            fetch *= 4


def _passes(payload: dict[str, Any], f: Filters) -> bool:
    price = payload.get("price")
    if f.min_price is not None and (price is None or price < f.min_price):
        return False
    if f.max_price is not None and (price is None or price > f.max_price):
        return False
    if f.in_stock is True and payload.get("in_stock") is False:
        return False
    return not (f.in_stock is False and payload.get("in_stock") is not False)
