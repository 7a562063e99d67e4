"""What every evaluated model gets and gives back.

A *model runner* receives an ``EvalContext`` (the dataset, the split, a way to score a
phase, progress/timing, a private working directory) and returns one or more ``Fitted``
models: a scorer fitted on the test phase's training events, and what it chose on the
validation phase. Runners may look at ``split.valid`` and ``split.test.train`` only; test
targets are scored by the orchestrator, never by a runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semrec.config import Settings
from semrec.errors import UserError
from semrec.evaluation.metrics import Ranked, Scorer, rank_users, summarise
from semrec.evaluation.splits import Dataset, Phase, Split


class ModelUnavailable(UserError, RuntimeError):
    """A model was asked for that cannot run here (e.g. no trained semrec exists yet)."""


@dataclass
class Fitted:
    """One evaluated configuration.

    ``family`` groups variants (``semrec-mean``, ``semrec-recency`` -> ``semrec``): the
    variant with the best validation score is reported under the family's name.
    ``baseline`` marks what semrec is compared with (popularity, ALS, EASE): the best of
    them per group is the denominator of semrec's ratio.
    """

    name: str
    scorer: Scorer
    family: str | None = None
    valid: dict[str, float] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False


class Stages(Protocol):
    """Progress and wall time per named stage (a no-op implementation is ``QuietStages``)."""

    seconds: dict[str, float]

    def stage(self, name: str, total: int | None = None, timed: bool = True
              ) -> AbstractContextManager[Callable[[int], None]]:
        """Show progress of the ``with`` block (which receives ``advance(n)``) and, when
        ``timed``, add its wall time to ``seconds[name]``."""


class QuietStages:
    """Times stages, shows nothing."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int | None = None,
              timed: bool = True) -> Iterator[Callable[[int], None]]:
        started = time.perf_counter()
        try:
            yield lambda n: None
        finally:
            if timed:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


@dataclass
class EvalContext:
    dataset: Dataset
    split: Split
    ks: tuple[int, ...]
    settings: Settings  # the caller's config with ``home`` set to ``workdir``
    workdir: Path
    stages: Stages = field(default_factory=QuietStages)
    seed: int = 0

    @property
    def primary(self) -> str:
        """The metric that picks among configurations on the validation phase."""
        return f"recall@{self.ks[0]}"

    def rank(self, scorer: Scorer, phase: Phase, label: str, top: bool = True) -> Ranked:
        """Rank ``phase``'s targets with ``scorer`` (history = ``phase.train``); with
        ``top``, also each user's top ``max(ks)`` (for coverage)."""
        history = phase.train.matrix(self.split.n_users, self.split.n_items)
        with self.stages.stage(label, total=len(phase.users), timed=False) as advance:
            return rank_users(scorer, phase.users, phase.targets, history,
                              max(self.ks) if top else 0, on_batch=advance)

    def validate(self, scorer: Scorer, label: str,
                 users: np.ndarray | None = None) -> dict[str, float]:
        """Rank metrics (no coverage) on the validation targets, optionally a subset of
        those users."""
        phase = self.split.valid
        if users is not None:
            keep = np.isin(phase.users, users)
            phase = Phase(phase.train, phase.users[keep], phase.targets[keep])
        return summarise(self.rank(scorer, phase, label, top=False), self.ks,
                         self.split.n_items)


ModelRunner = Callable[[EvalContext], list[Fitted]]
