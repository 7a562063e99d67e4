"""The user tower's parameter-free poolings: a user is the weighted mean of the item
vectors in their history, so a new user is served from their first interaction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semrec.config import UserSettings


def history_weights(events: Sequence[str], settings: UserSettings) -> np.ndarray:
    """One weight per history event (oldest first): event-type weight x recency decay.

    With ``pooling = "mean"`` every event weighs its type's weight alone; with
    ``"recency"`` the weight halves every ``half_life`` events back from the newest.
    """
    n = len(events)
    by_type = np.array(
        [settings.event_weights.get(e, settings.default_event_weight) for e in events],
        dtype=np.float64,
    )
    if settings.pooling == "mean":
        return by_type
    age = np.arange(n - 1, -1, -1, dtype=np.float64)  # newest event has age 0
    return by_type * np.power(0.5, age / settings.half_life)


def pool(item_vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of ``item_vectors`` (n, d), L2-normalised; zero vector if no weight."""
    total = float(weights.sum())
    if len(item_vectors) == 0 or total <= 0:
        return np.zeros(item_vectors.shape[1] if item_vectors.ndim == 2 else 0, np.float32)
    mean = (weights[:, None] * item_vectors).sum(axis=0) / total
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def contributions(item_vectors: np.ndarray, weights: np.ndarray,
                  candidate: np.ndarray) -> np.ndarray:
    """How much each history item adds to ``candidate``'s score (for "because ...")."""
    return weights * (item_vectors @ candidate)
