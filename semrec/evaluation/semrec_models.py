"""semrec itself, evaluated through its real pipeline.

The catalog is ingested into the evaluation's private data directory with the same
``semrec.index.ingest`` the ``ingest`` command uses (frozen encoders, feature cache,
current item tower, vector store), and the item vectors are read back from the store. A
user is the real user-tower pooling (``history_weights`` + ``pool``) of the vectors of
their training history, newest ``max_history`` events, exactly as ``Recommender.user_vector``
does.

Ranking is exact: one matrix product of user vectors with every item vector. Item and user
vectors are L2-normalised, so this is the cosine score the store ranks by; it equals an
exact (brute-force) store search over all products with the history excluded, and is far
faster than one store query per user. (The store's HNSW search is approximate; exact
ranking measures the model, not the index.)

Cold items keep their vectors: semrec scores a product from its content, so a product
nobody has bought yet is still ranked.

Untrained semrec comes in pooling variants (``semrec-mean``, ``semrec-recency``); the one
best on the validation targets is reported as ``semrec``. A trained model plugs in through
``register_model`` (see ``semrec.evaluation.models``), reusing ``item_vectors``,
``user_vectors`` and ``vector_scorer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semrec.catalog import ImageSource
from semrec.config import UserSettings
from semrec.evaluation.base import EvalContext, Fitted
from semrec.evaluation.metrics import Scorer
from semrec.evaluation.splits import Interactions
from semrec.index import ingest
from semrec.store import read_vectors
from semrec.towers.user import history_weights, pool
from semrec.workspace import Workspace


@dataclass(frozen=True)
class ItemVectors:
    """The indexed vector of every catalog product (zeros and ``present`` False where the
    store has none), and what the ingest reported."""

    vectors: np.ndarray  # float32 (n_items, dim)
    present: np.ndarray  # bool (n_items,)
    model_version: str
    ingest: dict[str, Any]


def item_vectors(ctx: EvalContext) -> ItemVectors:
    """Ingest the catalog into ``ctx.settings.home`` (encoding only what its feature cache
    lacks) and read every product's vector back from the store."""
    from ingest import image_digest, load_image

    settings = ctx.settings
    images = ImageSource(digest=image_digest,
                         load=lambda p: load_image(p, max_pixels=settings.image.max_pixels))
    products = ctx.dataset.products
    with Workspace(settings, role="evaluate") as ws:
        with ctx.stages.stage("semrec: ingest", total=len(products)) as advance:
            report = ingest(ws, products, images, on_progress=advance)
        version = report.model_version
        with ctx.stages.stage("semrec: read vectors", total=len(products)) as advance:
            vectors, present = read_vectors(ws.store(version), ctx.dataset.product_ids, advance)
    summary = {"added": report.added, "updated": report.updated, "unchanged": report.unchanged,
               "texts_encoded": report.texts_encoded, "images_encoded": report.images_encoded,
               "image_errors": len(report.image_errors), "text_only": report.image_problem,
               "seconds": {k: round(v, 2) for k, v in report.seconds.items()}}
    return ItemVectors(vectors, present, version, summary)


def user_vectors(train: Interactions, n_users: int, items: np.ndarray,
                 event_kinds: tuple[str, ...], user: UserSettings) -> np.ndarray:
    """One pooled vector per user (zeros without history), by the user tower's own code."""
    out = np.zeros((n_users, items.shape[1]), np.float32)
    offsets = train.offsets(n_users)
    for u in np.flatnonzero(np.diff(offsets)):
        lo = max(offsets[u], offsets[u + 1] - user.max_history)
        history = train.items[lo:offsets[u + 1]]
        kinds = [event_kinds[k] for k in train.kinds[lo:offsets[u + 1]]]
        out[u] = pool(items[history], history_weights(kinds, user))
    return out


def vector_scorer(users: np.ndarray, items: np.ndarray, present: np.ndarray,
                  bonus: np.ndarray | None = None) -> Scorer:
    """Exact cosine ranking of every item for each user (normalised vectors), plus each
    item's ``bonus`` where given (the feed's new-product boost)."""
    def score(batch: np.ndarray) -> np.ndarray:
        scores = users[batch] @ items.T
        if bonus is not None:
            scores += bonus
        scores[:, ~present] = -np.inf
        return scores

    return score


def pooling_variants(user: UserSettings) -> dict[str, UserSettings]:
    """The untrained variants tried: plain mean, and recency decay at the configured
    half-life."""
    return {"semrec-mean": user.model_copy(update={"pooling": "mean"}),
            "semrec-recency": user.model_copy(update={"pooling": "recency"})}


def run_semrec_untrained(ctx: EvalContext) -> list[Fitted]:
    """Frozen features, untrained tower, each pooling variant; valid picks the best."""
    vecs = item_vectors(ctx)
    split, kinds = ctx.split, ctx.dataset.event_kinds
    fitted: list[Fitted] = []
    for name, user in pooling_variants(ctx.settings.user).items():
        with ctx.stages.stage(f"{name}: pool users"):
            valid_users = user_vectors(split.valid.train, split.n_users, vecs.vectors, kinds,
                                       user)
            test_users = user_vectors(split.test.train, split.n_users, vecs.vectors, kinds,
                                      user)
        with ctx.stages.stage(f"{name}: validate"):
            valid = ctx.validate(vector_scorer(valid_users, vecs.vectors, vecs.present),
                                 f"{name}: validate")
        info = {"pooling": user.pooling, "model_version": vecs.model_version,
                "ingest": vecs.ingest}
        if user.pooling == "recency":
            info["half_life"] = user.half_life
        fitted.append(Fitted(name, vector_scorer(test_users, vecs.vectors, vecs.present),
                             family="semrec", valid=valid, info=info))
    return fitted
