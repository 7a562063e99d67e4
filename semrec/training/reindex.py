"""Saving a trained version and switching queries to it.

Every product is re-embedded from the feature cache with the new heads (no encoder runs)
into the new version's own collection; only when that collection holds every product does
``Semrec.promote`` move the served alias and ``models/CURRENT``. Until then queries keep
reading the old version's collection, which is never written to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from semrec.index import VectorStore
from semrec.index.builder import embed_cached, point_payload
from semrec.state import ProductRow
from semrec.towers.registry import ModelManifest
from semrec.towers.user import USER_PREFIX
from semrec.training.trainer import TrainResult, add_ids

if TYPE_CHECKING:
    from semrec.serving.context import Semrec

BATCH = 1024
#: The ID embedding table among a version's tensors, and the product order of its rows.
ID_TENSOR = "item_ids.weight"
ID_PRODUCTS = "id_products.json"


def save_version(sr: Semrec, result: TrainResult, product_ids: list[str],
                 settings: dict[str, Any]) -> ModelManifest:
    """Write ``result`` as a new (not yet served) version; returns its manifest."""
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
    manifest = sr.models.save(result.item_tower, kind="trained", encoders=current[1].encoders,
                              user_tower=user, metrics={**result.metrics, "train": settings,
                                                        "epochs": result.epochs},
                              extra_tensors=extra)
    if result.id_embeddings is not None:
        (sr.models.root / manifest.version / ID_PRODUCTS).write_text(json.dumps(product_ids))
    return manifest


def build_index(sr: Semrec, version: str,
                on_progress: Callable[[int], None] | None = None) -> VectorStore:
    """Embed every product with ``version`` from cached features into that version's own
    collection, and return it (open, complete, not yet served)."""
    tower, _, extra = sr.models.load(version)
    ids = _id_rows(sr, version, extra)
    store = sr.open_store(version, tower.config.dim)
    rows = list(sr.products.all())
    try:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            vectors = _vectors(sr, tower, batch, ids)
            payloads = [point_payload(r, version) for r in batch]
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


def _vectors(sr: Semrec, tower: Any, rows: list[ProductRow],
             ids: dict[str, np.ndarray] | None) -> np.ndarray:
    vectors = embed_cached(sr.features, tower, [r.text_key for r in rows],
                           [r.image_key for r in rows])
    if ids is None:
        return vectors
    extra = np.stack([ids.get(r.product_id, np.zeros(vectors.shape[1], np.float32))
                      for r in rows])
    return add_ids(vectors, extra)


def _id_rows(sr: Semrec, version: str, extra: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if ID_TENSOR not in extra:
        return None
    product_ids = json.loads((sr.models.root / version / ID_PRODUCTS).read_text())
    table = extra[ID_TENSOR].numpy()
    return {pid: table[i] for i, pid in enumerate(product_ids)}
