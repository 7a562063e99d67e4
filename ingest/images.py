"""Safe loading of product images: bounded size, fully decoded, RGB, clear errors; and,
when enabled, bounded downloads of http(s) image URLs."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from semrec.catalog import ImageSource, is_url

#: What transparency is composited onto: white, as a shop shows a cut-out product.
_WHITE = (255, 255, 255, 255)
#: EXIF orientation value -> the transpose that displays the image upright.
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: The only URL schemes ever fetched (and followed in redirects).
URL_SCHEMES = ("http", "https")
DEFAULT_MAX_DOWNLOAD_BYTES = 20_000_000
_CHUNK = 1 << 16


class ImageError(Exception):
    """An image file or URL that cannot be used; ``path`` and ``reason`` say which and why
    (``path`` is a ``Path``, or the URL as given)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)  # both in args, so the exception pickles
        self.path: Path | str = path if is_url(path) else Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def load_image(path: str | Path, *, max_pixels: int = 40_000_000) -> Image.Image:
    """The image at ``path`` as a fully loaded (decoded) RGB image, upright per its EXIF
    orientation; transparent areas are composited onto white. Animated images give their
    first frame.

    The pixel count (width x height) is checked against ``max_pixels`` from the header,
    before any pixel is decoded. Raises ``ImageError`` if the file is missing or unreadable,
    is not an image, is corrupt or truncated, or has more than ``max_pixels`` pixels
    (including Pillow's own decompression-bomb limit); ``ValueError`` if ``max_pixels`` < 1.
    """
    path = Path(path)
    try:
        return decode_image(path, path, max_pixels=max_pixels)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None


def decode_image(source: str | Path | IO[bytes], name: str | Path, *,
                 max_pixels: int = 40_000_000) -> Image.Image:
    """``load_image`` for a path or a binary file-like object (e.g. downloaded bytes);
    ``name`` is what an ``ImageError`` names. ``FileNotFoundError`` passes through."""
    with _opened(source, name, max_pixels) as image:
        try:
            image.load()
            return _upright_rgb(image)
        except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ...)
            raise ImageError(name, "corrupt or truncated image "
                                   f"({type(exc).__name__}: {exc})") from exc


def check_image(source: str | Path | IO[bytes], name: str | Path, *,
                max_pixels: int = 40_000_000) -> None:
    """What ``decode_image`` checks before decoding: that ``source`` is an image of a known
    format whose header is readable and within ``max_pixels`` (and Pillow's bomb limit).
    Reads the header only. Raises ``ImageError`` otherwise (also for a missing file)."""
    try:
        with _opened(source, name, max_pixels):
            pass
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None


@contextlib.contextmanager
def _opened(source: str | Path | IO[bytes], name: str | Path,
            max_pixels: int) -> Iterator[Image.Image]:
    """The image, lazily opened (its header read, no pixel decoded) and checked against
    ``max_pixels`` and Pillow's decompression-bomb limits; ``ImageError`` otherwise."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)  # lazy: reads the header only
    except FileNotFoundError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not an image, or an unsupported image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"too many pixels ({exc})") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ...) on bad data
        raise ImageError(name, f"corrupt image header ({type(exc).__name__}: {exc})") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(name, f"{width}x{height} is more than {max_pixels} pixels")
        yield image


def _upright_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image, independent of ``image``'s file (any mode: see ``to_rgb``)."""
    rgb = to_rgb(image)
    if rgb is image:
        rgb = image.copy()
    method = _UPRIGHT.get(_orientation(image))
    return rgb if method is None else rgb.transpose(method)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB image, whatever its mode.

    Transparency (RGBA, LA, PA, a palette or greyscale with a transparent colour) is
    composited onto white, as a shop shows a cut-out product. 16-bit and 32-bit integer
    greyscale (``I;16*``, ``I``) is scaled to 8 bits (Pillow's own conversion clips every
    value above 255 to white); float greyscale (``F``) is read as 0..1 when it lies there,
    else as 0..255. Every other mode (L, 1, P, CMYK, YCbCr, ...) uses Pillow's conversion.
    An RGB image is returned as it is.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _grey_to_8bit(image).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8bit(image: Image.Image) -> Image.Image:

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
    else:  # I;16 variants always hold 16 bits; an I image beyond 255 is taken as 16-bit
        scale = 1 / 257 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
    grey = np.nan_to_num(values * scale, nan=0.0)
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); a broken EXIF block counts as upright."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # unreadable EXIF must not reject a decodable image
        return 1
    return value if isinstance(value, int) else 1


