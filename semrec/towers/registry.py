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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from semrec.towers.item import ItemTower, ItemTowerConfig

MANIFEST = "manifest.json"
WEIGHTS = "item_tower.safetensors"


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


class ModelRegistry:
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
        tower.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("item.")})
        tower.eval()
        extra = {k: v for k, v in tensors.items() if not k.startswith("item.")}
        return tower, manifest, extra

    def promote(self, version: str) -> None:
        """Make ``version`` current, atomically."""
        self.manifest(version)  # must exist
        tmp = self.root / "CURRENT.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "CURRENT")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())
