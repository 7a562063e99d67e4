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


def per_user(ranked: Ranked, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Each user's recall@k (0 or 1), NDCG@k and reciprocal rank (``mrr``), float64: the
    values ``summarise`` averages and ``bootstrap_means`` resamples."""
    ranks = ranked.ranks
    gain = 1.0 / np.log2(ranks + 2.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, gain, 0.0)
    out["mrr"] = 1.0 / (ranks + 1.0)
    return out


def summarise(ranked: Ranked, ks: Sequence[int], n_items: int) -> dict[str, float]:
    """recall@k, ndcg@k, coverage@k (when ``ranked`` has top lists) for each k, and mrr
    (means over users; 0 without users)."""
    n = max(len(ranked.ranks), 1)
    values = per_user(ranked, ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(values[f"recall@{k}"].sum() / n)
        out[f"ndcg@{k}"] = float(values[f"ndcg@{k}"].sum() / n)
        if ranked.top.shape[1]:
            shown = ranked.top[:, :k]
            out[f"coverage@{k}"] = float(len(np.unique(shown[shown >= 0])) / n_items)
    out["mrr"] = float(values["mrr"].sum() / n)
    return out


# --- confidence intervals ---------------------------------------------------------------------

BOOTSTRAP = 1000
"""Resamples per bootstrap: percentile intervals at 95% move by about 0.1 of their width
between seeds at this size."""

LEVEL = 0.95


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0
                    ) -> np.ndarray:
    """Means of ``values`` (``(m, n)``: m per-user metrics over the same n users) over
    ``resamples`` bootstrap samples of the users, ``(m, resamples)``.

    Every row sees the same resampled users (a paired bootstrap), so a ratio or difference
    of two rows' means, resample by resample, has the right spread. Seeded: the same call
    gives the same samples."""
    values = np.atleast_2d(np.asarray(values, np.float64))
    m, n = values.shape
    if n == 0:
        raise ValueError("no users to resample")
    rng = np.random.default_rng(seed)
    out = np.empty((m, resamples), np.float64)
    chunk = max(1, 4_000_000 // n)  # resamples drawn at once: ~32 MB of indices
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        # how often each user was drawn, per resample: the means are one matrix product
        counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
        out[:, start:stop] = values @ counts.T / n
    return out


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples`` (no interpolation, so an infinite
    sample gives an infinite bound rather than NaN)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def ratio_samples(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Resample-wise ``numerator / denominator``: ``inf`` where only the denominator is 0,
    1 where both are (equal at nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    ratio[(numerator == 0) & (denominator == 0)] = 1.0
    return ratio