def image_digest(path: str | Path) -> str:
    """The sha256 hex digest of the file's bytes (read in chunks), for use as a cache key.

    Raises ``ImageError`` if the file is missing or cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from exc


def inside_roots(path: str | Path, roots: Sequence[str | Path]) -> Path:
    """``path`` with symlinks and ``..`` resolved, if that lies under one of ``roots``
    (themselves resolved); raises ``ImageError`` otherwise. This is what keeps a catalog row
    or an API client from reading ``../../etc/passwd``, an absolute path elsewhere, or a
    symlink that points out of the catalog's folder."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
        raise ImageError(path, f"is not a usable file path ({exc})") from None
    for root in roots:
        if real.is_relative_to(Path(root).resolve()):
            return real
    raise ImageError(path, "is outside the allowed image folders (the catalog's folder and "
                           "image.allowed_roots)")


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    """Follows at most a few redirects, and only to http(s) URLs (urllib's own handler
    would follow one to ``ftp://``)."""

    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urlsplit(newurl).scheme.lower() not in URL_SCHEMES:
            raise ImageError(req.full_url, f"redirected to a non-http(s) URL ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_NoOtherSchemes)


def fetch_image(url: str, *, timeout_s: float = 10.0,
                max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> bytes:
    """The body of an ``http(s)`` GET of ``url``: at most ``max_bytes`` bytes, within about
    ``timeout_s`` seconds (each network wait, and the whole download). Redirects are followed
    to http(s) URLs only. Raises ``ImageError`` (naming the URL, with a one-line reason) for
    another scheme, a non-2xx status, a body larger than ``max_bytes``, a timeout or any
    network error."""
    if not is_url(url):
        raise ImageError(url, "only http:// and https:// URLs are fetched")
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "semrec"})
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            status = getattr(response, "status", 200)
            if not 200 <= status < 300:
                raise ImageError(url, f"HTTP {status} (expected 2xx)")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise ImageError(url, f"larger than {max_bytes} bytes ({length} announced)")
            body = bytearray()
            while chunk := response.read(min(_CHUNK, max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > max_bytes:
                    raise ImageError(url, f"larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ImageError(url, f"download took more than {timeout_s:g} s")
            return bytes(body)
    except ImageError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageError(url, f"HTTP {exc.code} {exc.reason}".rstrip()) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ImageError(url, f"timed out after {timeout_s:g} s") from None
        raise ImageError(url, f"cannot fetch ({reason})") from None
    except TimeoutError:
        raise ImageError(url, f"timed out after {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ImageError(url, f"cannot fetch ({type(exc).__name__}: {exc})") from None


class _Downloads:
    """The bytes ``digest`` fetched, kept until ``load`` takes them, so a URL is fetched once
    per ingest. Bounded (oldest dropped first): a dropped URL is simply fetched again."""

    def __init__(self, fetch: Callable[[str], bytes], max_entries: int = 2048,
                 max_bytes: int = 512 * 1024 * 1024) -> None:
        self._fetch = fetch
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # load runs in a thread pool

    def digest(self, url: str) -> str:
        data = self._fetch(url)
        with self._lock:
            self._size -= len(self._kept.pop(url, b""))
            self._kept[url] = data
            self._size += len(data)
            while self._kept and (len(self._kept) > self._max_entries
                                  or self._size > self._max_bytes):
                self._size -= len(self._kept.popitem(last=False)[1])
        return hashlib.sha256(data).hexdigest()

    def peek(self, url: str) -> bytes:
        """The bytes of ``url``, kept for a later ``take`` (fetched if not kept)."""
        with self._lock:
            data = self._kept.get(url)
        return self._fetch(url) if data is None else data

    def take(self, url: str) -> bytes:
        with self._lock:
            data = self._kept.pop(url, None)
            if data is not None:
                self._size -= len(data)
        return self._fetch(url) if data is None else data


def image_source(max_pixels: int = 40_000_000,
                 roots: Sequence[str | Path] | None = None, *, allow_urls: bool = False,
                 url_timeout_s: float = 10.0,
                 max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> ImageSource:
    """The indexing stage's view of product images: digests and bounded, safe loads.

    With ``roots``, every path is checked with ``inside_roots`` again when it is read (a
    path that was fine when the catalog was read may since have become a symlink out).
    With ``allow_urls``, an ``http(s)`` URL (a ``str`` image) is downloaded by ``digest``
    (``fetch_image``: ``url_timeout_s``, ``max_download_bytes``; the digest is the sha256 of
    the bytes) and those same bytes are decoded by ``load``, with the checks of
    ``load_image``; without it a URL is an ``ImageError``."""
    allowed = None if roots is None else tuple(roots)

    def local(path: str | Path) -> Path:
        return Path(path) if allowed is None else inside_roots(path, allowed)

    if not allow_urls:
        return ImageSource(
            digest=lambda path: image_digest(local(path)),
            load=lambda path: load_image(local(path), max_pixels=max_pixels),
            check=lambda path: check_image(local(path), path, max_pixels=max_pixels))
    downloads = _Downloads(lambda url: fetch_image(url, timeout_s=url_timeout_s,
                                                   max_bytes=max_download_bytes))

    def digest(path: str | Path) -> str:
        return downloads.digest(path) if is_url(path) else image_digest(local(path))

    def load(path: str | Path) -> Image.Image:
        if not is_url(path):
            return load_image(local(path), max_pixels=max_pixels)
        return decode_image(io.BytesIO(downloads.take(path)), path, max_pixels=max_pixels)

    def check(path: str | Path) -> None:
        if not is_url(path):
            check_image(local(path), path, max_pixels=max_pixels)
        else:
            check_image(io.BytesIO(downloads.peek(path)), path, max_pixels=max_pixels)

    return ImageSource(digest=digest, load=load, check=check)
