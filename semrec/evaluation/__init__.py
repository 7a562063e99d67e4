"""Offline evaluation: one shared split, honest baselines, full-ranking metrics.

    splits.py         Dataset (integer-indexed events), ``last``/``temporal`` splits, cold items
    metrics.py        ranks of targets in full rankings; recall/NDCG@k, MRR, coverage@k;
                      paired bootstrap intervals
    base.py           EvalContext (what a model runner gets), Fitted (what it returns)
    baselines.py      popularity; ALS (implicit) and EASE tuned on the validation targets
    semrec_models.py  semrec through its real ingest pipeline and user pooling
    models.py         the registry of model runners (``register_model`` for new ones)
    runner.py         ``evaluate(config, settings)``: one run end to end, results as JSON
                      (groups, intervals, semrec's ratio to the best baseline, verdict)
    report.py         Markdown report and recall@k plot
    cli.py            the ``semrec evaluate`` command
"""

from __future__ import annotations

from semrec.evaluation.base import EvalContext, Fitted, ModelUnavailable
from semrec.evaluation.metrics import Ranked, rank_users, summarise
from semrec.evaluation.models import DEFAULT_MODELS, RUNNERS, register_model
from semrec.evaluation.runner import EvalConfig, evaluate, evaluate_split
from semrec.evaluation.splits import (
    Dataset,
    Interactions,
    Phase,
    Split,
    load_dataset,
    make_dataset,
    make_split,
)

__all__ = [
    "DEFAULT_MODELS", "RUNNERS", "Dataset", "EvalConfig", "EvalContext", "Fitted", "Interactions",
    "ModelUnavailable", "Phase", "Ranked", "Split", "evaluate", "evaluate_split", "load_dataset",
    "make_dataset", "make_split", "rank_users", "register_model", "summarise",
]
