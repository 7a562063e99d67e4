"""The user tower: a history of stored item vectors in, one unit user vector out.

The parameter-free poolings make a user the weighted mean of the item vectors in their
history, so a new user is served from their first interaction. A trained version may carry
a sequential tower instead (``towers/sequential.py``); ``load_user_tower`` gives whichever
the version was trained with, behind one ``UserTower`` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semrec.config import UserSettings

if TYPE_CHECKING:
    from semrec.towers.registry import ModelManifest
    from semrec.towers.sequential import SequentialUserTower

#: Prefix of the user tower's tensors among a version's ``extra_tensors``.
USER_PREFIX = "user."


def event_type_weights(events: Sequence[str], settings: UserSettings) -> np.ndarray:
    """Each event's type weight: ``event_weights[type]``, else ``default_event_weight``
    (training weighs its histories with this too, so it pools as serving does)."""
    return np.array([settings.event_weights.get(e, settings.default_event_weight)
                     for e in events], dtype=np.float64)


def history_weights(events: Sequence[str], settings: UserSettings) -> np.ndarray:
    """One weight per history event (oldest first): event-type weight x recency decay.

    With ``pooling = "mean"`` every event weighs its type's weight alone; with
    ``"recency"`` the weight halves every ``half_life`` events back from the newest.
    """
    n = len(events)
    by_type = event_type_weights(events, settings)
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


# -- the user tower a model version was trained with ------------------------------------------

@runtime_checkable
class UserTower(Protocol):
    """Turns a history (stored item vectors, oldest first, and their event types) into one
    unit user vector; zeros when the history gives nothing to go on."""

    kind: str

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray: ...

    def contributions(self, item_vectors: np.ndarray, events: Sequence[str],
                      candidates: np.ndarray) -> np.ndarray:
        """(candidates, events): how much each history event adds to each candidate's
        score under this tower (what a feed's "because" names)."""


class PoolingUserTower:
    """The parameter-free tower: the event- and recency-weighted mean of the history."""

    kind = "pooling"

    def __init__(self, settings: UserSettings) -> None:
        self.settings = settings

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray:
        return pool(item_vectors, history_weights(events, self.settings))

    def contributions(self, item_vectors: np.ndarray, events: Sequence[str],
                      candidates: np.ndarray) -> np.ndarray:
        """``weight * cosine`` per event: the terms of the pooled vector's dot product with
        each candidate, up to a common factor."""
        weights = history_weights(events, self.settings)
        return (np.asarray(candidates, np.float64) @ np.asarray(item_vectors, np.float64).T
                * weights[None, :])


class SequentialTower:
    """The trained causal transformer (``towers/sequential.py``); event types are not read:
    it learnt from the order of the history alone."""

    kind = "sequential"

    def __init__(self, module: SequentialUserTower) -> None:
        self.module = module.eval()

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray:
        return self.module.user_vector(item_vectors)

    def contributions(self, item_vectors: np.ndarray, events: Sequence[str],
                      candidates: np.ndarray) -> np.ndarray:
        """Leave one out: a candidate's score with the whole history minus its score with
        the history less that event (one batched pass over the window's events; events
        older than the window add nothing)."""
        n, window = len(item_vectors), min(len(item_vectors), self.module.config.max_len)
        out = np.zeros((len(candidates), n))
        if window == 0:
            return out
        vectors = np.asarray(item_vectors[-window:], np.float32)
        full = self.module.user_vector(vectors)
        left_out = self.module.user_vectors(
            vectors, [np.delete(np.arange(window), i) for i in range(window)])
        cands = np.asarray(candidates, np.float64)
        out[:, n - window:] = (cands @ full.astype(np.float64))[:, None] - cands @ left_out.T
        return out


def load_user_tower(manifest: ModelManifest, extra_tensors: dict[str, Any],
                    settings: UserSettings) -> UserTower:
    """The user tower ``manifest`` was trained with, from the version's other tensors
    (``ModelRegistry.load``'s third value). Untrained versions pool with ``settings``; a
    pooling-trained one with the pooling it was trained with (``pooling``, ``half_life``
    from its manifest); a sequential version rebuilds its transformer from ``user.*``."""
    spec = manifest.user_tower
    if spec.get("kind") != "sequential":  # a trained pooling version pools as it was trained
        saved = {k: spec[k] for k in ("pooling", "half_life") if k in spec}
        return PoolingUserTower(settings.model_copy(update=saved) if saved else settings)
    from semrec.towers.sequential import SequentialConfig, SequentialUserTower

    module = SequentialUserTower(SequentialConfig(**spec["config"]))
    state = {k[len(USER_PREFIX):]: v for k, v in extra_tensors.items()
             if k.startswith(USER_PREFIX)}
    module.load_state_dict(state)
    return SequentialTower(module)
