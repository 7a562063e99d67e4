"""The domain records every stage shares: a product, how its image is read, and an
interaction event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from PIL.Image import Image

#: Catalog columns with a meaning of their own; every other column is an attribute.
KNOWN_FIELDS = (
    "product_id", "title", "description", "category", "brand", "price", "in_stock", "image",
)

#: Longest text each field may hold (characters), for catalog files and the API alike: an
#: enormous field is an error for its row, not a memory or latency problem downstream.
MAX_CHARS = {"product_id": 200, "title": 1000, "description": 20_000, "category": 200,
             "brand": 200, "attribute": 2000, "user_id": 200, "event": 50}


@dataclass(frozen=True)
class Product:
    """One validated catalog row.

    ``image`` is an absolute path, already resolved against the catalog file's folder, or
    an ``http(s)`` URL (``str``) when the catalog was read with URLs enabled;
    ``attributes`` holds every column that is not a known field, as strings.
    """

    product_id: str
    title: str
    description: str = ""
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    in_stock: bool | None = None
    image: Path | str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """The text the text encoder sees: title, category, brand, attributes, description."""
        parts = [self.title]
        if self.category:
            parts.append(f"Category: {self.category}")
        if self.brand:
            parts.append(f"Brand: {self.brand}")
        parts += [f"{key}: {value}" for key, value in sorted(self.attributes.items()) if value]
        if self.description:
            parts.append(self.description)
        return ". ".join(parts)

    def payload(self) -> dict[str, Any]:
        """The fields stored beside the vector (filterable in the index)."""
        payload: dict[str, Any] = {"product_id": self.product_id, "title": self.title}
        for key in ("description", "category", "brand", "price", "in_stock"):
            value = getattr(self, key)
            if value not in (None, ""):
                payload[key] = value
        if self.image is not None:
            payload["image"] = str(self.image)
        if self.attributes:
            payload["attributes"] = dict(self.attributes)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Product:
        """The product ``payload()`` was made from (an image URL stays a URL)."""
        image = payload.get("image")
        return cls(product_id=payload["product_id"], title=payload["title"],
                   description=payload.get("description", ""), category=payload.get("category"),
                   brand=payload.get("brand"), price=payload.get("price"),
                   in_stock=payload.get("in_stock"),
                   image=None if image is None else image if is_url(image) else Path(image),
                   attributes=dict(payload.get("attributes", {})))


def is_url(value: object) -> TypeGuard[str]:
    """Whether ``value`` (a product's ``image``) is an http(s) URL (any case), not a path."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class ImageSource:
    """How product images are read: ``digest(image)`` (the feature-cache key), ``check(image)``
    (the header and pixel limits only, cheap: run on every image even when no image encoder
    is available, so a shop learns of its broken images at the first ingest) and
    ``load(image)`` (an RGB image), for a ``Product.image`` (a ``Path``, or an http(s) URL as
    ``str`` when URLs are enabled). Each raises with a readable message when the file or URL
    is missing, unsafe or corrupt (``ingest.image_source`` builds the safe one)."""

    digest: Callable[[Path | str], str]
    load: Callable[[Path | str], Image]
    check: Callable[[Path | str], None] | None = None


@dataclass(frozen=True)
class Event:
    """One interaction. ``timestamp`` is seconds since the epoch, or an ordinal when the
    source only orders a user's events (both sort the same way)."""

    user_id: str
    product_id: str
    timestamp: float
    event: str = "purchase"
