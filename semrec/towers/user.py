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


# -- the user tower a model version was trained with ------------------------------------------

@runtime_checkable
class UserTower(Protocol):
    """Turns a history (stored item vectors, oldest first, and their event types) into one
    unit user vector; zeros when the history gives nothing to go on."""

    kind: str

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray: ...


class PoolingUserTower:
    """The parameter-free tower: the event- and recency-weighted mean of the history."""

    kind = "pooling"

    def __init__(self, settings: UserSettings) -> None:
        self.settings = settings

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray:
        return pool(item_vectors, history_weights(events, self.settings))


class SequentialTower:
    """The trained causal transformer (``towers/sequential.py``); event types are not read:
    it learnt from the order of the history alone."""

    kind = "sequential"

    def __init__(self, module: SequentialUserTower) -> None:
        self.module = module.eval()

    def user_vector(self, item_vectors: np.ndarray, events: Sequence[str]) -> np.ndarray:
        return self.module.user_vector(item_vectors)


def load_user_tower(manifest: ModelManifest, extra_tensors: dict[str, Any],
                    settings: UserSettings) -> UserTower:
    """The user tower ``manifest`` was trained with, from the version's other tensors
    (``ModelRegistry.load``'s third value). Untrained and pooling-trained versions pool
    with ``settings``; a sequential version rebuilds its transformer from ``user.*``."""
    spec = manifest.user_tower
    if spec.get("kind") != "sequential":
        return PoolingUserTower(settings)
    from semrec.towers.sequential import SequentialConfig, SequentialUserTower

    module = SequentialUserTower(SequentialConfig(**spec["config"]))
    state = {k[len(USER_PREFIX):]: v for k, v in extra_tensors.items()
             if k.startswith(USER_PREFIX)}
    module.load_state_dict(state)
    return SequentialTower(module)
