"""What training reads: every product's frozen features and each user's chronological
sequence of products, as integer indices into one product order, with each event's type.

``load_home`` reads them from a data directory's SQLite (the ``products`` rows, their cached
``text_key``/``image_key`` features, the ``events``); the evaluation builds the same objects
from a split's training events. No encoder is ever loaded here: a product whose features are
not cached is an error, not a reason to encode.

Event types reach training as one float weight per event (``event_weights``: the type's
``[user] event_weights``, as serving's ``history_weights`` reads it), parallel to the item
sequences; ``None`` where a caller has no types means every event weighs the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semrec.catalog import Product
from semrec.config import UserSettings
from semrec.state import FeatureCache, ProductTable
from semrec.towers.user import event_type_weights
from semrec.towers.words import product_words


@dataclass(frozen=True)
class ItemFeatures:
    """Frozen features, one row per product: ``text`` (n, text_dim); ``image`` (n, image_dim)
    with ``has_image`` (n,) where any product has an image, else both None; ``words``, each
    product's words (``towers.words.product_words``) where known, else None."""

    product_ids: list[str]
    text: np.ndarray
    image: np.ndarray | None = None
    has_image: np.ndarray | None = None
    words: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.product_ids)

    def select(self, product_ids: Sequence[str]) -> ItemFeatures:
        """The features of ``product_ids``, in that order (every field); a ``KeyError`` names
        an ID these features do not hold."""
        where = {pid: i for i, pid in enumerate(self.product_ids)}
        rows = np.array([where[pid] for pid in product_ids], np.int64)
        return ItemFeatures(
            list(product_ids), self.text[rows],
            None if self.image is None else self.image[rows],
            None if self.has_image is None else self.has_image[rows],
            None if self.words is None else [self.words[i] for i in rows])


@dataclass(frozen=True)
class Validation:
    """Held-out targets: user ``i`` has read ``histories[i]`` (oldest first) and must find
    ``targets[i]`` among all products, the history excluded. ``weights[i]``, parallel to
    ``histories[i]``, weighs each history event by its type (None: all the same)."""

    histories: list[np.ndarray]
    targets: np.ndarray
    weights: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, n: int, seed: int) -> Validation:
        """At most ``n`` users, a seeded sample (all of them when there are fewer)."""
        if len(self) <= n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        weights = None if self.weights is None else [self.weights[i] for i in keep]
        return Validation([self.histories[i] for i in keep], self.targets[keep], weights)


#: A user needs this many events for leave-last-out to hold one out.
MIN_EVENTS = 3


def leave_last_out(users: np.ndarray, items: np.ndarray,
                   back: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Leave-last-out over events sorted by (user, time), as parallel flat arrays: the one
    home of this split (``holdout_last``, the evaluation's ``last`` split, the ablation).

    A user with ``MIN_EVENTS`` or more events has the event ``back`` places from their end
    (1: the last) as a target and trains on the events before it; a user with fewer trains
    on all of them. A target already among the user's earlier events is skipped: a product
    in the history is excluded from the ranking, so it could never be a hit.

    Returns (``train``, a mask of the events to train on; ``targets``, the indices of the
    target events kept, in user order; how many repeat targets were skipped).
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_users = int(users.max()) + 1 if len(users) else 0
    offsets = np.searchsorted(users, np.arange(n_users + 1))
    count = np.diff(offsets)[users]
    pos = np.arange(len(users)) - offsets[users]
    long = count >= MIN_EVENTS
    train = ~long | (pos < count - back)
    at = np.flatnonzero(long & (pos == count - back))
    keys = users * (int(items.max()) + 1 if len(items) else 1) + items
    new = ~np.isin(keys[at], keys[long & (pos < count - back)])
    return train, at[new], int((~new).sum())


def holdout_last(sequences: list[np.ndarray], back: int = 1,
                 weights: list[np.ndarray] | None = None
                 ) -> tuple[list[np.ndarray], list[np.ndarray] | None, Validation]:
    """``leave_last_out`` on per-user sequences: each sequence of 3 or more events gives its
    event ``back`` from the end as the validation target (when it is not already in the
    history, the events before it) and trains on those earlier events; shorter ones train
    whole. Returns (training sequences, their ``weights``, the validation users, whose
    histories carry their ``weights``); both weights None without ``weights``."""
    lengths = [len(s) for s in sequences]
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    keep, at, _ = leave_last_out(users, items, back)
    masks = split_by(keep, lengths)
    train = [s[m] for s, m in zip(sequences, masks, strict=True)]
    kept = (None if weights is None
            else [w[m] for w, m in zip(weights, masks, strict=True)])
    valid = Validation([train[u] for u in users[at]], items[at].astype(np.int64),
                       None if kept is None else [kept[u] for u in users[at]])
    return train, kept, valid


def event_weights(kinds: list[np.ndarray], user: UserSettings) -> list[np.ndarray]:
    """Each event's type weight (``[user] event_weights``, else ``default_event_weight``:
    ``towers.user.event_type_weights``, what serving pools with), one float array per
    sequence of event types."""
    if not kinds:
        return []
    types, codes = np.unique(np.concatenate(kinds), return_inverse=True)
    return split_by(event_type_weights(types.tolist(), user)[codes], [len(k) for k in kinds])


def split_by(flat: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """``flat`` cut into consecutive pieces of ``lengths`` (none for no lengths): per-user
    arrays parallel to the sequences."""
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def sequences_from_arrays(users: np.ndarray, items: np.ndarray) -> list[np.ndarray]:
    """Per-user item sequences from parallel arrays already sorted by (user, time)."""
    if len(users) == 0:
        return []
    cuts = np.flatnonzero(np.diff(users)) + 1
    return [np.asarray(s, np.int64) for s in np.split(items, cuts)]


def load_home(conn: sqlite3.Connection, image_dim: int
              ) -> tuple[ItemFeatures, list[np.ndarray], list[np.ndarray]]:
    """Every indexed product's cached features, every user's event sequence (oldest first,
    as serving reads a history; events on products not in the catalog are left out) and,
    parallel to it, each event's type (``event_weights`` turns them into weights)."""
    rows = list(ProductTable(conn).all())
    if not rows:
        raise ValueError("no products indexed yet: run `semrec ingest CATALOG` first")
    text, image, has_image = FeatureCache(conn).matrix(
        [r.text_key for r in rows], [r.image_key for r in rows], image_dim)
    words = [product_words(Product.from_payload(r.payload)) for r in rows]
    features = ItemFeatures([r.product_id for r in rows], text, image, has_image, words)
    index = {r.product_id: i for i, r in enumerate(rows)}
    users: list[int] = []
    items: list[int] = []
    kinds: list[str] = []
    user_index: dict[str, int] = {}
    query = "SELECT user_id, product_id, event FROM events ORDER BY user_id, ts, id"
    for user_id, product_id, event in conn.execute(query):
        if product_id in index:
            users.append(user_index.setdefault(user_id, len(user_index)))
            items.append(index[product_id])
            kinds.append(event)
    sequences = sequences_from_arrays(np.asarray(users, np.int64), np.asarray(items, np.int64))
    return features, sequences, split_by(np.asarray(kinds, dtype=str),
                                         [len(s) for s in sequences])
