"""semrec trained on the split's training events, evaluated through its real artifacts.

The catalog is ingested into the evaluation's data directory exactly as for the untrained
runner (features cached once, never re-encoded). Then the path ``semrec train`` takes:

1. ``semrec.training.tune`` searches training settings on the validation phase (trained on
   its training events, scored on its targets; the untrained model is candidate 0 and can
   win; the new-product boost is chosen there too, on a held-out cold group);
2. ``refit`` trains the chosen settings on the test phase's training events (validation
   targets included) for the epochs validation chose, as ALS is refit;
3. the refit model is saved as a version and every product is embedded into that version's
   own collection from the feature cache (``semrec.index.write_all``); the vectors are
   read back from the store and users come from the saved version's user tower: what
   serving would load. The version is not promoted, so the directory's served (untrained) model is
   unchanged for the other runners.

The validation metrics reported (and compared with the other semrec variants) are those of
the chosen candidate as the search trained it, on the validation phase: the refit model has
read the validation targets. When the untrained model wins, the trained variant is the
untrained one (the store's vectors, ``[user]`` pooling). Test targets are read by the
orchestrator alone, once.

Test users read their test-phase history (the validation event included), as every model
does. Histories weigh each event by its type (``dataset.event_kinds``, ``[user]
event_weights``) in the search, the refit and the scoring, as serving pools them. Cold
items were in no training sequence: they have no ID embedding and are ranked from their
content vector alone, plus the boost validation chose, as serving ranks them.

The search starts from ``[train]`` in the config (``SEMREC_TRAIN__*`` overrides), within
``--train-minutes`` (search and refit); the variant is named after it,
``semrec-trained-<user tower>[-id]``, in family ``semrec``; ``info`` says what was chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from semrec.evaluation.base import EvalContext, Fitted
from semrec.evaluation.metrics import Scorer
from semrec.evaluation.semrec_models import ItemVectors, item_vectors, user_vectors, vector_scorer
from semrec.evaluation.splits import Interactions
from semrec.index import write_all
from semrec.store import read_vectors
from semrec.towers.user import event_type_weights
from semrec.workspace import Workspace

if TYPE_CHECKING:
    from semrec.config import UserSettings
    from semrec.towers.sequential import SequentialUserTower



def _sequences(train: Interactions, n_users: int) -> list[np.ndarray]:
    offsets = train.offsets(n_users)
    return [train.items[offsets[u]:offsets[u + 1]] for u in range(n_users)]


def _weights(train: Interactions, n_users: int, event_kinds: tuple[str, ...],
             user: UserSettings) -> list[np.ndarray]:
    """Each user's event weights by type, parallel to ``_sequences``: what training pools
    with, as serving's ``history_weights`` weighs the same events."""
    offsets = train.offsets(n_users)
    flat = event_type_weights(event_kinds, user)[train.kinds]
    return [flat[offsets[u]:offsets[u + 1]] for u in range(n_users)]


