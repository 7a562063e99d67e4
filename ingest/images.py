"""Safe loading of product images: bounded size, fully decoded, RGB, clear errors."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from semrec.index.builder import ImageSource

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
_WHITE = (255, 255, 255, 255)


class ImageError(Exception):
    """An image file that cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)  # both in args, so the exception pickles
        self.path = Path(path)
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
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(path, f"{width}x{height} is more than {max_pixels} pixels")
                image.load()
                return _upright_rgb(image)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image, or an unsupported image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"too many pixels ({exc})") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ...) on bad data
        raise ImageError(path, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from exc


def _upright_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image, independent of ``image``'s file."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    else:
        rgb = image.convert("RGB")
    method = _UPRIGHT.get(_orientation(image))
    return rgb if method is None else rgb.transpose(method)


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


def image_source(max_pixels: int = 40_000_000,
                 roots: Sequence[str | Path] | None = None) -> ImageSource:
    """The indexing stage's view of product images: digests and bounded, safe loads.

    With ``roots``, every path is checked with ``inside_roots`` again when it is read (a
    path that was fine when the catalog was read may since have become a symlink out)."""
    from semrec.index.builder import ImageSource

    if roots is None:
        return ImageSource(digest=image_digest,
                           load=lambda path: load_image(path, max_pixels=max_pixels))
    allowed = tuple(roots)
    return ImageSource(
        digest=lambda path: image_digest(inside_roots(path, allowed)),
        load=lambda path: load_image(inside_roots(path, allowed), max_pixels=max_pixels))
