"""Training the towers on interactions: a stage of its own, never imported by serving.

    data.py      frozen features + per-user sequences (from a data directory or a split)
    model.py     the trainable item encoder, pooling users, the sampled-softmax task
    trainer.py   ``fit``: the training core, a pure function of data and settings
    reindex.py   save a trained version, re-index every product, then switch queries
    cli.py       the ``semrec train`` command
"""

from __future__ import annotations

from semrec.training.data import ItemFeatures, Validation, holdout_last, load_home
from semrec.training.trainer import TrainResult, fit

__all__ = ["ItemFeatures", "TrainResult", "Validation", "fit", "holdout_last", "load_home"]
