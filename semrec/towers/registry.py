"""Saved tower versions: ``<home>/models/<version>/`` holds ``manifest.json`` and
``item_tower.safetensors``; ``<home>/models/CURRENT`` names the version being served.

A version rebuilds from disk with no code changes, and every indexed vector carries the
version that made it. Switching versions is one atomic rename of ``CURRENT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from safetensors.torch import load_file, save_file

from semrec.config import FeedSettings
from semrec.towers.item import ItemTower, ItemTowerConfig, add_terms
from semrec.towers.words import WordTable

MANIFEST = "manifest.json"
WEIGHTS = "item_tower.safetensors"
#: The ID embedding table among a version's tensors, and the product order of its rows.
ID_TENSOR = "item_ids.weight"
ID_PRODUCTS = "id_products.json"
#: The products a trained version had training events for.
TRAINED_PRODUCTS = "trained_products.json"
#: The learnt word vectors among a version's tensors, and the word of each row.
WORD_TENSOR = "item_words.weight"
WORDS = "words.json"


@dataclass(frozen=True)
class ModelManifest:
    version: str
    kind: str  # "init" (untrained, orthogonal heads) or "trained"
    created: float
    item_tower: dict[str, Any]
    encoders: dict[str, str]  # {"text": model name, "image": "model/pretrained"}
    user_tower: dict[str, Any] = field(default_factory=lambda: {"pooling": "config"})
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    def cosine_boost(self, feed: FeedSettings) -> float:
        """What feeds add to the score of a product new to this version, in cosine units:
        its training temperature times the boost its training chose on validation (else
        ``[feed] new_product_boost``); 0 for a version never trained."""
        if self.kind != "trained":
            return 0.0
        chosen = self.metrics.get("new_product_boost")
        if chosen is not None:
            feed = feed.model_copy(update={"new_product_boost": chosen})
        return feed.cosine_boost(float(self.metrics["train"]["temperature"]))


@dataclass(frozen=True)
class VersionItems:
    """What makes a product's indexed point under one version: its item tower over the
    cached features, plus the product's ID embedding and its words' learnt vectors where
    the version has them (``towers/words.py``), and which products the version was trained
    on (``trained`` None: never trained; any product not in it is ``new`` to the version)."""

    version: str
    tower: ItemTower
    ids: dict[str, np.ndarray] | None = None
    trained: frozenset[str] | None = None
    words: WordTable | None = None

    def vectors(self, product_ids: Sequence[str], content: np.ndarray,
                words: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """The indexed vectors of ``product_ids`` from their tower vectors ``content`` and
        their ``words`` (``product_words``; needed where the version learnt words)."""
        if self.ids is None and self.words is None:
            return content
        ids = None
        if self.ids is not None:
            zero = np.zeros(content.shape[1], np.float32)
            ids = np.stack([self.ids.get(pid, zero) for pid in product_ids])
        return add_terms(content, ids, None if self.words is None else self.words.vectors(words))


class Servable(Protocol):
    """What promotion needs of a version's built index: a store that can become the served
    collection under the store's stable name (``VectorStore.activate``)."""

    def activate(self) -> None: ...


class ModelRegistry:
    """The versions saved under ``root``, which one is served, and how serving switches."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def current_version(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.is_file() else None

    def save(self, tower: ItemTower, kind: str, encoders: dict[str, str],
             user_tower: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
             extra_tensors: dict[str, Any] | None = None) -> ModelManifest:
        """Write a new version (not yet current) and return its manifest."""
        tensors = {f"item.{k}": v.detach().contiguous() for k, v in tower.state_dict().items()}
        tensors.update(extra_tensors or {})
        digest = hashlib.sha256()
        for key in sorted(tensors):
            digest.update(key.encode())
            digest.update(tensors[key].numpy().tobytes())
        created = time.time()
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(created))
        version = f"{kind}-{stamp}-{digest.hexdigest()[:8]}"
        manifest = ModelManifest(
            version=version, kind=kind, created=created, item_tower=tower.config.to_dict(),
            encoders=encoders, user_tower=user_tower or {"pooling": "config"},
            metrics=metrics or {},
        )
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, folder / WEIGHTS)
        (folder / MANIFEST).write_text(manifest.to_json())
        return manifest

    def manifest(self, version: str) -> ModelManifest:
        path = self.root / version / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"model version {version!r} not found under {self.root}")
        return ModelManifest(**json.loads(path.read_text()))

    def load(self, version: str) -> tuple[ItemTower, ModelManifest, dict[str, Any]]:
        """The item tower of ``version``, its manifest, and any other saved tensors."""
        manifest = self.manifest(version)
        tensors = load_file(self.root / version / WEIGHTS)
        tower = ItemTower(ItemTowerConfig(**manifest.item_tower))
        tower.load_saved({k[5:]: v for k, v in tensors.items() if k.startswith("item.")})
        tower.eval()
        extra = {k: v for k, v in tensors.items() if not k.startswith("item.")}
        return tower, manifest, extra

    def save_products(self, version: str, trained: list[str],
                      id_rows: list[str] | None = None, words: list[str] | None = None) -> None:
        """Record the products ``version`` had training events for (every other product is
        ``new`` to it) and, for a version with an ID table (``ID_TENSOR``), the product of
        each of its rows; with a word table (``WORD_TENSOR``), the word of each row."""
        (self.root / version / TRAINED_PRODUCTS).write_text(json.dumps(sorted(trained)))
        if id_rows is not None:
            (self.root / version / ID_PRODUCTS).write_text(json.dumps(id_rows))
        if words is not None:
            (self.root / version / WORDS).write_text(json.dumps(words, ensure_ascii=False))

    def trained_products(self, version: str) -> frozenset[str] | None:
        """The products ``version`` was trained on; None for a version never trained."""
        path = self.root / version / TRAINED_PRODUCTS
        return frozenset(json.loads(path.read_text())) if path.is_file() else None

    def items(self, version: str) -> VersionItems:
        """``version``'s tower, ID table, word table and trained products, as indexing
        uses them."""
        tower, _, extra = self.load(version)
        ids = words = None
        if ID_TENSOR in extra:
            order = json.loads((self.root / version / ID_PRODUCTS).read_text())
            table = extra[ID_TENSOR].numpy()
            ids = {pid: table[i] for i, pid in enumerate(order) if table[i].any()}
        if WORD_TENSOR in extra:
            words = WordTable(json.loads((self.root / version / WORDS).read_text()),
                              extra[WORD_TENSOR].numpy())
        return VersionItems(version, tower, ids, self.trained_products(version), words)

    def promote(self, version: str, index: Servable | None = None) -> None:
        """Serve ``version``, whose ``index`` is fully built: the store's served alias
        moves first (a no-op on Qdrant Edge), then ``CURRENT``; both atomic, so readers
        never see a partial index. Processes that have the old version open follow
        ``CURRENT`` (``current_version``)."""
        self.manifest(version)  # must exist
        if index is not None:
            index.activate()
        tmp = self.root / f"CURRENT.{os.getpid()}.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "CURRENT")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())
