"""``semrec evaluate``: the typer command (registered on the main app by ``semrec/cli.py``).

Tables go to stdout, progress bars (one per stage) and errors to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from semrec.config import load_settings
from semrec.errors import reported
from semrec.evaluation.metrics import BOOTSTRAP
from semrec.evaluation.models import DEFAULT_MODELS
from semrec.evaluation.report import (
    GROUP_TITLES,
    metric_columns,
    shown_groups,
    table_rows,
    verdict_lines,
    write_report,
)
from semrec.evaluation.runner import DEFAULT_KS, EvalConfig
from semrec.evaluation.runner import evaluate as run_evaluation
from semrec.evaluation.splits import SPLITS

out = Console(width=None if sys.stdout.isatty() else 200)  # wide tables in logs and pipes
err = Console(stderr=True, soft_wrap=True)  # one error, one line


class RichStages:
    """A rich progress bar per stage, and each stage's wall time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int | None = None,
              timed: bool = True) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(name, total=total)
        started = time.perf_counter()
        try:
            yield lambda n: self.progress.advance(task, n)
        finally:
            if timed:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.progress.update(task, total=total or 1, completed=total or 1)


def _listed(values: list[str] | None, default: tuple) -> list[str]:
    """``--k 10 --k 20`` and ``--k 10,20`` (or "10 20") alike."""
    if not values:
        return [str(v) for v in default]
    return [part for value in values for part in value.replace(",", " ").split()]


def evaluate(
    ctx: typer.Context,
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog file (.csv/.jsonl).")],
    events: Annotated[Path, typer.Option("--events", help="Events file (.csv/.jsonl).")],
    split: Annotated[str, typer.Option(
        "--split", help=f"Split protocol: {' or '.join(SPLITS)}.")] = "last",
    cold_items: Annotated[float, typer.Option(
        "--cold-items", min=0.0, max=0.99,
        help="Share of products held out of all training (the cold group).")] = 0.0,
    k: Annotated[list[str] | None, typer.Option(
        "--k", help="Cut-offs: --k 10 --k 20 or --k 10,20,50 (default 10,20,50).")] = None,
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="Models to run, repeated or comma-separated "
        f"(default {','.join(DEFAULT_MODELS)}).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results JSON here.")]
    = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write report.md and recall.png into this folder.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling and models.")] = 0,
    quantile: Annotated[float, typer.Option(
        "--quantile", help="temporal split: the cut's timestamp quantile.")] = 0.9,
    train_minutes: Annotated[float, typer.Option(
        "--train-minutes", min=0.1, help="Budget of semrec-trained's search and refit "
        "(default 15, so the whole run on amazon-games fits in 25 minutes on 2 cores).")]
        = 15.0,
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", help="Keep the evaluation's data directory here (reused next time, so "
        "features are not re-encoded); default a temporary one, deleted.")] = None,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=100, help="Resamples of the test users per 95% confidence "
        "interval (default 1000).")] = BOOTSTRAP,
) -> None:
    """Evaluate popularity, tuned ALS and EASE, and semrec on one split, with full ranking
    and bootstrap confidence intervals."""
    with reported(err):
        ks = tuple(sorted({int(v) for v in _listed(k, DEFAULT_KS)}))
        if not ks or ks[0] < 1:
            raise ValueError("--k values must be positive integers")
        config = EvalConfig(catalog=catalog, events=events, split=split, cold_items=cold_items,
                            ks=ks, models=tuple(_listed(models, DEFAULT_MODELS)), seed=seed,
                            quantile=quantile, workdir=workdir, train_minutes=train_minutes,
                            bootstrap=bootstrap)
        settings = load_settings(home=ctx.obj if isinstance(ctx.obj, Path | str) else None)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=False)
        with progress:
            result = run_evaluation(config, settings, RichStages(progress))
    for group in shown_groups(result):
        _print_table(result, group)
    for line in verdict_lines(result):
        out.print(line, highlight=False)
    out.print(f"total {result['seconds']['total']:.0f} s")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        err.print(f"results written to {json_out}", highlight=False)
    if report is not None:
        md, png = write_report(result, report)
        err.print(f"report written to {md} and {png}", highlight=False)


def _print_table(result: dict, group: str) -> None:
    n = result["users"][{"models": "warm"}.get(group, group)]
    table = Table(title=f"{result['dataset']} ({result['split']}): {GROUP_TITLES[group]}, "
                        f"{n} users")
    for column in ("model", *metric_columns(result)):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in table_rows(result, group):
        table.add_row(*row)
    out.print(table)
