"""The baselines semrec has to beat: popularity and a tuned ALS.

Both learn from interactions only, so a product without training events (a cold item) has
no score: it ranks below every product they can score (``-inf``).

ALS (``implicit``'s CPU model, confidence ``alpha * count``) is tuned to be a fair opponent:
a coordinate search over factors, regularisation, alpha and iterations, each configuration
fitted on the valid phase's training events and scored on the validation targets only. The
chosen configuration is then refitted on the test phase's training events (which add each
user's validation event, exactly the history semrec pools at test time) and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semrec.evaluation.base import EvalContext, Fitted
from semrec.evaluation.metrics import Scorer
from semrec.evaluation.splits import Interactions

#: Where the search starts: implicit's defaults, with 128 factors.
ALS_START: dict[str, Any] = {"factors": 128, "regularization": 0.01, "alpha": 1.0,
                             "iterations": 15}


@dataclass(frozen=True)
class AlsGrid:
    """A coordinate search: each parameter in turn is swept with the others at their best.

    ``max_valid_users`` caps the validation users scored per configuration (a seeded
    sample) to keep tuning time bounded on large data.
    """

    start: dict[str, Any] = field(default_factory=lambda: dict(ALS_START))
    sweeps: tuple[tuple[str, tuple[Any, ...]], ...] = (
        ("alpha", (1.0, 5.0, 20.0, 50.0)),
        ("regularization", (0.01, 0.1, 1.0, 10.0)),
        ("factors", (64, 128, 256)),
        ("iterations", (15, 30)),
    )
    max_valid_users: int = 20_000


def popularity_scorer(train: Interactions, n_items: int) -> Scorer:
    """Everyone gets the same ranking: products by number of training events."""
    counts = np.bincount(train.items, minlength=n_items).astype(np.float32)
    counts[counts == 0] = -np.inf
    return lambda users: np.broadcast_to(counts, (len(users), n_items)).copy()


def run_popularity(ctx: EvalContext) -> list[Fitted]:
    with ctx.stages.stage("popularity: fit"):
        scorer = popularity_scorer(ctx.split.test.train, ctx.split.n_items)
    return [Fitted("popularity", scorer)]


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


def tune_als(ctx: EvalContext, grid: AlsGrid
             ) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """The best ALS parameters on the validation targets, their validation metrics, and
    every trial (params + the primary metric)."""
    split = ctx.split
    users = split.valid.users
    if len(users) > grid.max_valid_users:
        rng = np.random.default_rng(ctx.seed)
        users = rng.choice(users, grid.max_valid_users, replace=False)
    trials: dict[tuple, dict[str, Any]] = {}
    metrics: dict[tuple, dict[str, float]] = {}

    def trial(params: dict[str, Any]) -> float:
        key = tuple(sorted(params.items()))
        if key not in trials:
            label = "als: tune " + " ".join(f"{k}={v}" for k, v in params.items())
            with ctx.stages.stage("als: tune"):
                scorer = fit_als(split.valid.train, split.n_users, split.n_items, params,
                                 ctx.seed)
                metrics[key] = ctx.validate(scorer, label, users)
            trials[key] = {**params, ctx.primary: metrics[key][ctx.primary]}
        return trials[key][ctx.primary]

    best = dict(grid.start)
    for name, values in grid.sweeps:
        scored = [(trial({**best, name: v}), i, v) for i, v in enumerate(values)]
        best[name] = max(scored, key=lambda s: (s[0], -s[1]))[2]  # ties: the earlier value
    trial(best)
    return best, metrics[tuple(sorted(best.items()))], list(trials.values())


def run_als(ctx: EvalContext, grid: AlsGrid | None = None) -> list[Fitted]:
    params, valid, trials = tune_als(ctx, grid or AlsGrid())
    split = ctx.split
    with ctx.stages.stage("als: fit"):
        scorer = fit_als(split.test.train, split.n_users, split.n_items, params, ctx.seed)
    return [Fitted("als", scorer, valid=valid, info={"params": params, "trials": trials})]
