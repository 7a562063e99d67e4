"""What training reads: every product's frozen features and each user's chronological
sequence of products, as integer indices into one product order.

``load_home`` reads them from a data directory's SQLite (the ``products`` rows, their cached
``text_key``/``image_key`` features, the ``events``); the evaluation builds the same objects
from a split's training events. No encoder is ever loaded here: a product whose features are
not cached is an error, not a reason to encode.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from semrec.state import FeatureCache, ProductTable


@dataclass(frozen=True)
class ItemFeatures:
    """Frozen features, one row per product: ``text`` (n, text_dim); ``image`` (n, image_dim)
    with ``has_image`` (n,) where any product has an image, else both None."""

    product_ids: list[str]
    text: np.ndarray
    image: np.ndarray | None = None
    has_image: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.product_ids)


@dataclass(frozen=True)
class Validation:
    """Held-out targets: user ``i`` has read ``histories[i]`` (oldest first) and must find
    ``targets[i]`` among all products, the history excluded."""

    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, n: int, seed: int) -> Validation:
        """At most ``n`` users, a seeded sample (all of them when there are fewer)."""
        if len(self) <= n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return Validation([self.histories[i] for i in keep], self.targets[keep])


def holdout_last(sequences: list[np.ndarray]) -> tuple[list[np.ndarray], Validation]:
    """Each sequence of 3 or more events gives its last event as the validation target (when
    it is not already in the history) and trains on the rest; shorter ones train whole."""
    train: list[np.ndarray] = []
    histories: list[np.ndarray] = []
    targets: list[int] = []
    for seq in sequences:
        if len(seq) >= 3:
            train.append(seq[:-1])
            if seq[-1] not in seq[:-1]:
                histories.append(seq[:-1])
                targets.append(int(seq[-1]))
        else:
            train.append(seq)
    return train, Validation(histories, np.asarray(targets, np.int64))


def sequences_from_arrays(users: np.ndarray, items: np.ndarray) -> list[np.ndarray]:
    """Per-user item sequences from parallel arrays already sorted by (user, time)."""
    if len(users) == 0:
        return []
    cuts = np.flatnonzero(np.diff(users)) + 1
    return [np.asarray(s, np.int64) for s in np.split(items, cuts)]


def load_home(conn: sqlite3.Connection, image_dim: int) -> tuple[ItemFeatures, list[np.ndarray]]:
    """Every indexed product's cached features, and every user's event sequence (oldest
    first; events on products not in the catalog are left out)."""
    rows = list(ProductTable(conn).all())
    if not rows:
        raise ValueError("no products indexed yet: run `semrec ingest CATALOG` first")
    text, image, has_image = FeatureCache(conn).matrix(
        [r.text_key for r in rows], [r.image_key for r in rows], image_dim)
    features = ItemFeatures([r.product_id for r in rows], text, image, has_image)
    index = {r.product_id: i for i, r in enumerate(rows)}
    users: list[int] = []
    items: list[int] = []
    user_index: dict[str, int] = {}
    query = "SELECT user_id, product_id FROM events ORDER BY user_id, ts, id"
    for user_id, product_id in conn.execute(query):
        if product_id in index:
            users.append(user_index.setdefault(user_id, len(user_index)))
            items.append(index[product_id])
    return features, sequences_from_arrays(np.asarray(users, np.int64),
                                           np.asarray(items, np.int64))
