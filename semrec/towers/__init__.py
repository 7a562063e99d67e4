"""Item and user towers, and how a tower version is saved and loaded."""

from __future__ import annotations

from semrec.towers.item import ItemTower, ItemTowerConfig
from semrec.towers.registry import ModelManifest, ModelRegistry, VersionItems

__all__ = ["ItemTower", "ItemTowerConfig", "ModelManifest", "ModelRegistry", "VersionItems"]
