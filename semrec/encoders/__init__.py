"""Frozen encoders, created by name from a registry that is data (``known.json``).

Only this subpackage imports sentence_transformers, open_clip and efficientnet_lite_pytorch.
An encoder's ``id`` (the feature-cache key prefix) names its model and its weights (by the
digest of their bytes, or an open_clip pretrained tag), so other weights never reuse
features cached for these.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ingest.images import to_rgb
from semrec.encoders.base import Encoder, EncoderUnavailable, as_features, weights_digest
from semrec.encoders.choice import ImageChoice, choose_image_encoder
from semrec.encoders.efficientnet import EfficientNetLiteEncoder
from semrec.encoders.image import OpenClipEncoder
from semrec.encoders.text import SentenceTransformerEncoder, model_folder

if TYPE_CHECKING:
    from semrec.config import ImageEncoderSettings, TextEncoderSettings

__all__ = [
    "Encoder", "EncoderUnavailable", "ImageChoice", "as_features", "choose_image_encoder",
    "create_image_encoder", "create_text_encoder", "image_dim", "image_encoder_id",
    "image_encoder_name", "known_encoders", "text_dim", "text_encoder_id", "to_rgb",
]

#: Backend name in ``known.json`` -> the class whose ``load(name, spec, batch_size)`` builds it.
IMAGE_BACKENDS = {"efficientnet-lite": EfficientNetLiteEncoder}


@cache
def known_encoders() -> dict[str, dict[str, Any]]:
    """The registry: encoder name -> spec (backend and where its weights live)."""
    text = resources.files("semrec.encoders").joinpath("known.json").read_text("utf-8")
    return json.loads(text)


def text_encoder_id(settings: TextEncoderSettings) -> str:
    """The feature-cache identity of the configured text encoder, known without loading it:
    ``sentence-transformers:<name>:sha256=<digest of the model folder>``."""
    spec = known_encoders().get(settings.model, {})
    folder = model_folder(settings.model, spec)
    return f"sentence-transformers:{settings.model}:sha256={weights_digest(folder)}"


def image_encoder_id(settings: ImageEncoderSettings) -> str | None:
    """The feature-cache identity of the image encoder that runs (model and weights; the
    fallback's when it stands in); None when images are disabled."""
    if not settings.enabled:
        return None
    return choose_image_encoder(settings).id


def image_encoder_name(settings: ImageEncoderSettings) -> str:
    """The name of the image encoder that runs: the configured model, or its fallback."""
    return choose_image_encoder(settings).model


def image_dim(settings: ImageEncoderSettings) -> int:
    """The width of the features of the image encoder that runs (no weights loaded)."""
    return choose_image_encoder(settings).dim


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
    """The image encoder that runs for ``settings`` (``choose_image_encoder``), with its own
    preprocessing; raises ``EncoderUnavailable`` when it cannot be loaded."""
    choice = choose_image_encoder(settings)
    if choice.problem is not None:
        raise EncoderUnavailable(choice.problem)
    if choice.backend != "open_clip":
        assert choice.spec is not None
        return IMAGE_BACKENDS[choice.backend].load(choice.model, choice.spec, settings.batch_size)
    encoder = OpenClipEncoder.load(settings, choice.weights)
    encoder.id = choice.id
    return encoder