def run_semrec_trained(ctx: EvalContext) -> list[Fitted]:
    from semrec.towers import ItemTowerConfig
    from semrec.training import Validation, load_home
    from semrec.training.reindex import save_version
    from semrec.training.tuning import refit, tune

    split, settings, train = ctx.split, ctx.settings, ctx.settings.train
    name = f"semrec-trained-{train.user_tower}" + ("-id" if train.id_embeddings else "")
    untrained_vectors = item_vectors(ctx)  # ingest: caches every product's features
    with Workspace(settings, role="evaluate") as ws:
        image_dim = ws.items(ws.served_version()).tower.config.image_dim
        cached, _, _ = load_home(ws.conn, image_dim)
        features = cached.select(ctx.dataset.product_ids)
        kinds = ctx.dataset.event_kinds
        valid_seqs = _sequences(split.valid.train, split.n_users)
        valid_weights = _weights(split.valid.train, split.n_users, kinds, settings.user)
        valid = Validation([valid_seqs[u] for u in split.valid.users], split.valid.targets,
                           [valid_weights[u] for u in split.valid.users])
        common = {"text_dim": features.text.shape[1], "image_dim": image_dim,
                  "text_weight": settings.tower.text_weight,
                  "image_weight": settings.tower.image_weight}
        tower = ItemTowerConfig(dim=train.dim, seed=train.seed, **common)
        untrained = ItemTowerConfig(dim=settings.tower.dim, seed=settings.tower.seed, **common)
        with ctx.stages.stage(f"{name}: tune"):
            tuned = tune(features, valid_seqs, valid, train, tower, untrained, settings.user,
                         weights=valid_weights)
        info = {"train": train.model_dump(), "chosen": tuned.chosen.name,
                "tuning": tuned.to_dict()}
        if tuned.model is None:
            return [_untrained(ctx, name, untrained_vectors, info)]
        test_seqs = _sequences(split.test.train, split.n_users)
        with ctx.stages.stage(f"{name}: refit"):
            result = refit(features, test_seqs, tuned, tower, settings.user,
                           weights=_weights(split.test.train, split.n_users, kinds,
                                            settings.user))
        assert result is not None and tuned.settings is not None
        with ctx.stages.stage(f"{name}: index", total=len(features)) as advance:
            manifest = save_version(ws, result, features.product_ids,
                                    tuned.settings.model_dump(), tuned.to_dict())
            write_all(ws, manifest.version, advance)
            vectors, present = read_vectors(ws.store(manifest.version),
                                            ctx.dataset.product_ids)
        user_tower = ws.user_tower(manifest.version)

    boost = tuned.chosen.boost * tuned.settings.temperature  # cosine units, as serving adds it
    with ctx.stages.stage(f"{name}: users"):
        test_users = _phase_users(ctx, split.test.train, vectors, getattr(
            user_tower, "module", None))
        searched = tuned.model.item_vectors(features)  # the search's model: validation unseen
        valid_users = _phase_users(ctx, split.valid.train, searched, tuned.model.user_tower)
    with ctx.stages.stage(f"{name}: validate"):
        valid_metrics = ctx.validate(_boosted(searched, valid_users, tuned.model.trained, boost),
                                     f"{name}: validate")
    bonus = np.where(result.trained, 0.0, boost).astype(np.float32) if boost > 0 else None
    info.update({"model_version": manifest.version, "user_tower": user_tower.kind,
                 "id_embeddings": tuned.settings.id_embeddings,
                 "word_embeddings": result.words is not None,
                 "chosen_train": tuned.settings.model_dump(),
                 "new_product_boost": tuned.chosen.boost,
                 "new_products": int((~result.trained).sum()), **result.metrics})
    return [Fitted(name, vector_scorer(test_users, vectors, present, bonus), family="semrec",
                   valid=valid_metrics, info=info)]


def _phase_users(ctx: EvalContext, phase_train: Interactions, vectors: np.ndarray,
                 sequential: SequentialUserTower | None) -> np.ndarray:
    """Every user's vector after ``phase_train``: the trained transformer's, else pooled."""
    split = ctx.split
    if sequential is not None:
        return sequential.user_vectors(vectors, _sequences(phase_train, split.n_users))
    return user_vectors(phase_train, split.n_users, vectors, ctx.dataset.event_kinds,
                        ctx.settings.user)


def _boosted(vectors: np.ndarray, users: np.ndarray, trained: np.ndarray,
             boost: float) -> Scorer:
    """Exact cosine ranking with ``boost`` (cosine units) added to untrained products."""
    bonus = np.where(trained, 0.0, boost).astype(np.float32) if boost > 0 else None
    return vector_scorer(users, vectors, np.ones(len(vectors), bool), bonus)


def _untrained(ctx: EvalContext, name: str, vecs: ItemVectors,
               info: dict[str, Any]) -> Fitted:
    """The untrained model won the search: the store's vectors, ``[user]`` pooling."""
    split, kinds = ctx.split, ctx.dataset.event_kinds
    valid_users = user_vectors(split.valid.train, split.n_users, vecs.vectors, kinds,
                               ctx.settings.user)
    test_users = user_vectors(split.test.train, split.n_users, vecs.vectors, kinds,
                              ctx.settings.user)
    with ctx.stages.stage(f"{name}: validate"):
        valid = ctx.validate(vector_scorer(valid_users, vecs.vectors, vecs.present),
                             f"{name}: validate")
    info.update({"model_version": vecs.model_version, "user_tower": "pooling",
                 "new_product_boost": 0.0})
    return Fitted(name, vector_scorer(test_users, vecs.vectors, vecs.present), family="semrec",
                  valid=valid, info=info)
