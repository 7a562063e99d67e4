"""Full-ranking metrics: every product is a candidate, the user's training history is not.

A scorer maps user indices to a dense ``(n_users, n_items)`` score matrix. For each user the
products in their training history are set to ``-inf`` (never hits, never in a top-k list),
then the target's 0-based rank is the number of *other* products scoring at least as high:
ties count against the target, so a model cannot gain from giving everything the same score,
and a target a model cannot score (``-inf``) is never a hit.

With one target per user, recall@k is the hit rate at k; NDCG@k is ``1 / log2(rank + 2)``
for a hit; MRR is ``1 / (rank + 1)`` over the whole ranking; coverage@k is the share of the
catalog that appears in at least one evaluated user's top k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]
"""User indices ``(b,)`` -> float scores ``(b, n_items)``, higher is better."""

BATCH = 1024


@dataclass(frozen=True)
class Ranked:
    """Per evaluated user: the target's 0-based rank and the top ``max(k)`` products."""

    ranks: np.ndarray  # int64 (n,)
    top: np.ndarray  # int64 (n, kmax); -1 where fewer than kmax products could be ranked

    def subset(self, mask: np.ndarray) -> Ranked:
        return Ranked(self.ranks[mask], self.top[mask])


def rank_batch(scores: np.ndarray, targets: np.ndarray, exclude: sp.csr_matrix,
               kmax: int) -> Ranked:
    """Rank ``targets`` within ``scores`` (modified in place), leaving out ``exclude``'s
    nonzero columns row by row; ``kmax`` 0 gives no top lists."""
    scores = np.asarray(scores, dtype=np.float32)
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    scores[rows, exclude.indices] = -np.inf
    np.nan_to_num(scores, copy=False, nan=-np.inf)
    rows = np.arange(len(targets))
    target = scores[rows, targets]
    ranks = (scores >= target[:, None]).sum(axis=1) - 1
    kmax = min(kmax, scores.shape[1])
    if kmax <= 0:  # ranks only (validation): skip the costlier top-k selection
        return Ranked(ranks.astype(np.int64), np.zeros((len(targets), 0), np.int64))
    top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top[np.take_along_axis(top_scores, order, axis=1) == -np.inf] = -1
    return Ranked(ranks.astype(np.int64), top.astype(np.int64))


def rank_users(scorer: Scorer, users: np.ndarray, targets: np.ndarray, history: sp.csr_matrix,
               kmax: int, on_batch: Callable[[int], None] | None = None,
               batch: int = BATCH) -> Ranked:
    """Score ``users`` in batches; ``history`` is the user x item training matrix."""
    parts: list[Ranked] = []
    for start in range(0, len(users), batch):
        u, t = users[start:start + batch], targets[start:start + batch]
        parts.append(rank_batch(scorer(u), t, history[u], kmax))
        if on_batch:
            on_batch(len(u))
    if not parts:
        return Ranked(np.zeros(0, np.int64), np.zeros((0, kmax), np.int64))
    return Ranked(np.concatenate([p.ranks for p in parts]), np.concatenate([p.top for p in parts]))


def summarise(ranked: Ranked, ks: Sequence[int], n_items: int) -> dict[str, float]:
    """recall@k, ndcg@k, coverage@k (when ``ranked`` has top lists) for each k, and mrr
    (means over users; 0 without users)."""
    out: dict[str, float] = {}
    ranks = ranked.ranks
    n = max(len(ranks), 1)
    gain = 1.0 / np.log2(ranks + 2.0)
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.sum() / n)
        out[f"ndcg@{k}"] = float(gain[hit].sum() / n)
        if ranked.top.shape[1]:
            shown = ranked.top[:, :k]
            out[f"coverage@{k}"] = float(len(np.unique(shown[shown >= 0])) / n_items)
    out["mrr"] = float((1.0 / (ranks + 1.0)).sum() / n)
    return out
