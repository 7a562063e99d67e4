"""The training core: a pure function of (frozen features, per-user chronological item
sequences, settings) -> (trained item tower, user tower, metrics).

``semrec train`` feeds it the data directory's events; the evaluation feeds it a split's
training events. Every position of every sequence is a training example (causal: the user
after events ``0..t`` must rank event ``t+1`` first), scored by sampled softmax with logQ.
After each epoch, full-ranking recall@10 on the validation targets (history excluded)
decides early stopping; the best epoch's weights are returned. Deterministic for a seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from semrec.config import TrainSettings, UserSettings
from semrec.towers.item import ItemTower, ItemTowerConfig, add_ids
from semrec.towers.sequential import SequentialConfig, SequentialUserTower
from semrec.training.data import ItemFeatures, Validation, holdout_last
from semrec.training.model import ItemEncoder, PoolingUsers, SampledSoftmax

RECALL_K = 10


@dataclass
class TrainResult:
    """The trained towers (``user_tower`` None: the parameter-free pooling), each product's
    ID embedding when trained with them, which products had training events (``trained``,
    a mask: the others are new to this model) and what happened."""

    item_tower: ItemTower
    user_tower: SequentialUserTower | None
    id_embeddings: np.ndarray | None
    trained: np.ndarray
    metrics: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)

    def item_vectors(self, features: ItemFeatures) -> np.ndarray:
        """Every product's unit vector, as the index will hold it."""
        vectors = self.item_tower.embed(features.text, features.image, features.has_image)
        if self.id_embeddings is None:
            return vectors
        return add_ids(vectors, self.id_embeddings)


class Progress:
    """Callbacks the trainer reports through (all optional): steps per epoch, each step's
    loss, each epoch's metrics."""

    def start(self, epoch: int, steps: int) -> None: ...

    def step(self, loss: float) -> None: ...

    def end(self, epoch: int, metrics: dict[str, float]) -> None: ...


def fit(features: ItemFeatures, sequences: list[np.ndarray], settings: TrainSettings,
        tower: ItemTowerConfig, user: UserSettings, valid: Validation | None = None,
        progress: Progress | None = None) -> TrainResult:
    """Train on ``sequences`` (item indices, oldest first). Without ``valid``, each user's
    last event (sequences of 3+) is held out for validation and not trained on."""
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _fit(features, sequences, settings, tower, user, valid, progress or Progress())
    finally:
        torch.set_num_threads(threads)


def _fit(features: ItemFeatures, sequences: list[np.ndarray], settings: TrainSettings,
         tower: ItemTowerConfig, user: UserSettings, valid: Validation | None,
         progress: Progress) -> TrainResult:
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    if valid is None:
        sequences, valid = holdout_last(sequences)
    valid = valid.sample(settings.valid_users, settings.seed)
    examples = [s[-(settings.max_len + 1):] for s in sequences if len(s) >= 2]
    if not examples:
        raise ValueError("nothing to train on: no user has two or more events")
    popularity = np.bincount(np.concatenate([s[1:] for s in examples]), minlength=len(features))
    seen = np.bincount(np.concatenate(examples), minlength=len(features)) > 0

    items = ItemEncoder(ItemTower(tower), features, settings.id_embeddings, settings.id_dropout,
                        seen)
    users: torch.nn.Module = (
        SequentialUserTower(SequentialConfig(tower.dim, settings.max_len, settings.layers,
                                             settings.heads, settings.dropout))
        if settings.user_tower == "sequential" else PoolingUsers(user, settings.max_len))
    task = SampledSoftmax(popularity, settings.negatives, settings.temperature, settings.logq,
                          seen, full=settings.loss == "full")
    params = list(items.parameters()) + list(users.parameters())
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    started = time.perf_counter()
    best: dict[str, Any] = {"recall": -1.0, "epoch": 0, "state": None}
    history: list[dict[str, float]] = []
    baseline = evaluate(items, users, valid)
    for epoch in range(1, settings.epochs + 1):
        batches = _batches(examples, settings.batch_size, rng)
        progress.start(epoch, len(batches))
        items.train()
        users.train()
        losses = []
        for batch in batches:
            loss = _step(batch, items, users, task, optimiser, generator)
            losses.append(loss)
            progress.step(loss)
        recall = evaluate(items, users, valid)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), f"valid_recall@{RECALL_K}": recall,
               "seconds": round(time.perf_counter() - started, 1)}
        history.append(row)
        progress.end(epoch, row)
        if recall > best["recall"]:
            best = {"recall": recall, "epoch": epoch,
                    "state": copy.deepcopy((items.state_dict(), users.state_dict()))}
        elif epoch - best["epoch"] >= settings.patience:
            break
        if time.perf_counter() - started > settings.max_minutes * 60:
            break
    items.load_state_dict(best["state"][0])
    users.load_state_dict(best["state"][1])
    items.eval()
    users.eval()
    metrics = {f"valid_recall@{RECALL_K}": best["recall"], "best_epoch": best["epoch"],
               "epochs_run": len(history), f"valid_recall@{RECALL_K}_untrained": baseline,
               "train_seconds": round(time.perf_counter() - started, 1),
               "valid_users": len(valid), "train_sequences": len(examples),
               "train_positions": int(sum(len(s) - 1 for s in examples))}
    ids = None
    if items.ids is not None:
        ids = (items.ids.weight.detach() * items.seen[:, None]).numpy().copy()
    return TrainResult(items.tower, users if isinstance(users, SequentialUserTower) else None,
                       ids, seen, metrics, history)


