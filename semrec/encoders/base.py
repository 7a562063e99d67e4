"""The one interface every frozen encoder offers, and what all of them share: features as
unit rows, images as 8-bit RGB, and weights named by the digest of their bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

#: Hex digits of a weights digest kept in an encoder ``id`` (64 bits: collisions are moot).
DIGEST_CHARS = 16
_WHITE = (255, 255, 255, 255)


class EncoderUnavailable(RuntimeError):
    """An encoder's weights could not be loaded; the message says what to set."""


@runtime_checkable
class Encoder(Protocol):
    """A frozen encoder and its preprocessing.

    ``id`` names the model and weights exactly (it keys the feature cache), ``dim`` is the
    output width and ``modalities`` what it can encode. Both methods return float32
    ``(n, dim)`` arrays with L2-normalised rows; a modality the encoder lacks raises
    ``NotImplementedError``. ``encode_image`` takes PIL images of any mode and size.
    """

    id: str
    dim: int
    modalities: frozenset[str]

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_image(self, images: Sequence[Image]) -> np.ndarray: ...


def as_features(array: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous, rows L2-normalised (zero rows stay zero)."""
    array = np.asarray(array, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12))


def to_rgb(image: Image) -> Image:
    """``image`` as an 8-bit RGB image, whatever its mode.

    Transparency (RGBA, LA, PA, a palette or greyscale with a transparent colour) is
    composited onto white, as a shop shows a cut-out product. 16-bit and 32-bit integer
    greyscale (``I;16*``, ``I``) is scaled to 8 bits (Pillow's own conversion clips every
    value above 255 to white); float greyscale (``F``) is read as 0..1 when it lies there,
    else as 0..255. Every other mode (L, 1, P, CMYK, YCbCr, ...) uses Pillow's conversion.
    An RGB image is returned as it is.
    """
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _grey_to_8bit(image).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = PILImage.new("RGBA", rgba.size, _WHITE)
        return PILImage.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8bit(image: Image) -> Image:
    from PIL import Image as PILImage

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
    else:  # I;16 variants always hold 16 bits; an I image beyond 255 is taken as 16-bit
        scale = 1 / 257 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
    grey = np.nan_to_num(values * scale, nan=0.0)
    return PILImage.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")


def weights_digest(path: Path) -> str:
    """The sha256 of a weights file, or of a model folder (every file but hidden ones and
    ``*.md``, by relative path and content), shortened to ``DIGEST_CHARS`` hex digits.

    This is what an encoder ``id`` names its weights by: the same bytes give the same id
    wherever they are installed, and other bytes under the same name give another. Read
    once per process for each unchanged file (size and modification time)."""
    path = Path(path).resolve()
    if path.is_file():
        stat = path.stat()
        return _file_digest(path, stat.st_size, stat.st_mtime_ns)
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix != ".md"
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    combined = hashlib.sha256()
    for file in files:
        stat = file.stat()
        combined.update(f"{file.relative_to(path).as_posix()}\0".encode())
        combined.update(_file_digest(file, stat.st_size, stat.st_mtime_ns).encode())
    return combined.hexdigest()[:DIGEST_CHARS]


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:DIGEST_CHARS]
