"""Saving a trained version, indexing it beside the served one, and switching to it.

Every product is re-embedded from the feature cache with the new heads (no encoder runs)
into the new version's own store (``semrec.index.write_all``), which nobody else has open,
so this runs while ``semrec serve`` owns the served one. Only when that store holds every
product is it served (``serve_version``): queries keep reading the old version until then,
and whatever was ingested or deleted meanwhile is caught up before the new one answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from semrec.config import Settings
from semrec.home import Home, HomeBusy
from semrec.index import catch_up, write_all
from semrec.towers.registry import ID_TENSOR, WORD_TENSOR, ModelManifest, ModelRegistry
from semrec.towers.user import USER_PREFIX
from semrec.training.trainer import TrainResult
from semrec.workspace import Workspace


def save_version(ws: Workspace, result: TrainResult, product_ids: list[str],
                 settings: dict[str, Any], tuning: dict[str, Any] | None = None
                 ) -> ModelManifest:
    """Write ``result`` as a new (not yet served) version; returns its manifest. ``tuning``
    (``TuneResult.to_dict()``: every candidate with its validation score, the one chosen)
    goes into the manifest's metrics, and its chosen ``new_product_boost`` (nats) becomes
    the version's own, read by feeds instead of ``[feed] new_product_boost``."""
    extra: dict[str, torch.Tensor] = {}
    if result.user_tower is not None:
        extra.update({f"{USER_PREFIX}{k}": v.detach().contiguous()
                      for k, v in result.user_tower.state_dict().items()})
        user = {"kind": "sequential", "config": result.user_tower.config.to_dict()}
    else:
        user = {"kind": "pooling", "pooling": ws.settings.user.pooling,
                "half_life": ws.settings.user.half_life}
    if result.id_embeddings is not None:
        extra[ID_TENSOR] = torch.from_numpy(result.id_embeddings).contiguous()
    if result.words is not None:
        extra[WORD_TENSOR] = torch.from_numpy(result.words.table).contiguous()
    served = ws.manifest(ws.served_version())
    metrics = {**result.metrics, "train": settings, "epochs": result.epochs}
    if tuning is not None:
        metrics.update({"tuning": tuning, "new_product_boost": tuning["new_product_boost"]})
    manifest = ws.models.save(result.item_tower, kind="trained", encoders=served.encoders,
                              user_tower=user, metrics=metrics, extra_tensors=extra)
    ws.models.save_products(
        manifest.version, [pid for pid, t in zip(product_ids, result.trained, strict=True) if t],
        product_ids if result.id_embeddings is not None else None,
        result.words.words if result.words is not None else None)
    return manifest


def build_version(ws: Workspace, version: str,
                  on_progress: Callable[[int], None] | None = None) -> int:
    """Index every product with ``version`` into its own store, then close that store (a
    server may open it next). Returns the number of products indexed."""
    try:
        return write_all(ws, version, on_progress)
    finally:
        ws.close_store(version)


def serve_version(settings: Settings, version: str) -> str:
    """Serve ``version`` (fully built). As the data directory's owner: promote it, catch it
    up and say "served". While ``semrec serve`` owns it: promote ``models/CURRENT`` only;
    the server follows on its next request, catching up what it wrote meanwhile, and this
    says "handed to the running server". Another command that owns it is waited for."""
    try:
        ws = Workspace(settings, role="train")
    except HomeBusy as busy:
        if busy.role == "serve":
            ModelRegistry(Home(settings.home).models).promote(version)
            return "handed to the running server"
        ws = Workspace(settings, role="train", wait=True)
    with ws:
        ws.models.promote(version, ws.store(version))
        catch_up(ws, version)
    return "served"