def _batches(examples: list[np.ndarray], size: int, rng: np.random.Generator
             ) -> list[list[np.ndarray]]:
    """Shuffled batches of sequences of similar length (little padding), in random order."""
    lengths = np.array([len(s) for s in examples])
    order = np.lexsort((rng.random(len(examples)), lengths))
    batches = [[examples[i] for i in order[s:s + size]] for s in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _step(batch: list[np.ndarray], items: ItemEncoder, users: torch.nn.Module,
          task: SampledSoftmax, optimiser: torch.optim.Optimizer,
          generator: torch.Generator) -> float:
    length = max(len(s) for s in batch) - 1
    inputs = torch.zeros(len(batch), length, dtype=torch.long)
    targets = torch.zeros(len(batch), length, dtype=torch.long)
    valid = torch.zeros(len(batch), length, dtype=torch.bool)
    for i, seq in enumerate(batch):
        n = len(seq) - 1
        inputs[i, :n] = torch.from_numpy(seq[:-1])
        targets[i, :n] = torch.from_numpy(seq[1:])
        valid[i, :n] = True
    positives = targets[valid]
    candidates, labels = task.candidates(positives, generator)
    needed, where = torch.unique(torch.cat([inputs[valid], candidates]), return_inverse=True)
    vectors = items(needed)
    n_in = int(valid.sum())
    history = torch.zeros(len(batch), length, vectors.shape[1])
    history[valid] = vectors[where[:n_in]]
    user_vectors = users(history)[valid]
    loss = task.loss(user_vectors, candidates, vectors[where[n_in:]], labels, n_in)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


@torch.no_grad()
def user_vectors(users: torch.nn.Module, item_vectors: torch.Tensor,
                 histories: list[np.ndarray], max_len: int | None = None,
                 batch: int = 512) -> torch.Tensor:
    """Each history's user vector (after its newest event), batched by length."""
    users.eval()
    out = torch.zeros(len(histories), item_vectors.shape[1])
    limit = max_len or max(len(h) for h in histories)
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(order), batch):
        rows = [r for r in order[start:start + batch] if len(histories[r])]
        if not rows:
            continue
        windows = [histories[r][-limit:] for r in rows]
        length = max(len(w) for w in windows)
        index = torch.zeros(len(rows), length, dtype=torch.long)
        valid = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, w in enumerate(windows):
            index[i, :len(w)] = torch.from_numpy(np.asarray(w, np.int64))
            valid[i, :len(w)] = True
        x = item_vectors[index] * valid[..., None]
        last = torch.tensor([len(w) - 1 for w in windows])
        out[rows] = users(x)[torch.arange(len(rows)), last]
    return out


@torch.no_grad()
def evaluate(items: ItemEncoder, users: torch.nn.Module, valid: Validation,
             k: int = RECALL_K, batch: int = 1024) -> float:
    """Full-ranking recall@k of ``valid``'s targets, each user's history excluded."""
    if len(valid) == 0:
        return 0.0
    was = items.training
    items.eval()
    vectors = items.all_vectors()
    max_len = getattr(users, "config", None)
    u = user_vectors(users, vectors, valid.histories,
                     max_len.max_len if max_len is not None else users.weights.shape[0])
    hits = 0
    for start in range(0, len(valid), batch):
        scores = u[start:start + batch] @ vectors.T
        for i, h in enumerate(valid.histories[start:start + batch]):
            scores[i, torch.from_numpy(np.asarray(h, np.int64))] = -torch.inf
        targets = torch.from_numpy(valid.targets[start:start + batch])
        target_scores = scores[torch.arange(len(targets)), targets]
        ranks = (scores >= target_scores[:, None]).sum(dim=1) - 1  # ties count against
        hits += int((ranks < k).sum())
    items.train(was)
    return hits / len(valid)
