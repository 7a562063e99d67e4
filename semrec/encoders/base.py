"""The one interface every frozen encoder offers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from semrec.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image


class EncoderUnavailable(UserError, RuntimeError):
    """An encoder (its name, or its weights) could not be loaded; the message says what to
    set. A user error: a command prints it as one line."""


@runtime_checkable
class Encoder(Protocol):
    """A frozen encoder and its preprocessing.

    ``id`` names the model and weights exactly (it keys the feature cache), ``dim`` is the
    output width and ``modalities`` what it can encode. Both methods return float32
    ``(n, dim)`` arrays with L2-normalised rows; a modality the encoder lacks raises
    ``NotImplementedError``.
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
