"""Re-ranking over a retrieved candidate list: MMR diversity and "because" explanations.

Both run in numpy on the candidates' stored vectors, not inside the engine, so every store
backend gives the same answer (Edge's and the server's built-in MMR differ in detail).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Candidates fetched per requested result when diversifying, and the bounds on that pool.
POOL_FACTOR = 4
POOL_MIN = 50
POOL_MAX = 1000


def pool_size(k: int, diversity: float) -> int:
    """How many candidates to retrieve for ``k`` results: ``k`` itself without diversity."""
    if diversity <= 0:
        return k
    return min(max(POOL_FACTOR * k, POOL_MIN), max(POOL_MAX, k))


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Greedy maximal marginal relevance: the indexes of ``k`` picks, in pick order.

    Each step takes the candidate maximising ``(1 - diversity) * relevance
    - diversity * (max cosine to the picks so far)``. ``diversity`` 0 is the relevance
    order itself; 1 ignores relevance after the first pick. ``vectors`` are unit length,
    one row per candidate, in the same order as ``relevance``.
    """
    n = len(relevance)
    k = min(k, n)
    if diversity <= 0 or k <= 1:
        return list(np.argsort(-relevance, kind="stable")[:k])
    lam = 1.0 - diversity
    rel = np.asarray(relevance, np.float64)
    sims = np.asarray(vectors, np.float64) @ np.asarray(vectors, np.float64).T
    closest = np.full(n, -np.inf)  # max similarity to any pick; -inf before the first
    chosen = np.zeros(n, bool)
    picks: list[int] = []
    for _ in range(k):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        score = lam * rel - diversity * penalty
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        picks.append(best)
        chosen[best] = True
        closest = np.maximum(closest, sims[best])
    return picks


def because(history_ids: Sequence[str], contributions: np.ndarray) -> list[str]:
    """For each candidate, the history product adding most to its score: ``contributions``
    (candidates, events) from the user tower that scored the feed, summed per product."""
    if len(history_ids) == 0 or len(contributions) == 0:
        return [""] * len(contributions)
    products = list(dict.fromkeys(history_ids))
    column = {pid: i for i, pid in enumerate(products)}
    per_product = np.zeros((len(contributions), len(products)))
    for event, pid in enumerate(history_ids):
        per_product[:, column[pid]] += contributions[:, event]
    return [products[int(i)] for i in np.argmax(per_product, axis=1)]
