"""Queries: similar items for a product, a personalised feed for a user, an ad slate.

Reads only: the vector store (item vectors), the event log (histories, popularity) and
the config. The user tower pools the vectors of the user's history, so a user needs no
ID embedding and is served from their first interaction. Business rules (filters,
exclusions, diversity) are applied here, the same for every store backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from semrec.config import UserSettings
from semrec.errors import InvalidInput, UserError
from semrec.serving.rerank import because, mmr, pool_size
from semrec.state import EventLog, ProductTable
from semrec.store.base import Filters, Hit, NoModalityVectors, VectorStore
from semrec.towers.user import PoolingUserTower, UserTower
from semrec.workspace import Workspace

#: How much an ad slate is diversified across its slots (MMR, 0 = pure relevance).
AD_DIVERSITY = 0.3


class UnknownProduct(UserError, LookupError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"unknown product ID {product_id!r}: it is not in the index "
                         "(ingest it first, or check the ID)")
        self.product_id = product_id


#: ``similar``'s ``by``: which of a product's vectors finds its neighbours ("both": fused).
SIMILAR_BY = {"both": "", "text": "text", "image": "image"}


class NoSuchModality(UserError, LookupError):
    """``similar --by image`` for a product that has no image (so nothing to look like)."""

    def __init__(self, product_id: str, by: str) -> None:
        super().__init__(f"product {product_id!r} has no {by}: it was indexed without one, so "
                         f"nothing can be similar to it by {by} (ask by text or both, or "
                         f"ingest it again with an {by})")
        self.product_id = product_id


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    score: float
    payload: dict[str, Any]
    source: str  # "similar", "history" or "popular"
    because: str | None = None  # feed: the history product that contributed most

    @property
    def title(self) -> str:
        return str(self.payload.get("title", ""))

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.payload.items()
                  if k not in {"product_id", "title", "model_version", "modalities", "new"}}
        out = {"product_id": self.product_id, "score": round(self.score, 6),
               "title": self.title, **fields, "source": self.source}
        if self.because is not None:
            out["because"] = self.because
        return out


@dataclass(frozen=True)
class Feed:
    user_id: str
    items: list[Recommendation]
    personalised: bool  # False: no usable history, so popular products instead
    history_size: int


@dataclass(frozen=True)
class SearchResult:
    query: str
    items: list[Recommendation]
    user_id: str | None = None
    personalised: bool = False  # True: re-ranked with the user's vector


@dataclass(frozen=True)
class Campaign:
    """The products an ad may show: a list of IDs, or a category and/or a price cap."""

    slots: int
    product_ids: tuple[str, ...] | None = None
    category: str | None = None
    max_price: float | None = None

    def filters(self) -> Filters:
        """Campaign membership plus the rule that an ad is never out of stock."""
        only = frozenset(self.product_ids) if self.product_ids is not None else None
        return Filters(category=self.category, max_price=self.max_price, in_stock=True,
                       only=only)


@dataclass(frozen=True)
class _History:
    product_ids: list[str]  # one per event, oldest first
    vectors: np.ndarray
    events: list[str]  # each event's type
    user: np.ndarray  # the user tower's vector of this history

    def vector(self) -> np.ndarray | None:
        return self.user if np.any(self.user) else None


class Recommender:
    def __init__(self, store: VectorStore, events: EventLog, products: ProductTable,
                 user: UserSettings, user_tower: UserTower | None = None,
                 new_boost: float = 0.0) -> None:
        self.store = store
        self.events = events
        self.products = products
        self.user = user
        #: The served version's user tower: pooling, or the trained sequential model.
        self.user_tower = user_tower or PoolingUserTower(user)
        #: Added to the score of products marked ``new`` in feeds and ads (cosine units).
        self.new_boost = new_boost

    def similar(self, product_id: str, k: int = 10, filters: Filters | None = None,
                diversity: float = 0.0, by: str = "both") -> list[Recommendation]:
        """The ``k`` products closest to ``product_id``, never the product itself;
        ``diversity`` > 0 re-ranks a larger candidate pool with MMR. ``by`` picks the space:
        ``both`` the fused vector, ``text`` or ``image`` that modality's own vector (the
        product's as the query, searched among the products that have one: "looks like
        this"). ``NoSuchModality`` for ``by="image"`` on a product without an image."""
        if by not in SIMILAR_BY:
            raise InvalidInput(f"by must be one of {', '.join(SIMILAR_BY)}, got {by!r}")
        using = SIMILAR_BY[by]
        items = self.store.get([product_id], with_vectors=True, using=using)
        if not items:
            raise UnknownProduct(product_id)
        vector = items[0].vector
        if vector is None:
            if using in items[0].payload.get("modalities", ()):  # written without them
                raise NoModalityVectors(self.store.location, using)
            raise NoSuchModality(product_id, by)
        filters = (filters or Filters()).with_exclude([product_id])
        hits = self._search(vector, k, filters, diversity, using)
        return [Recommendation(h.product_id, h.score, h.payload, "similar") for h in hits]

    def search(self, query: str, vector: np.ndarray, k: int = 10,
               filters: Filters | None = None, diversity: float = 0.0,
               user_id: str | None = None, user_weight: float = 0.0) -> SearchResult:
        """The ``k`` products closest to a free-text query's ``vector`` (the served version's
        text side: see ``serving.search.query_vector``), filtered and diversified.

        With ``user_id`` (and history) the query's best ``pool_size(k, 1)`` matches are
        re-ranked by ``q.x + user_weight * u.x``, ``u`` the user tower's unit vector: the
        user's taste re-orders what matches the query but never brings in a product that
        does not (a blend searched over the whole index would). Bought products stay in."""
        filters = filters or Filters()
        user = self.user_vector(user_id)[0] if user_id is not None else None
        if user is None or user_weight <= 0:
            hits = self._search(vector, k, filters, diversity)
            return SearchResult(query, [Recommendation(h.product_id, h.score, h.payload,
                                                       "search") for h in hits], user_id)
        _check_diversity(diversity)
        hits = self.store.search(vector, pool_size(k, 1.0), filters, with_vectors=True)
        if not hits:
            return SearchResult(query, [], user_id, personalised=True)
        stacked = np.stack([h.vector for h in hits])
        unit = user / max(float(np.linalg.norm(user)), 1e-12)
        scores = np.array([h.score for h in hits]) + user_weight * (stacked @ unit)
        picks = mmr(scores, stacked, k, diversity)
        return SearchResult(query, [Recommendation(hits[i].product_id, float(scores[i]),
                                                   hits[i].payload, "search") for i in picks],
                            user_id, personalised=True)

    def _search(self, vector: np.ndarray, k: int, filters: Filters,
                diversity: float, using: str = "") -> list[Hit]:
        """Top ``k`` by relevance, or MMR over ``pool_size`` candidates when diversifying
        (in the space searched: ``using``)."""
        _check_diversity(diversity)
        hits = self.store.search(vector, pool_size(k, diversity), filters,
                                 with_vectors=diversity > 0, using=using)
        if diversity <= 0:
            return hits[:k]
        if not hits:
            return []
        picks = mmr(np.array([h.score for h in hits]), np.stack([h.vector for h in hits]),
                    k, diversity)
        return [hits[i] for i in picks]

    def _history(self, user_id: str) -> _History | None:
        """The user's indexed history (events on products no longer indexed are dropped)."""
        history = self.events.history(user_id, limit=self.user.max_history)
        if not history:
            return None
        stored = {s.product_id: s.vector for s in
                  self.store.get(list(dict.fromkeys(pid for pid, _, _ in history)))}
        kept = [(pid, event) for pid, _, event in history if pid in stored]
        if not kept:
            return None
        vectors = np.stack([stored[pid] for pid, _ in kept])
        kinds = [event for _, event in kept]
        return _History([pid for pid, _ in kept], vectors, kinds,
                        self.user_tower.user_vector(vectors, kinds))

    def user_vector(self, user_id: str) -> tuple[np.ndarray | None, int]:
        """The user tower's vector of the user's history (None without indexed history)."""
        history = self._history(user_id)
        if history is None:
            return None, 0
        vector = history.vector()
        return vector, (len(history.product_ids) if vector is not None else 0)

    def feed(self, user_id: str, k: int = 10, filters: Filters | None = None,
             diversity: float = 0.0) -> Feed:
        """Top ``k`` for the user, leaving out what they bought; popular items without history.
        Each personalised item names ``because``: its strongest history product."""
        filters = filters or Filters()
        bought = self.events.products_with_event(user_id, self.user.bought_events)
        filters = filters.with_exclude(bought)
        history = self._history(user_id)
        vector = history.vector() if history is not None else None
        if history is None or vector is None:
            return Feed(user_id, self.popular(k, filters), personalised=False, history_size=0)
        items = self._personalised(history, vector, k, filters, diversity)
        return Feed(user_id, items, personalised=True, history_size=len(history.product_ids))

    def _personalised(self, history: _History, vector: np.ndarray, k: int, filters: Filters,
                      diversity: float) -> list[Recommendation]:
        _check_diversity(diversity)
        pool = pool_size(k, diversity)
        hits = self.store.search(vector, pool, filters, with_vectors=True)
        if self.new_boost > 0:
            new = self.store.search(vector, pool, replace(filters, only_new=True),
                                    with_vectors=True)
            hits = boosted(hits, new, self.new_boost)[:pool]
        if not hits:
            return []
        stacked = np.stack([h.vector for h in hits])
        picks = mmr(np.array([h.score for h in hits]), stacked, k, diversity)
        reasons = because(history.product_ids, self.user_tower.contributions(
            history.vectors, history.events, stacked[picks]))
        return [Recommendation(hits[i].product_id, hits[i].score, hits[i].payload, "history",
                               reason) for i, reason in zip(picks, reasons, strict=True)]

    def ads(self, user_id: str, campaign: Campaign,
            diversity: float = AD_DIVERSITY) -> Feed:
        """The campaign's products ranked for ``user_id`` across ``campaign.slots`` slots.

        Never an out-of-stock product or one the user bought; diversified with MMR. A user
        without history gets the campaign's most popular products, then (for a list of
        IDs) the rest of the list in its order.
        """
        feed = self.feed(user_id, campaign.slots, campaign.filters(), diversity)
        if feed.personalised or campaign.product_ids is None:
            return feed
        items = list(feed.items)
        if len(items) < campaign.slots:
            items += self._fill(campaign, user_id, {i.product_id for i in items},
                                campaign.slots - len(items))
        return Feed(user_id, items, personalised=False, history_size=0)

    def _fill(self, campaign: Campaign, user_id: str, taken: set[str],
              n: int) -> list[Recommendation]:
        """Campaign products without events, in campaign order, passing its rules."""
        bought = self.events.products_with_event(user_id, self.user.bought_events)
        rules = campaign.filters().with_exclude(bought | taken)
        rows = self.products.get_many(campaign.product_ids or ())
        return [Recommendation(pid, 0.0, rows[pid].payload, "popular")
                for pid in dict.fromkeys(campaign.product_ids or ())
                if pid in rows and rules.passes(rows[pid].payload)][:n]

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
                   for pid, n in ranked if pid in rows and filters.passes(rows[pid].payload)]
            if len(out) >= k or len(ranked) < fetch:
                return out[:k]
            fetch *= 4


def open_recommender(ws: Workspace, version: str | None = None) -> Recommender:
    """Queries on ``version`` (default: the served one), with the user tower that version
    was saved with and, for a trained version, its new-product boost (``cosine_boost``)."""
    version = version or ws.served_version()
    boost = ws.manifest(version).cosine_boost(ws.settings.feed)
    return Recommender(ws.store(version), ws.events, ws.products, ws.settings.user,
                       ws.user_tower(version), new_boost=boost)


def boosted(hits: list[Hit], new: list[Hit], boost: float) -> list[Hit]:
    """``hits`` and the best ``new`` products with ``boost`` added to their score, merged
    (a new product found by both searches counts once, boosted), best first."""
    merged = {h.product_id: h for h in hits}
    merged.update({h.product_id: replace(h, score=h.score + boost) for h in new})
    return sorted(merged.values(), key=lambda h: h.score, reverse=True)


def _check_diversity(diversity: float) -> None:
    if not 0.0 <= diversity <= 1.0:
        raise InvalidInput(f"diversity must be between 0 and 1, got {diversity}")
