"""The one interface every frozen encoder offers, and what all of them share: features as
unit rows, images as 8-bit RGB, and weights named by the digest of their bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from semrec.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Hex digits of a weights digest kept in an encoder ``id`` (64 bits: collisions are moot).
DIGEST_CHARS = 16


class EncoderUnavailable(UserError, RuntimeError):
    """An encoder (its name, or its weights) could not be loaded; the message says what to
    set. A user error: a command prints it as one line."""


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
