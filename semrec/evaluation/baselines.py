"""The baselines semrec has to beat: popularity, a tuned ALS and a tuned EASE.

All learn from interactions only, so a product without training events (a cold item) has
no score: it ranks below every product they can score (``-inf``).

Both tuned baselines are fair opponents: every configuration is fitted on the valid phase's
training events and scored on the validation targets only; the chosen one is then refitted
on the test phase's training events (which add each user's validation event, exactly the
history semrec pools at test time) and returned.

- ALS (``implicit``'s CPU model, confidence ``alpha * count``): a coordinate search over
  alpha, regularisation and factors, first over the whole grid, then over the neighbours of
  the best values until nothing changes, then iterations. The grid reaches small models (16
  factors) for small shops and large ones (256 factors, alpha 100) for large ones.
- EASE (Steck, 2019, "Embarrassingly Shallow Autoencoders"): the closed-form item-item
  regression ``B = I - P / diag(P)``, ``P = (X'X + lambda I)^-1`` on the binarised user x
  item matrix; ``lambda`` by a decade search refined to half decades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semrec.evaluation.base import EvalContext, Fitted
from semrec.evaluation.metrics import Scorer
from semrec.evaluation.splits import Interactions

#: Where the ALS search starts: the middle of the grid.
ALS_START: dict[str, Any] = {"factors": 64, "regularization": 0.1, "alpha": 10.0,
                             "iterations": 15}


@dataclass(frozen=True)
class AlsGrid:
    """A coordinate search: each parameter in turn is swept with the others at their best.

    The first round tries every value of each parameter in ``sweeps``; later rounds (up to
    ``rounds`` in all) only the values next to the current best, and stop once a round
    changes nothing. ``final`` is swept once at the end (iterations: more of them rarely
    changes the choice of the others, and doubles every fit). Factor values above the number
    of items or users are dropped (they cannot add anything). ``max_fits`` bounds the fits;
    ``max_valid_users`` caps the validation users scored per configuration (a seeded
    sample) to keep tuning time bounded on large data.
    """

    start: dict[str, Any] = field(default_factory=lambda: dict(ALS_START))
    sweeps: tuple[tuple[str, tuple[Any, ...]], ...] = (
        ("alpha", (1.0, 3.0, 10.0, 30.0, 100.0)),
        ("regularization", (0.01, 0.1, 1.0, 10.0, 100.0)),
        ("factors", (16, 32, 64, 128, 256)),
    )
    final: tuple[tuple[str, tuple[Any, ...]], ...] = (("iterations", (15, 30)),)
    rounds: int = 3
    max_fits: int = 24
    max_valid_users: int = 20_000


def popularity_scorer(train: Interactions, n_items: int) -> Scorer:
    """Everyone gets the same ranking: products by number of training events."""
    counts = np.bincount(train.items, minlength=n_items).astype(np.float32)
    counts[counts == 0] = -np.inf
    return lambda users: np.broadcast_to(counts, (len(users), n_items)).copy()


def run_popularity(ctx: EvalContext) -> list[Fitted]:
    with ctx.stages.stage("popularity: fit"):
        scorer = popularity_scorer(ctx.split.test.train, ctx.split.n_items)
    return [Fitted("popularity", scorer, baseline=True)]


def fit_als(train: Interactions, n_users: int, n_items: int, params: dict[str, Any],
            seed: int = 0) -> Scorer:
    """Fit ``implicit``'s CPU ALS on ``train``; BLAS is held to one thread while it runs, as
    implicit asks (its own threads do the parallel work)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    matrix = train.matrix(n_users, n_items)
    with threadpool_limits(1, "blas"):  # implicit checks this when the model is made
        model = AlternatingLeastSquares(
            factors=int(params["factors"]), regularization=float(params["regularization"]),
            alpha=float(params["alpha"]), iterations=int(params["iterations"]),
            random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    users = np.asarray(model.user_factors, np.float32)
    items = np.asarray(model.item_factors, np.float32)
    unseen = np.asarray(matrix.sum(axis=0)).ravel() == 0

    def score(batch: np.ndarray) -> np.ndarray:
        scores = users[batch] @ items.T
        scores[:, unseen] = -np.inf
        return scores

    return score


def _neighbours(values: tuple[Any, ...], best: Any) -> tuple[Any, ...]:
    """The values next to ``best`` in ``values`` (``best`` itself first)."""
    if best not in values:
        return (best,)
    i = values.index(best)
    return (best, *values[max(i - 1, 0):i], *values[i + 1:i + 2])


def tune_als(ctx: EvalContext, grid: AlsGrid
             ) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """The best ALS parameters on the validation targets, their validation metrics, and
    every trial in order (params + the primary metric + mrr, which breaks ties)."""
    split = ctx.split
    users = _valid_sample(ctx, grid.max_valid_users)
    trials: dict[tuple, dict[str, Any]] = {}
    metrics: dict[tuple, dict[str, float]] = {}
    limit = max(min(split.n_items, split.n_users), 1)

    def trial(params: dict[str, Any]) -> tuple[float, float] | None:
        key = tuple(sorted(params.items()))
        if key not in trials:
            if len(trials) >= grid.max_fits:
                return None
            label = "als: tune " + " ".join(f"{k}={v}" for k, v in params.items())
            with ctx.stages.stage("als: tune"):
                scorer = fit_als(split.valid.train, split.n_users, split.n_items, params,
                                 ctx.seed)
                metrics[key] = ctx.validate(scorer, label, users)
            trials[key] = {**params, ctx.primary: metrics[key][ctx.primary],
                           "mrr": metrics[key]["mrr"]}
        return trials[key][ctx.primary], trials[key]["mrr"]

    def sweep(best: dict[str, Any], name: str, values: tuple[Any, ...]) -> bool:
        """Move ``best[name]`` to the best of ``values``; True if it moved. Ties go to the
        earlier value."""
        if best[name] not in values:
            values = (best[name], *values)
        scored = [(score, -i, v) for i, v in enumerate(values)
                  if (score := trial({**best, name: v})) is not None]
        if not scored:
            return False
        choice = max(scored)[2]
        moved, best[name] = choice != best[name], choice
        return moved

    best = dict(grid.start)
    sweeps = [(name, tuple(v for v in values if name != "factors" or v <= limit)
               or (min(values),)) for name, values in grid.sweeps]
    if best.get("factors", 0) > limit:
        best["factors"] = max(v for name, vs in sweeps if name == "factors" for v in vs)
    trial(best)
    for round_ in range(grid.rounds):
        moved = False
        for name, values in sweeps:
            values = values if round_ == 0 else _neighbours(values, best[name])
            moved = sweep(best, name, values) or moved
        if not moved:
            break
    for name, values in grid.final:
        sweep(best, name, values)
    key = tuple(sorted(best.items()))
    return best, metrics[key], list(trials.values())


def _valid_sample(ctx: EvalContext, cap: int) -> np.ndarray:
    """The validation users a tuning trial is scored on: all, or a seeded sample of ``cap``."""
    users = ctx.split.valid.users
    if len(users) > cap:
        users = np.random.default_rng(ctx.seed).choice(users, cap, replace=False)
    return users


def run_als(ctx: EvalContext, grid: AlsGrid | None = None) -> list[Fitted]:
    params, valid, trials = tune_als(ctx, grid or AlsGrid())
    split = ctx.split
    with ctx.stages.stage("als: fit"):
        scorer = fit_als(split.test.train, split.n_users, split.n_items, params, ctx.seed)
    return [Fitted("als", scorer, valid=valid, baseline=True,
                   info={"params": params, "trials": trials})]


# --- EASE -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EaseSearch:
    """``lambda`` on a log scale: the ``coarse`` decades, extended a decade at a time while
    an end of the tried range is best (within ``low``..``high``), then the half decades on
    either side of the best. Typically 5 fits, each one inversion of the item Gram matrix."""

    coarse: tuple[float, ...] = (10.0, 100.0, 1000.0)
    low: float = 0.1
    high: float = 1e5
    max_valid_users: int = 20_000


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric positive definite float32 matrix ``a``, written over it
    (Cholesky, LAPACK ``potrf`` + ``potri``): no float64 copy, no second n x n buffer."""
    from scipy.linalg import lapack

    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise ValueError("expected a C-contiguous float32 matrix")
    factor, info = lapack.spotrf(a.T, lower=0, overwrite_a=1, clean=0)  # a.T: Fortran order
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Gram matrix not positive definite (potrf {info})")
    inverse, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Gram matrix singular (potri {info})")
    n, block = inverse.shape[0], 1024
    for lo in range(0, n, block):  # potri fills the upper triangle only: mirror it
        hi = min(lo + block, n)
        inverse[lo:hi, :lo] = inverse[:lo, lo:hi].T
        square = inverse[lo:hi, lo:hi]
        inverse[lo:hi, lo:hi] = np.triu(square) + np.triu(square, 1).T
    return np.ascontiguousarray(inverse.T)  # symmetric; a view when potri worked in place


def ease_weights(matrix: Any, lam: float) -> np.ndarray:
    """EASE's item-item weights ``B`` (float32, zero diagonal) for the binarised user x item
    ``matrix`` (scipy sparse): ``B = I - P / diag(P)``, ``P = (X'X + lam I)^-1``."""
    if lam <= 0:
        raise ValueError(f"EASE lambda must be positive, not {lam}")
    x = matrix.tocsr(copy=True).astype(np.float32)
    x.data[:] = 1.0
    gram = np.ascontiguousarray((x.T @ x).toarray(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(lam)
    weights = _spd_inverse(gram)
    diag = np.diag(weights).copy()
    weights /= -diag[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def fit_ease(train: Interactions, n_users: int, n_items: int, lam: float) -> Scorer:
    """EASE on ``train``, over the products that have training events (the others cannot be
    scored: ``-inf``); a user's scores are their binarised history times ``B``."""
    matrix = train.matrix(n_users, n_items).tocsc()
    active = np.flatnonzero(np.diff(matrix.indptr))
    x = matrix[:, active].tocsr()
    x.data[:] = 1.0
    weights = ease_weights(x, lam)

    def score(batch: np.ndarray) -> np.ndarray:
        scores = np.full((len(batch), n_items), -np.inf, np.float32)
        scores[:, active] = np.asarray(x[batch] @ weights, np.float32)
        return scores

    return score


def tune_ease(ctx: EvalContext, search: EaseSearch
              ) -> tuple[float, dict[str, float], list[dict[str, Any]]]:
    """The best ``lambda`` on the validation targets, its validation metrics, and every
    trial (lambda + the primary metric + mrr, which breaks ties; then the larger lambda)."""
    split = ctx.split
    users = _valid_sample(ctx, search.max_valid_users)
    tried: dict[float, dict[str, float]] = {}

    def trial(lam: float) -> None:
        lam = float(f"{lam:.4g}")
        if lam in tried or not search.low <= lam <= search.high:
            return
        with ctx.stages.stage("ease: tune"):
            scorer = fit_ease(split.valid.train, split.n_users, split.n_items, lam)
            tried[lam] = ctx.validate(scorer, f"ease: tune lambda={lam:g}", users)

    def best() -> float:
        return max(tried, key=lambda lam: (tried[lam][ctx.primary], tried[lam]["mrr"], lam))

    for lam in search.coarse:
        trial(lam)
    while (b := best()) == min(tried) and b / 10 >= search.low:
        trial(b / 10)
    while (b := best()) == max(tried) and b * 10 <= search.high:
        trial(b * 10)
    b = best()
    trial(b / math.sqrt(10.0))
    trial(b * math.sqrt(10.0))
    lam = best()
    trials = [{"lambda": k, ctx.primary: v[ctx.primary], "mrr": v["mrr"]}
              for k, v in tried.items()]
    return lam, tried[lam], trials


def run_ease(ctx: EvalContext, search: EaseSearch | None = None) -> list[Fitted]:
    lam, valid, trials = tune_ease(ctx, search or EaseSearch())
    split = ctx.split
    with ctx.stages.stage("ease: fit"):
        scorer = fit_ease(split.test.train, split.n_users, split.n_items, lam)
    return [Fitted("ease", scorer, valid=valid, baseline=True,
                   info={"params": {"lambda": lam}, "trials": trials})]
