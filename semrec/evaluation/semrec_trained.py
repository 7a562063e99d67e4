"""semrec trained on the split's training events, evaluated through its real artifacts.

The catalog is ingested into the evaluation's data directory exactly as for the untrained
runner (features cached once, never re-encoded). The training core (``semrec.training.fit``)
learns from the valid phase's training sequences and stops early on the validation
targets; the model is saved as a version and every product is embedded into that version's
own collection from the feature cache (``semrec.index.write_all``), the path ``semrec train`` takes.
The vectors are read back from the store and users come from ``load_user_tower`` on the
saved version: what serving would load. The version is not promoted, so the directory's
served (untrained) model is unchanged for the other runners.

Test users read their test-phase history (the validation event included), as every model
does. Cold items were in no training sequence: they have no ID embedding and are ranked
from their content vector alone, plus the feed's new-product boost (``[feed]``), as
serving ranks them.

The variant trained is ``[train]`` in the config (``SEMREC_TRAIN__*`` overrides), named
``semrec-trained-<user tower>[-id]``, in family ``semrec``.
"""

from __future__ import annotations

import numpy as np

from semrec.evaluation.base import EvalContext, Fitted
from semrec.evaluation.semrec_models import item_vectors, user_vectors, vector_scorer
from semrec.evaluation.splits import Interactions
from semrec.index import write_all
from semrec.store import read_vectors
from semrec.workspace import Workspace


def _sequences(train: Interactions, n_users: int) -> list[np.ndarray]:
    offsets = train.offsets(n_users)
    return [train.items[offsets[u]:offsets[u + 1]] for u in range(n_users)]


def run_semrec_trained(ctx: EvalContext) -> list[Fitted]:
    from semrec.towers import ItemTowerConfig
    from semrec.training import ItemFeatures, Validation, fit, load_home
    from semrec.training.reindex import save_version

    split, settings, train = ctx.split, ctx.settings, ctx.settings.train
    name = f"semrec-trained-{train.user_tower}" + ("-id" if train.id_embeddings else "")
    item_vectors(ctx)  # ingest: caches every product's features (a no-op when done before)
    with Workspace(settings, role="evaluate") as ws:
        image_dim = ws.items(ws.served_version()).tower.config.image_dim
        cached, _ = load_home(ws.conn, image_dim)
        where = {pid: i for i, pid in enumerate(cached.product_ids)}
        order = np.array([where[pid] for pid in ctx.dataset.product_ids], np.int64)
        features = ItemFeatures(
            ctx.dataset.product_ids, cached.text[order],
            cached.image[order] if cached.image is not None else None,
            cached.has_image[order] if cached.has_image is not None else None)
        valid_seqs = _sequences(split.valid.train, split.n_users)
        valid = Validation([valid_seqs[u] for u in split.valid.users], split.valid.targets)
        tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=image_dim,
                                dim=train.dim, text_weight=settings.tower.text_weight,
                                image_weight=settings.tower.image_weight, seed=train.seed)
        with ctx.stages.stage(f"{name}: train"):
            result = fit(features, valid_seqs, train, tower, settings.user, valid=valid)
        with ctx.stages.stage(f"{name}: index", total=len(features)) as advance:
            manifest = save_version(ws, result, features.product_ids, train.model_dump())
            write_all(ws, manifest.version, advance)
            vectors, present = read_vectors(ws.store(manifest.version),
                                            ctx.dataset.product_ids)
        user_tower = ws.user_tower(manifest.version)

    def users_of(phase_train: Interactions) -> np.ndarray:
        if user_tower.kind == "sequential":
            return user_tower.module.user_vectors(vectors, _sequences(phase_train, split.n_users))
        return user_vectors(phase_train, split.n_users, vectors, ctx.dataset.event_kinds,
                            settings.user)

    with ctx.stages.stage(f"{name}: users"):
        valid_users, test_users = users_of(split.valid.train), users_of(split.test.train)
    # the feed's boost of products the model had no training events for (cold ones)
    boost = settings.feed.cosine_boost(train.temperature)
    bonus = np.where(result.trained, 0.0, boost).astype(np.float32) if boost > 0 else None
    with ctx.stages.stage(f"{name}: validate"):
        valid_metrics = ctx.validate(vector_scorer(valid_users, vectors, present, bonus),
                                     f"{name}: validate")
    info = {"model_version": manifest.version, "user_tower": user_tower.kind,
            "id_embeddings": train.id_embeddings, "train": train.model_dump(),
            "new_product_boost": settings.feed.new_product_boost,
            "new_products": int((~result.trained).sum()), **result.metrics,
            "epochs": result.epochs}
    return [Fitted(name, vector_scorer(test_users, vectors, present, bonus), family="semrec",
                   valid=valid_metrics, info=info)]
