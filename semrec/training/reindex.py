"""Saving a trained version and switching queries to it.

Every product is re-embedded from the feature cache with the new heads (no encoder runs)
into the new version's own collection; only when that collection holds every product does
``Semrec.promote`` move the served alias and ``models/CURRENT``. Until then queries keep
reading the old version's collection, which is never written to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from semrec.index import VectorStore
from semrec.index.builder import embed_rows, point_payload
from semrec.towers.registry import ID_TENSOR, ModelManifest
from semrec.towers.user import USER_PREFIX
from semrec.training.trainer import TrainResult

if TYPE_CHECKING:
    from semrec.serving.context import Semrec

BATCH = 1024


def save_version(sr: Semrec, result: TrainResult, product_ids: list[str],
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
        user = {"kind": "pooling", "pooling": sr.settings.user.pooling,
                "half_life": sr.settings.user.half_life}
    if result.id_embeddings is not None:
        extra[ID_TENSOR] = torch.from_numpy(result.id_embeddings).contiguous()
    current = sr.current_model()
    if current is None:
        raise ValueError("no model yet: run `semrec ingest CATALOG` first")
    metrics = {**result.metrics, "train": settings, "epochs": result.epochs}
    if tuning is not None:
        metrics.update({"tuning": tuning, "new_product_boost": tuning["new_product_boost"]})
    manifest = sr.models.save(result.item_tower, kind="trained", encoders=current[1].encoders,
                              user_tower=user, metrics=metrics, extra_tensors=extra)
    sr.models.save_products(
        manifest.version, [pid for pid, t in zip(product_ids, result.trained, strict=True) if t],
        product_ids if result.id_embeddings is not None else None)
    return manifest


def build_index(sr: Semrec, version: str,
                on_progress: Callable[[int], None] | None = None) -> VectorStore:
    """Embed every product with ``version`` from cached features into that version's own
    collection, and return it (open, complete, not yet served)."""
    items = sr.models.items(version)
    store = sr.open_store(version, items.tower.config.dim)
    rows = list(sr.products.all())
    try:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            vectors = embed_rows(sr.features, items, batch)
            payloads = [point_payload(r, items) for r in batch]
            store.upsert([r.product_id for r in batch], vectors, payloads)
            if on_progress:
                on_progress(len(batch))
        store.optimize()
        if store.count() < len(rows):
            raise RuntimeError(f"re-index of {version} holds {store.count()} of {len(rows)} "
                               "products; not served")
    except BaseException:
        store.close()
        raise
    return store


def reindex(sr: Semrec, version: str, on_progress: Callable[[int], None] | None = None) -> int:
    """Index every product with ``version`` (``build_index``), then serve ``version``.
    Returns the number of products indexed."""
    store = build_index(sr, version, on_progress)
    try:
        sr.promote(version, store)
        sr.refresh()  # close the old version's store, if this process had it open
    finally:
        store.close()
    with sr.conn:  # after the switch: a crash before this only makes the next ingest re-embed
        sr.conn.execute("UPDATE products SET model_version = ?", (version,))
    return sr.products.count()
