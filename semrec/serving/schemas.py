"""The HTTP API's request and response bodies (pydantic): validated on the way in,
documented in the OpenAPI schema at ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from ingest.sources import Record
from ingest.values import MAX_TIMESTAMP
from semrec.catalog import MAX_CHARS, Event
from semrec.errors import InvalidInput
from semrec.serving.recommender import Campaign, Feed, Recommendation

_ID = Field(min_length=1, max_length=MAX_CHARS["product_id"], pattern=r"\S")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -- requests ----------------------------------------------------------------------------
#: Products per ``PUT /items`` call at most.
MAX_ITEMS = 10_000
ITEMS_SHAPE = ('a JSON object: one product as a catalog JSONL line holds it '
               '({"product_id": ..., "title": ..., "price": ..., any other field becomes an '
               'attribute}), or {"items": [product, ...]} with 1 to 10000 products')


def catalog_records(body: object) -> list[Record]:
    """The products of a ``PUT /items`` body, as the records a JSONL catalog file holds:
    one product object, or ``{"items": [...]}``. ``InvalidInput`` naming the expected shape
    otherwise."""
    items = body["items"] if isinstance(body, dict) and set(body) == {"items"} else [body]
    if (not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS
            or not all(isinstance(item, dict) for item in items)):
        raise InvalidInput(f"expected {ITEMS_SHAPE}")
    return [Record(i, item) for i, item in enumerate(items)]


class EventIn(_Body):
    user_id: str = _ID
    product_id: str = _ID
    event: str = Field("purchase", min_length=1, max_length=MAX_CHARS["event"])
    timestamp: float | None = Field(
        None, ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False,
        description="Seconds since the epoch (up to 2100-01-01); default: now.")

    def to_event(self, now: float) -> Event:
        return Event(self.user_id, self.product_id,
                     self.timestamp if self.timestamp is not None else now, self.event.lower())


class EventsIn(_Body):
    events: list[EventIn] = Field(min_length=1, max_length=100_000)

    def check_types(self, known: set[str]) -> None:
        """Raises ValueError naming each event whose type the configuration does not know."""
        bad = [f"events.{i}.event: {e.event!r}" for i, e in enumerate(self.events)
               if e.event.lower() not in known]
        if bad:
            raise InvalidInput(f"{'; '.join(bad[:5])}: unknown event type (expected one of "
                             f"{', '.join(sorted(known))})")

    def to_events(self) -> list[Event]:
        now = time.time()
        return [e.to_event(now) for e in self.events]


class CampaignIn(_Body):
    """Either ``product_ids``, or ``category`` and/or ``max_price``, and the slot count."""

    slots: int = Field(ge=1, le=100)
    product_ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    category: str | None = None
    max_price: float | None = Field(None, ge=0, allow_inf_nan=False)

    def to_campaign(self) -> Campaign:
        if self.product_ids is None and self.category is None and self.max_price is None:
            raise InvalidInput("a campaign needs product_ids, or a category and/or max_price")
        ids = tuple(dict.fromkeys(p.strip() for p in self.product_ids or () if p.strip()))
        return Campaign(self.slots, ids if self.product_ids is not None else None,
                        self.category, self.max_price)


# -- responses ---------------------------------------------------------------------------
class ItemOut(BaseModel):
    """One result: the product's payload fields (category, price, ...) come along too."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    score: float
    title: str
    source: str = Field(description="similar, history (personalised) or popular")
    because: str | None = Field(None, description="Feed: the history product that "
                                                  "contributed most to this item.")
    image_url: str | None = Field(None, description=(
        "The product's image on this server (GET it); null without an image."))

    @classmethod
    def of(cls, item: Recommendation) -> ItemOut:
        return cls(**public_fields(item.product_id, item.to_dict()))


def image_url(product_id: str) -> str:
    """The URL path of a product's image endpoint (``GET /items/{id}/image``)."""
    return f"/items/{quote(product_id, safe='')}/image"


def public_fields(product_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a client may see them: the image's location on the server's disk (or
    its source URL) replaced by ``image_url``."""
    out = {k: v for k, v in fields.items() if k != "image"}
    out["image_url"] = image_url(product_id) if fields.get("image") else None
    return out


class SimilarOut(BaseModel):
    product_id: str
    items: list[ItemOut]


class FeedOut(BaseModel):
    user_id: str
    personalised: bool = Field(description="False: no history, so popular products.")
    history_size: int
    items: list[ItemOut]

    @classmethod
    def of(cls, feed: Feed) -> FeedOut:
        return cls(user_id=feed.user_id, personalised=feed.personalised,
                   history_size=feed.history_size, items=[ItemOut.of(i) for i in feed.items])


class EventsOut(BaseModel):
    inserted: int
    duplicates: int
    unknown_products: list[str]


class ImageErrorOut(BaseModel):
    product_id: str
    reason: str


class ItemsOut(BaseModel):
    added: int
    updated: int
    unchanged: int
    products: int
    model_version: str
    image_errors: list[ImageErrorOut] = Field(
        default_factory=list, description="Products indexed from text alone, and why.")
    fields_left_out: list[str] = Field(
        default_factory=list, description="Bad optional fields: each product was indexed "
                                          "without the field named.")


class DeletedOut(BaseModel):
    deleted: str


class ErrorOut(BaseModel):
    detail: str
