"""Frozen open_clip image encoder, returned with the preprocessing it was trained with.

Weights come from a local checkpoint file, the Hugging Face cache, or (where there is
internet and ``allow_download``) a download. When none works ``resolve_weights`` raises
``EncoderUnavailable`` quickly instead of retrying for a minute: the caller then falls back
to another encoder or indexes text only, and says so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ingest.images import to_rgb
from semrec.encoders.base import EncoderUnavailable, as_features, weights_digest

if TYPE_CHECKING:
    from PIL.Image import Image

    from semrec.config import ImageEncoderSettings

HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
FIX_HINT = (
    "set SEMREC_IMAGE__PRETRAINED to a local open_clip checkpoint file (or run once with "
    "internet so the weights are cached), then re-run `semrec ingest`: products indexed "
    "text-only get their image added"
)


class OpenClipEncoder:
    """CLIP image (and text) tower in eval mode; ``preprocess`` is its own transform."""

    modalities = frozenset({"text", "image"})

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, id: str, dim: int,
                 batch_size: int = 32) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.id = id
        self.dim = dim
        self.batch_size = batch_size

    @classmethod
    def load(cls, settings: ImageEncoderSettings, weights: str | None = None) -> OpenClipEncoder:
        """The model of ``settings`` with ``weights`` (a file or a pretrained tag; default:
        ``resolve_weights(settings)``); raises ``EncoderUnavailable``."""
        import open_clip

        register_model_config(settings)
        if weights is None:
            try:
                weights = resolve_weights(settings)
            except EncoderUnavailable as exc:
                raise EncoderUnavailable(f"{exc}; {FIX_HINT}") from None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                settings.model, pretrained=weights, device="cpu"
            )
        except Exception as exc:  # open_clip raises bare RuntimeErrors for bad weights
            raise EncoderUnavailable(
                f"open_clip could not load {settings.model!r} with weights {weights!r}: {exc}; "
                + FIX_HINT
            ) from exc
        model.eval()
        return cls(
            model, preprocess, open_clip.get_tokenizer(settings.model),
            id=open_clip_id(settings.model, settings.pretrained), dim=open_clip_dim(settings),
            batch_size=settings.batch_size,
        )

    def encode_image(self, images: Sequence[Image]) -> np.ndarray:
        """Any mode (see ``to_rgb``) and any size; a strip is cut to its middle first (see
        ``middle``), which leaves what open_clip's resize-and-centre-crop keeps."""
        import torch

        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = torch.stack([self.preprocess(middle(to_rgb(im))) for im in chunk])
                out.append(self.model.encode_image(batch).float().numpy())
        return as_features(np.concatenate(out))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            vectors = self.model.encode_text(self.tokenizer(list(texts))).float().numpy()
        return as_features(vectors)


def register_model_config(settings: ImageEncoderSettings) -> None:
    """Make a custom open_clip architecture (a JSON config file) known by its file stem."""
    if settings.model_config_file is not None:
        import open_clip

        path = Path(settings.model_config_file).expanduser()
        if not path.is_file():
            raise EncoderUnavailable(f"open_clip model config {path} does not exist")
        open_clip.add_model_config(path)


def middle(image: Image, max_ratio: float = 2.0) -> Image:
    """``image`` cut to its central part at most ``max_ratio`` times longer than wide.

    open_clip resizes the short side to the input size and keeps the central square, so this
    changes nothing it keeps, but a 40,000 x 1 strip is no longer first resized to
    8,960,000 x 224 pixels."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= max_ratio * short:
        return image
    keep = max(1, round(max_ratio * short))
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def open_clip_id(model: str, weights: str) -> str:
    """``open_clip:<model>:<weights>``: a local file by the digest of its bytes, a pretrained
    tag by the tag (open_clip pins each tag to one published file; so the id is the same
    before and after the download lands in the Hugging Face cache)."""
    path = Path(weights).expanduser()
    tag = f"sha256={weights_digest(path)}" if path.is_file() else weights
    return f"open_clip:{model}:{tag}"


def open_clip_dim(settings: ImageEncoderSettings) -> int:
    """The image feature width, read from the model's config alone (no weights needed)."""
    import open_clip

    register_model_config(settings)
    config = open_clip.get_model_config(settings.model)
    if config is None:
        raise EncoderUnavailable(f"open_clip knows no model named {settings.model!r}")
    return int(config["embed_dim"])


def resolve_weights(settings: ImageEncoderSettings) -> str:
    """A local checkpoint path, or the pretrained tag once it is known to be reachable;
    raises ``EncoderUnavailable`` saying why not (without the fix: callers add theirs)."""
    import open_clip

    path = Path(settings.pretrained).expanduser()
    if path.is_file():
        return str(path)
    pretrained = open_clip.get_pretrained_cfg(settings.model, settings.pretrained)
    if not pretrained:
        raise EncoderUnavailable(
            f"{settings.pretrained!r} is neither a file nor an open_clip pretrained tag for "
            f"{settings.model!r}"
        )
    if cached := _cached_hub_file(pretrained.get("hf_hub", "")):
        return cached
    if not settings.allow_download:
        raise EncoderUnavailable(
            f"CLIP weights {settings.model}/{settings.pretrained} are not cached and "
            "downloads are off (image.allow_download = false)"
        )
    if not _hub_reachable():
        raise EncoderUnavailable(
            f"CLIP weights {settings.model}/{settings.pretrained} are not cached and the "
            "Hugging Face hub cannot be reached"
        )
    return settings.pretrained


def _cached_hub_file(hf_hub: str) -> str | None:
    if not hf_hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id = hf_hub.rstrip("/")
    for filename in HUB_FILENAMES:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True
