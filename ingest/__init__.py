"""Reading catalog and event files (CSV or JSONL) into validated records, and loading
product images safely.

``read_catalog``/``read_events`` return a ``ReadResult``: the good rows as
``semrec.catalog.Product``/``Event`` and a ``RowError`` per problem. ``load_image`` returns a
fully loaded RGB ``PIL.Image.Image`` or raises ``ImageError``; ``image_digest`` is the
sha256 of an image file, for use as a cache key.
"""

from __future__ import annotations

from ingest.errors import ReadResult, RowError
from ingest.images import ImageError, image_digest, image_source, load_image
from ingest.readers import read_catalog, read_events, read_products

__all__ = [
    "ImageError",
    "ReadResult",
    "RowError",
    "image_digest",
    "image_source",
    "load_image",
    "read_catalog",
    "read_events",
    "read_products",
]
