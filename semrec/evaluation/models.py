"""The registry of evaluated models: name -> runner (``base.ModelRunner``).

``semrec evaluate --models NAME ...`` runs the named runners on one shared split. A new
model (the trained semrec, once training exists) registers itself here:

    from semrec.evaluation.models import register_model
    register_model("semrec-trained", run_semrec_trained)

Its runner returns ``Fitted`` models with ``family="semrec"``, so the best semrec
configuration on the validation targets, trained or not, is reported as ``semrec``.
"""

from __future__ import annotations

from semrec.evaluation.base import ModelRunner, ModelUnavailable
from semrec.evaluation.baselines import run_als, run_popularity
from semrec.evaluation.semrec_models import run_semrec_untrained

RUNNERS: dict[str, ModelRunner] = {
    "popularity": run_popularity,
    "als": run_als,
    "semrec": run_semrec_untrained,
}

#: Names reserved for models that cannot run yet, and why (checked before any work starts).
PENDING: dict[str, str] = {
    "semrec-trained": "training does not exist yet; once it does, it registers its runner "
                      "with semrec.evaluation.models.register_model('semrec-trained', ...)",
}

#: What ``semrec evaluate`` runs without ``--models``.
DEFAULT_MODELS: tuple[str, ...] = ("popularity", "als", "semrec")


def register_model(name: str, runner: ModelRunner) -> None:
    """Add or replace the runner evaluated as ``--models name``."""
    RUNNERS[name] = runner
    PENDING.pop(name, None)


def get_runner(name: str) -> ModelRunner:
    """The runner registered as ``name``; ``ModelUnavailable`` for a pending one."""
    if name in RUNNERS:
        return RUNNERS[name]
    if name in PENDING:
        raise ModelUnavailable(f"model {name!r} cannot run: {PENDING[name]}")
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(RUNNERS)}")


from semrec.evaluation.semrec_trained import run_semrec_trained  # noqa: E402 - training's runner

register_model("semrec-trained", run_semrec_trained)
