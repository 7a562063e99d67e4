"""Frozen encoders, created by name from a registry that is data (``known.json``).

Only this subpackage imports sentence_transformers and open_clip.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semrec.encoders.base import Encoder, EncoderUnavailable, as_features
from semrec.encoders.image import OpenClipEncoder, image_dim
from semrec.encoders.text import SentenceTransformerEncoder

if TYPE_CHECKING:
    from semrec.config import ImageEncoderSettings, TextEncoderSettings

__all__ = [
    "Encoder", "EncoderUnavailable", "as_features", "create_image_encoder",
    "create_text_encoder", "image_dim", "image_encoder_id", "known_encoders", "text_dim",
    "text_encoder_id",
]


@cache
def known_encoders() -> dict[str, dict[str, Any]]:
    """The registry: encoder name -> spec (backend and where its weights live)."""
    text = resources.files("semrec.encoders").joinpath("known.json").read_text("utf-8")
    return json.loads(text)


def text_encoder_id(settings: TextEncoderSettings) -> str:
    """The feature-cache identity of the configured text encoder (known without loading)."""
    return f"sentence-transformers:{settings.model}"


def image_encoder_id(settings: ImageEncoderSettings) -> str | None:
    """The feature-cache identity of the configured image encoder; None when disabled."""
    if not settings.enabled:
        return None
    path = Path(settings.pretrained).expanduser()
    weights = f"{path.name}:{path.stat().st_size}" if path.is_file() else settings.pretrained
    return f"open_clip:{settings.model}:{weights}"


def text_dim(settings: TextEncoderSettings) -> int:
    """The text feature width: from the registry, else by loading the model."""
    spec = known_encoders().get(settings.model, {})
    return int(spec["dim"]) if "dim" in spec else create_text_encoder(settings).dim


def create_text_encoder(settings: TextEncoderSettings) -> Encoder:
    """The text encoder named in config: a registry name, or a sentence-transformers folder."""
    spec = known_encoders().get(settings.model, {"backend": "sentence-transformers"})
    if spec["backend"] != "sentence-transformers":
        raise EncoderUnavailable(f"{settings.model!r} is not a text encoder")
    encoder = SentenceTransformerEncoder.load(settings.model, spec, settings.batch_size)
    encoder.id = text_encoder_id(settings)
    return encoder


def create_image_encoder(settings: ImageEncoderSettings) -> Encoder:
    """The open_clip image encoder named in config; raises ``EncoderUnavailable``."""
    encoder = OpenClipEncoder.load(settings)
    encoder.id = image_encoder_id(settings) or encoder.id
    return encoder
