"""The registry of evaluated models: name -> runner (``base.ModelRunner``).

``semrec evaluate --models NAME ...`` runs the named runners on one shared split; another
model registers itself with ``register_model(name, runner)``. The semrec runners return
``Fitted`` models with ``family="semrec"``, so the best semrec configuration on the
validation targets, trained or not, is reported as ``semrec``.
"""

from __future__ import annotations

from semrec.evaluation.base import ModelRunner
from semrec.evaluation.baselines import run_als, run_ease, run_popularity
from semrec.evaluation.semrec_models import run_semrec_untrained
from semrec.evaluation.semrec_trained import run_semrec_trained

RUNNERS: dict[str, ModelRunner] = {
    "popularity": run_popularity,
    "als": run_als,
    "ease": run_ease,
    "semrec": run_semrec_untrained,
    "semrec-trained": run_semrec_trained,
}

#: What ``semrec evaluate`` runs without ``--models``: the baselines and semrec untrained
#: and trained, on one shared split.
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "als", "ease", "semrec", "semrec-trained")


def register_model(name: str, runner: ModelRunner) -> None:
    """Add or replace the runner evaluated as ``--models name``."""
    RUNNERS[name] = runner


def get_runner(name: str) -> ModelRunner:
    """The runner registered as ``name``."""
    if name in RUNNERS:
        return RUNNERS[name]
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(RUNNERS)}")
