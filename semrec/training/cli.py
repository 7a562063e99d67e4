"""``semrec train``: the typer command (registered on the main app by ``semrec/cli.py``).

Reads the data directory's events and cached features, holds each user's last event out
for validation, searches training settings on it (``tuning.py``: the untrained model is
candidate 0), and compares the winner with the served version on the same validation users.
Only a winner is refit on every event, saved as a new version, re-indexed and served; a
loser leaves the served version as it is (exit 0), unless ``--force``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from semrec.config import TrainSettings, load_settings
from semrec.errors import reported
from semrec.training.trainer import RECALL_K
from semrec.training.tuning import Scored, TuneProgress, TuneResult

if TYPE_CHECKING:
    from semrec.training.data import ItemFeatures, Validation
    from semrec.workspace import Workspace

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line


class RichProgress(TuneProgress):
    """One bar per candidate's epoch (steps, running loss, last validation recall), and a
    line per candidate with its validation recall once it is scored."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.losses: list[float] = []
        self.recall: float | None = None
        self.name = ""

    def candidate(self, name: str, overrides: dict[str, Any]) -> None:
        self.name, self.recall = name, None

    def scored(self, result: Scored) -> None:
        detail = ("" if result.status == "untrained" else
                  f", best epoch {result.epochs} of {result.epochs_run}, boost {result.boost:g}"
                  f", {result.status}")
        coverage = "" if result.coverage is None else f", coverage@10 {result.coverage:.3f}"
        self.progress.console.print(
            f"candidate {result.name}: valid recall@{RECALL_K} {result.recall:.4f}"
            f"{coverage}{detail}", highlight=False)

    def start(self, epoch: int, steps: int) -> None:
        self.losses = []
        label = f"{self.name} epoch {epoch}" if self.name else f"epoch {epoch}"
        self.task = self.progress.add_task(label, total=steps, loss=float("nan"),
                                           recall=self._recall())

    def step(self, loss: float) -> None:
        self.losses.append(loss)
        mean = sum(self.losses[-50:]) / len(self.losses[-50:])
        self.progress.update(self.task, advance=1, loss=mean)

    def end(self, epoch: int, metrics: dict[str, float]) -> None:
        recall = metrics[f"valid_recall@{RECALL_K}"]
        self.recall = recall if self.name != "refit" else None
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
    word_embeddings: Annotated[bool | None, typer.Option(
        "--word-embeddings/--no-word-embeddings",
        help="Learnt vectors of the products' words (title, category, brand).")] = None,
    loss: Annotated[str | None, typer.Option(
        "--loss", help="full (softmax over every product), sampled (in-batch + sampled "
                       "negatives with logQ) or auto (sampled on large catalogues; default: "
                       "config [train] loss).")] = None,
    search: Annotated[bool | None, typer.Option(
        "--search/--no-search", help="Search training settings on validation, or train the "
        "configured ones only, still compared with the untrained model (default: config "
        "[train] search).")] = None,
    minutes: Annotated[float | None, typer.Option(
        "--minutes", min=0.01, help="Time budget of search and refit (default: config "
        "[train] max_minutes).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Serve the best trained candidate even when it loses on validation "
        "to the served version or to the untrained model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Tune training on the events' validation targets, refit the winner on every event,
    and serve it if it beats the served version on validation. Runs beside a running
    `semrec serve`, which switches to the new version once it is built."""
    from semrec.towers import ItemTowerConfig
    from semrec.training.data import event_weights, holdout_last, load_home
    from semrec.training.reindex import build_version, save_version, serve_version
    from semrec.training.tuning import refit, tune
    from semrec.workspace import Workspace

    with reported(err):
        home = ctx.obj if isinstance(ctx.obj, Path | str) else None
        settings = load_settings(home=home)
        flags = {"user_tower": user_tower, "epochs": epochs, "dim": dim,
                 "id_embeddings": id_embeddings, "word_embeddings": word_embeddings,
                 "loss": loss, "max_minutes": minutes,
                 "search": search}
        train_settings = TrainSettings(**{**settings.train.model_dump(),
                                          **{k: v for k, v in flags.items() if v is not None}})
        with Workspace(settings, role="train", own_index=False) as ws:
            served = ws.served_version()
            current = ws.items(served).tower
            features, sequences, kinds = load_home(ws.conn, current.config.image_dim)
            weights = event_weights(kinds, settings.user)
            tower = ItemTowerConfig(
                text_dim=features.text.shape[1], image_dim=current.config.image_dim,
                dim=train_settings.dim, text_weight=settings.tower.text_weight,
                image_weight=settings.tower.image_weight, seed=train_settings.seed)
            untrained = ItemTowerConfig(
                text_dim=features.text.shape[1], image_dim=current.config.image_dim,
                dim=settings.tower.dim, text_weight=settings.tower.text_weight,
                image_weight=settings.tower.image_weight, seed=settings.tower.seed)
            tuning_seqs, tuning_weights, valid = holdout_last(sequences, weights=weights)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.3f}"),
                       TextColumn(f"valid recall@{RECALL_K} {{task.fields[recall]}}"),
                       TimeElapsedColumn())
            with Progress(*columns, console=err) as bar:
                shown = RichProgress(bar)
                tuned = tune(features, tuning_seqs, valid, train_settings, tower, untrained,
                             settings.user, progress=shown, weights=tuning_weights)
            served_recall = served_score(ws, served, features, tuned.valid)
            summary: dict[str, Any] = {
                "served_version": served, f"served_valid_recall@{RECALL_K}": served_recall,
                "chosen": tuned.chosen.name, f"valid_recall@{RECALL_K}": tuned.chosen.recall,
                f"valid_recall@{RECALL_K}_untrained": tuned.candidates[0].recall,
                "users": len(sequences), "tuning": tuned.to_dict()}
            best = tuned
            if tuned.untrained_won and force:
                best = _best_trained(tuned, train_settings)
            wins = best.chosen.recall > served_recall and not tuned.untrained_won
            if best.settings is None or not (wins or force):
                summary.update({"promoted": False, "version": served})
                _report(summary, as_json, tuned, served_recall)
                return
            with Progress(*columns, console=err) as bar:
                shown = RichProgress(bar)
                shown.candidate("refit", {})
                result = refit(features, sequences, best, tower, settings.user, shown, weights)
            assert result is not None
            chosen_settings = best.settings
            manifest = save_version(ws, result, features.product_ids,
                                    chosen_settings.model_dump(), best.to_dict())
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err) as bar:
                task = bar.add_task(f"re-indexing with {manifest.version}",
                                    total=len(features))
                indexed = build_version(ws, manifest.version, lambda n: bar.advance(task, n))
        switched = serve_version(settings, manifest.version)
    summary.update({"promoted": True, "forced": force and not wins, "version": manifest.version,
                    "chosen": best.chosen.name, f"valid_recall@{RECALL_K}": best.chosen.recall,
                    "user_tower": chosen_settings.user_tower, "loss": chosen_settings.loss,
                    "id_embeddings": chosen_settings.id_embeddings,
                    "word_embeddings": result.words is not None,
                    "products_indexed": indexed, "served": switched,
                    **_refit_metrics(result.metrics)})
    if as_json:
        out.print_json(json.dumps(summary))
        return
    versus = f"served {served} {served_recall:.4f}"
    out.print(f"trained {manifest.version} ({best.chosen.name}: {chosen_settings.user_tower} "
              f"user tower, {best.chosen.epochs} epochs refit on every event in "
              f"{result.metrics['train_seconds']:.0f} s): valid recall@{RECALL_K} "
              f"{best.chosen.recall:.4f} ({versus}; untrained {tuned.candidates[0].recall:.4f})"
              f"{', forced' if force and not wins else ''}; fusion weights "
              f"{_weights(result.metrics)}; {indexed} products re-indexed, "
              f"{switched}.", highlight=False)


def _best_trained(tuned: TuneResult, base: TrainSettings) -> TuneResult:
    """``tuned`` with its best trained candidate chosen (for ``--force``), when there is
    one; ``tuned`` itself (untrained chosen) otherwise."""
    trained = [c for c in tuned.candidates[1:] if c.epochs > 0]
    if not trained:
        return tuned
    best = max(trained, key=lambda c: c.recall)
    return replace(tuned, chosen=best,
                   settings=base.model_copy(update={**best.overrides, "epochs": best.epochs}))


def _weights(metrics: dict[str, Any]) -> str:
    """``text 0.93, image 1.08``: how much each modality counts in the trained tower."""
    return ", ".join(f"{m} {w:.3g}" for m, w in metrics.get("modality_weights", {}).items())


def _refit_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("best_epoch", "train_seconds", "train_positions",
                                    "modality_weights", "words") if k in metrics}


def _report(summary: dict[str, Any], as_json: bool, tuned: TuneResult,
            served_recall: float) -> None:
    """Nothing promoted: say why, with both numbers."""
    if as_json:
        out.print_json(json.dumps(summary))
        return
    served = summary["served_version"]
    if tuned.untrained_won:
        best = max(tuned.candidates[1:], key=lambda c: c.recall, default=None)
        trained = (f" (best trained: {best.name} {best.recall:.4f}, paired z {tuned.z:.2f}, "
                   "not a clear win)" if best and best.recall > tuned.chosen.recall else
                   f" (best trained: {best.name} {best.recall:.4f})" if best else "")
        out.print(f"the untrained model wins on validation: recall@{RECALL_K} "
                  f"{tuned.chosen.recall:.4f}{trained}; nothing new to serve, {served} "
                  f"({served_recall:.4f}) stays served.", highlight=False)
    else:
        out.print(f"kept {served}: it scores valid recall@{RECALL_K} {served_recall:.4f}, the "
                  f"best new candidate ({tuned.chosen.name}) {tuned.chosen.recall:.4f}; "
                  "nothing promoted (--force to serve it anyway).", highlight=False)


def served_score(ws: Workspace, version: str | None, features: ItemFeatures,
                 valid: Validation) -> float:
    """Validation recall@10 of the served ``version`` on ``valid``: its indexed vectors
    (tower over the cached features plus its ID embeddings), its user tower, and its
    new-product boost on the products it was not trained on; 0 without a version."""
    import numpy as np
    import torch

    from semrec.towers.sequential import SequentialUserTower
    from semrec.training.model import PoolingUsers
    from semrec.training.trainer import history_window, user_vectors
    from semrec.training.tuning import score_vectors

    if version is None:
        return 0.0
    items = ws.items(version)
    content = items.tower.embed(features.text, features.image, features.has_image)
    vectors = torch.from_numpy(items.vectors(features.product_ids, content, features.words))
    tower = ws.user_tower(version)
    pooling = getattr(tower, "settings", ws.settings.user)  # the version's saved pooling
    module: torch.nn.Module = (tower.module if isinstance(getattr(tower, "module", None),
                                                          SequentialUserTower)
                               else PoolingUsers(pooling, pooling.max_history))
    users = user_vectors(module, vectors, valid.histories, history_window(module),
                         weights=valid.weights)
    bonus = None
    if items.trained is not None:
        new = np.array([pid not in items.trained for pid in features.product_ids])
        boost = ws.manifest(version).cosine_boost(ws.settings.feed)
        bonus = torch.from_numpy(np.where(new, boost, 0.0).astype(np.float32))
    return float(score_vectors(vectors, users, valid, bonus)["recall"])
