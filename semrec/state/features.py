"""The frozen feature cache: every text and image is encoded once per encoder.

Keys hash exactly what was encoded (the encoder id plus the text, or plus the image file's
digest), so an unchanged product never re-encodes and a changed one re-encodes alone.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np


def feature_key(encoder_id: str, content: str) -> str:
    """Cache key for ``content`` (a text, or an image file digest) under ``encoder_id``."""
    return hashlib.sha256(f"{encoder_id}\0{content}".encode()).hexdigest()


class FeatureCache:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def missing(self, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` that are not cached yet."""
        wanted = set(keys)
        found: set[str] = set()
        items = list(wanted)
        for start in range(0, len(items), 500):
            chunk = items[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT key FROM features WHERE key IN ({marks})", chunk)
            found.update(key for (key,) in rows)
        return wanted - found

    def put(self, encoder_id: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per key (caller commits)."""
        vectors = np.asarray(vectors, dtype="<f4")
        self.conn.executemany(
            "INSERT OR REPLACE INTO features (key, encoder, dim, vector) VALUES (?, ?, ?, ?)",
            [(key, encoder_id, vectors.shape[1], vec.tobytes())
             for key, vec in zip(keys, vectors, strict=True)],
        )

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors for ``keys`` in order; every key must be cached."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, vector FROM features WHERE key IN ({marks})"
            found.update(self.conn.execute(query, chunk))
        lost = [key for key in unique if key not in found]
        if lost:
            raise KeyError(f"{len(lost)} feature(s) missing from the cache, e.g. {lost[0]}")
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(found[key], dtype="<f4") for key in keys])

    def matrix(self, text_keys: Sequence[str], image_keys: Sequence[str | None],
               image_dim: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One row per product: its text features, and its image features with a mask of
        the products that have one (both None when none has). Every key must be cached."""
        text = self.get(list(text_keys))
        keyed = [i for i, key in enumerate(image_keys) if key is not None]
        if not keyed:
            return text, None, None
        image = np.zeros((len(text_keys), image_dim), np.float32)
        image[keyed] = self.get([image_keys[i] for i in keyed])  # type: ignore[misc]
        has_image = np.zeros(len(text_keys), bool)
        has_image[keyed] = True
        return text, image, has_image

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]
