"""Product images for HTTP clients: exactly the bytes a product was indexed from, or nothing.

Where an image comes from is the product's own catalog row (``ProductRow.payload["image"]``,
an absolute path resolved inside the catalog's folder at ingest, or an http(s) URL), never
the request: a client names a product ID, and an ID is only a key into the catalog. The
bytes read now must hash, with the row's payload, to the row's ``content_hash`` (the hash
ingest stored, ``index.product_hash``): a file replaced, grown, or swapped for a
symlink since ingest, or a row whose image field was edited, is refused. Reads are bounded
(``image.max_download_bytes``; regular files only; URLs through ``ingest.fetch_image``, and
only with ``image.allow_urls``), the bytes must decode as an image of at most
``image.max_pixels`` pixels, and the content type is the decoded format's. A format a
browser may not show (TIFF, ...) is re-encoded as PNG. Verified images are kept in a small
in-memory cache (a local file's is re-validated by its ``stat`` on each hit).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

from ingest.images import ImageError, fetch_image, is_url
from semrec.config import ImageEncoderSettings
from semrec.index import product_hash
from semrec.state.products import ProductRow

#: Formats every current browser displays; anything else is re-encoded as PNG.
BROWSER_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                   "WEBP": "image/webp"}
CACHE_BYTES = 64 * 1024 * 1024


class NoImage(LookupError):
    """The product has no image that may be served; the message says why (no path)."""


class ImageFetchFailed(RuntimeError):
    """The product's image URL could not be fetched just now."""


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    media_type: str
    etag: str  # a strong validator: the sha256 of ``data``


@dataclass(frozen=True)
class _Cached:
    content_hash: str
    signature: tuple[int, int, int] | None  # a local file's (inode, size, mtime_ns)
    image: ServedImage


class ProductImages:
    """Verified product images (see the module docstring). Thread-safe."""

    def __init__(self, settings: ImageEncoderSettings, cache_bytes: int = CACHE_BYTES) -> None:
        self.settings = settings
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._size = 0
        self._lock = threading.Lock()

    def get(self, row: ProductRow) -> ServedImage:
        """The image ``row`` was indexed from; ``NoImage`` if it has none or it changed."""
        pid = row.product_id
        source = row.payload.get("image")
        if not isinstance(source, str) or not source or row.image_path != source:
            raise NoImage(f"product {pid!r} has no image")
        signature = None if is_url(source) else _signature(source, pid)
        with self._lock:
            hit = self._cache.get(pid)
            if hit and hit.content_hash == row.content_hash and hit.signature == signature:
                self._cache.move_to_end(pid)
                return hit.image
        data = self._read(source, pid)
        if product_hash(row.payload, hashlib.sha256(data).hexdigest()) != row.content_hash:
            raise NoImage(f"the image of product {pid!r} is not the one it was indexed from "
                          "(changed since ingest): re-ingest the catalog")
        image = self._checked(data, pid)
        self._keep(pid, _Cached(row.content_hash, signature, image))
        return image

    def _read(self, source: str, pid: str) -> bytes:
        limit = self.settings.max_download_bytes
        if is_url(source):
            if not self.settings.allow_urls:
                raise NoImage(f"the image of product {pid!r} is a URL, and image.allow_urls "
                              "is off")
            try:
                return fetch_image(source, timeout_s=self.settings.url_timeout_s,
                                   max_bytes=limit)
            except ImageError as exc:
                raise ImageFetchFailed(f"cannot fetch the image of product {pid!r}: "
                                       f"{exc.reason}") from None
        try:  # O_NONBLOCK: a FIFO put in the file's place must not hang the reader
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            raise NoImage(f"the image of product {pid!r} is no longer readable") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise NoImage(f"the image of product {pid!r} is not a regular file")
            if info.st_size > limit:
                raise NoImage(f"the image of product {pid!r} is larger than {limit} bytes")
            return handle.read(limit + 1)

    def _checked(self, data: bytes, pid: str) -> ServedImage:
        """``data`` as served: decodable, within ``max_pixels``, in a browser format."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > self.settings.max_pixels:
                    raise NoImage(f"the image of product {pid!r} has more than "
                                  f"{self.settings.max_pixels} pixels")
                media_type = BROWSER_FORMATS.get(image.format or "")
                image.load()
                if media_type is None:
                    out = io.BytesIO()
                    image.save(out, "PNG")
                    data, media_type = out.getvalue(), "image/png"
        except NoImage:
            raise
        except Exception:  # Pillow raises many types on bad data
            raise NoImage(f"the image of product {pid!r} does not decode") from None
        return ServedImage(data, media_type, hashlib.sha256(data).hexdigest()[:32])

    def _keep(self, pid: str, entry: _Cached) -> None:
        with self._lock:
            old = self._cache.pop(pid, None)
            self._size -= len(old.image.data) if old else 0
            self._cache[pid] = entry
            self._size += len(entry.image.data)
            while self._cache and self._size > self._cache_bytes:
                self._size -= len(self._cache.popitem(last=False)[1].image.data)


def _signature(path: str, pid: str) -> tuple[int, int, int]:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        raise NoImage(f"the image of product {pid!r} is no longer readable") from None
    return info.st_ino, info.st_size, info.st_mtime_ns
