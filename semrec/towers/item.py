"""The item tower: one trainable projection head per modality over frozen features,
fused into one L2-normalised vector.

    v = normalise( sum_m  w_m * normalise(W_m x_m) )      over the modalities m a product has

Heads start orthogonal, so before any training the text head is an isometry of the frozen
text space (when ``dim`` >= the text width) and similarity is already the encoder's own.
A product without an image simply has no image term: its vector is its text vector.

The fusion weights are learnt: ``w_m = configured_m * exp(fusion_m)``, ``fusion`` a
parameter that starts at zero, so an untrained tower fuses with exactly the configured
``text_weight``/``image_weight`` and training (on events) moves how much each modality
counts. Only their ratio matters where a product has both (the sum is normalised); a
configured weight of 0 stays 0. The learnt values are part of the tower's state, saved with
its version and used wherever the version embeds (ingest, re-indexing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ItemTowerConfig:
    text_dim: int
    image_dim: int
    dim: int = 384
    text_weight: float = 1.0
    image_weight: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


#: The modalities in the order of ``ItemTower.fusion``.
MODALITIES = ("text", "image")


class ItemTower(nn.Module):
    def __init__(self, config: ItemTowerConfig) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.text_head = nn.Linear(config.text_dim, config.dim, bias=False)
        self.image_head = nn.Linear(config.image_dim, config.dim, bias=False)
        for head in (self.text_head, self.image_head):
            nn.init.orthogonal_(head.weight, generator=generator)
        #: log multipliers of the configured weights, one per modality (``MODALITIES``)
        self.fusion = nn.Parameter(torch.zeros(len(MODALITIES)))
        self.register_buffer("configured", torch.tensor(
            [config.text_weight, config.image_weight], dtype=torch.float32), persistent=False)

    def weights(self) -> torch.Tensor:
        """The fusion weight of each modality (``MODALITIES``): configured times learnt."""
        return self.configured * torch.exp(self.fusion)

    def modality_weights(self) -> dict[str, float]:
        """The fusion weights by modality name, for manifests and reports."""
        return {m: round(float(w), 5) for m, w in zip(MODALITIES, self.weights().detach(),
                                                      strict=True)}

    def load_saved(self, state: dict[str, torch.Tensor]) -> None:
        """Load saved weights. A version saved before the fusion was learnt has no
        ``fusion`` tensor: it fused with the configured weights, which zero reproduces."""
        if "fusion" not in state:
            state = {**state, "fusion": torch.zeros(len(MODALITIES))}
        self.load_state_dict(state)

    def forward(self, text: torch.Tensor, image: torch.Tensor | None = None,
                has_image: torch.Tensor | None = None) -> torch.Tensor:
        """``text`` (n, text_dim); ``image`` (n, image_dim) with ``has_image`` (n,) bool."""
        weights = self.weights()
        fused = weights[0] * _normalise(self.text_head(text))
        if image is not None:
            mask = has_image.to(fused.dtype).unsqueeze(1) if has_image is not None else 1.0
            fused = fused + mask * weights[1] * _normalise(self.image_head(image))
        return _normalise(fused)

    @torch.inference_mode()
    def embed(self, text: np.ndarray, image: np.ndarray | None = None,
              has_image: np.ndarray | None = None) -> np.ndarray:
        """NumPy in, float32 (n, dim) out; the path ingest and re-indexing use."""
        self.eval()
        image_t = torch.from_numpy(np.asarray(image, np.float32)) if image is not None else None
        mask_t = torch.from_numpy(np.asarray(has_image, bool)) if has_image is not None else None
        out = self(torch.from_numpy(np.asarray(text, np.float32)), image_t, mask_t)
        return out.numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_modalities(self, text: np.ndarray, image: np.ndarray | None = None,
                         has_image: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each modality's own unit vector ``normalise(W_m x_m)``, float32 (n, dim): the
        terms the fused vector sums, for "similar by look"; the image row is zero where
        the product has no image (``image`` None: none has)."""
        self.eval()
        text_v = _normalise(self.text_head(torch.from_numpy(np.asarray(text, np.float32))))
        if image is None:
            return {"text": text_v.numpy(), "image": np.zeros_like(text_v.numpy())}
        image_v = _normalise(self.image_head(torch.from_numpy(np.asarray(image, np.float32))))
        if has_image is not None:
            image_v = image_v * torch.from_numpy(np.asarray(has_image, bool)).unsqueeze(1)
        return {"text": text_v.numpy(), "image": image_v.numpy()}


def add_terms(content: np.ndarray, *terms: np.ndarray | None) -> np.ndarray:
    """``normalise(content + sum(terms))`` row by row (float32): a product's vector under a
    trained version, its content vector plus its learnt terms (its ID embedding, its word
    term; None or a zero row leaves the content vector as it is)."""
    out = content + sum(t for t in terms if t is not None)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1, eps=1e-12)
