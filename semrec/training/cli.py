"""``semrec train``: the typer command (registered on the main app by ``semrec/cli.py``).

Reads the data directory's events and cached features, trains, saves a new version,
re-indexes every product with it and only then switches queries to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from semrec.config import TrainSettings, load_settings
from semrec.errors import reported
from semrec.training.trainer import RECALL_K

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line


class RichProgress:
    """One bar per epoch: steps done, running loss, last validation recall."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.losses: list[float] = []
        self.recall: float | None = None

    def start(self, epoch: int, steps: int) -> None:
        self.losses = []
        self.task = self.progress.add_task(f"epoch {epoch}", total=steps, loss=float("nan"),
                                           recall=self._recall())

    def step(self, loss: float) -> None:
        self.losses.append(loss)
        mean = sum(self.losses[-50:]) / len(self.losses[-50:])
        self.progress.update(self.task, advance=1, loss=mean)

    def end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.recall = metrics[f"valid_recall@{RECALL_K}"]
        self.progress.update(self.task, recall=self._recall())

    def _recall(self) -> str:
        return "-" if self.recall is None else f"{self.recall:.4f}"


def train(
    ctx: typer.Context,
    user_tower: Annotated[str | None, typer.Option(
        "--user-tower", help="pooling or sequential (default: config [train] user_tower).")]
    = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    dim: Annotated[int | None, typer.Option("--dim", min=8, help="Embedding size.")] = None,
    id_embeddings: Annotated[bool | None, typer.Option(
        "--id-embeddings/--no-id-embeddings", help="Per-product ID embeddings.")] = None,
    loss: Annotated[str | None, typer.Option(
        "--loss", help="full (softmax over every product) or sampled (in-batch + sampled "
                       "negatives with logQ; default: config [train] loss).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train the item heads and the user tower on the events, re-index, then serve it.
    Runs beside a running `semrec serve`, which switches to the new version when it is
    built."""
    from semrec.towers import ItemTowerConfig
    from semrec.training.data import load_home
    from semrec.training.reindex import build_version, save_version, serve_version
    from semrec.training.trainer import fit
    from semrec.workspace import Workspace

    with reported(err):
        home = ctx.obj if isinstance(ctx.obj, Path | str) else None
        settings = load_settings(home=home)
        flags = {"user_tower": user_tower, "epochs": epochs, "dim": dim,
                 "id_embeddings": id_embeddings, "loss": loss}
        train_settings = TrainSettings(**{**settings.train.model_dump(),
                                          **{k: v for k, v in flags.items() if v is not None}})
        with Workspace(settings, role="train", own_index=False) as ws:
            current = ws.items(ws.served_version()).tower
            features, sequences = load_home(ws.conn, current.config.image_dim)
            tower = ItemTowerConfig(
                text_dim=features.text.shape[1], image_dim=current.config.image_dim,
                dim=train_settings.dim, text_weight=settings.tower.text_weight,
                image_weight=settings.tower.image_weight, seed=train_settings.seed)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.3f}"),
                       TextColumn(f"valid recall@{RECALL_K} {{task.fields[recall]}}"),
                       TimeElapsedColumn())
            with Progress(*columns, console=err) as bar:
                result = fit(features, sequences, train_settings, tower, settings.user,
                             progress=RichProgress(bar))
            manifest = save_version(ws, result, features.product_ids,
                                    train_settings.model_dump())
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err) as bar:
                task = bar.add_task(f"re-indexing with {manifest.version}",
                                    total=len(features))
                indexed = build_version(ws, manifest.version, lambda n: bar.advance(task, n))
        served = serve_version(settings, manifest.version)
    summary = {"version": manifest.version, "user_tower": train_settings.user_tower,
               "loss": train_settings.loss, "id_embeddings": train_settings.id_embeddings,
               "products_indexed": indexed, "users": len(sequences), "served": served,
               **result.metrics}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"trained {manifest.version} ({train_settings.user_tower} user tower) in "
                  f"{result.metrics['train_seconds']:.0f} s: valid recall@{RECALL_K} "
                  f"{result.metrics[f'valid_recall@{RECALL_K}']:.4f} (untrained "
                  f"{result.metrics[f'valid_recall@{RECALL_K}_untrained']:.4f}), best epoch "
                  f"{result.metrics['best_epoch']}; {indexed} products re-indexed, {served}.")
