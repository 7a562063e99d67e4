"""The HTTP API's request and response bodies (pydantic): validated on the way in,
documented in the OpenAPI schema at ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.values import MAX_TIMESTAMP
from semrec.catalog import MAX_CHARS, Event, Product
from semrec.serving.recommender import Campaign, Feed, Recommendation

_ID = Field(min_length=1, max_length=MAX_CHARS["product_id"], pattern=r"\S")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# -- requests ----------------------------------------------------------------------------
class ProductIn(_Body):
    """One catalog product, with the catalog file's fields and limits."""

    product_id: str = _ID
    title: str = Field(min_length=1, max_length=MAX_CHARS["title"])
    description: str = Field("", max_length=MAX_CHARS["description"])
    category: str | None = Field(None, max_length=MAX_CHARS["category"])
    brand: str | None = Field(None, max_length=MAX_CHARS["brand"])
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    in_stock: bool | None = None
    attributes: dict[Annotated[str, Field(min_length=1, max_length=200)],
                     Annotated[str, Field(max_length=MAX_CHARS["attribute"])]] = Field(
        default_factory=dict, max_length=100)
    image: str | None = Field(None, min_length=1, max_length=4096, description=(
        "An absolute path on the server, inside one of its image.allowed_roots (refused "
        "otherwise; no URLs)."))

    @field_validator("image")
    @classmethod
    def _local_absolute(cls, value: str | None) -> str | None:
        if value is not None and ("://" in value or not value.startswith("/")
                                  or "\0" in value):
            raise ValueError("must be an absolute file path on the server (no URLs)")
        return value

    def to_product(self) -> Product:
        return Product(self.product_id, self.title, self.description, self.category or None,
                       self.brand or None, self.price, self.in_stock,
                       Path(self.image) if self.image else None,
                       {k: v for k, v in self.attributes.items() if v})


class ItemsIn(_Body):
    items: list[ProductIn] = Field(min_length=1, max_length=10_000)

    @field_validator("items")
    @classmethod
    def _unique(cls, items: list[ProductIn]) -> list[ProductIn]:
        seen: set[str] = set()
        for item in items:
            if item.product_id in seen:
                raise ValueError(f"product_id {item.product_id!r} appears twice")
            seen.add(item.product_id)
        return items


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
            raise ValueError(f"{'; '.join(bad[:5])}: unknown event type (expected one of "
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
            raise ValueError("a campaign needs product_ids, or a category and/or max_price")
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


class DeletedOut(BaseModel):
    deleted: str


class ErrorOut(BaseModel):
    detail: str
