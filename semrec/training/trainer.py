"""The training core: a pure function of (frozen features, per-user chronological item
sequences, settings) -> (trained item tower, user tower, metrics).

``semrec train`` feeds it the data directory's events; the evaluation feeds it a split's
training events. Every position of every sequence is a training example (causal: the user
after events ``0..t`` must rank event ``t+1`` first), scored by sampled softmax with logQ.

Event types: the history a user is pooled from weighs each event by its type (``weights``,
parallel to the sequences: ``data.event_weights``), exactly as serving's pooling tower does;
the sequential tower reads no types, in training as in serving. Every event is a target,
whatever its type: a feed leaves out only what the user bought (``bought_events``) and ranks
everything else, a viewed product included, so the next event of any type is what it should
have ranked first (and a shop with views alone still trains).
After each epoch, full-ranking recall@10 on the validation targets (history excluded)
decides early stopping; the best epoch's weights are returned. The weights scored, kept and
returned are a moving average of the steps' (``WeightAverage``). Deterministic for a seed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from semrec.config import TrainSettings, UserSettings
from semrec.towers.item import ItemTower, ItemTowerConfig, add_terms
from semrec.towers.sequential import SequentialConfig, SequentialUserTower, user_vectors
from semrec.towers.words import WordTable, vocabulary
from semrec.training.data import ItemFeatures, Validation, holdout_last
from semrec.training.model import ItemEncoder, PoolingUsers, SampledSoftmax

RECALL_K = 10


@dataclass
class TrainResult:
    """The trained towers (``user_tower`` None: the parameter-free pooling), each product's
    ID embedding and the words' vectors when trained with them, which products had
    training events (``trained``, a mask: the others are new to this model) and what
    happened."""

    item_tower: ItemTower
    user_tower: SequentialUserTower | None
    id_embeddings: np.ndarray | None
    trained: np.ndarray
    metrics: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)
    words: WordTable | None = None

    def item_vectors(self, features: ItemFeatures) -> np.ndarray:
        """Every product's unit vector, as the index will hold it."""
        vectors = self.item_tower.embed(features.text, features.image, features.has_image)
        if self.id_embeddings is None and self.words is None:
            return vectors
        words = None if self.words is None else self.words.vectors(features.words)
        return add_terms(vectors, self.id_embeddings, words)


#: ``loss = "auto"`` is the sampled softmax where the full one would score more than this
#: many times ``negatives`` products a step (config.py, docs/training.md)
FULL_OVER_NEGATIVES = 4


def resolve_loss(settings: TrainSettings, trained_products: int) -> TrainSettings:
    """``settings`` with ``loss = "auto"`` made ``full`` or ``sampled`` for a catalogue of
    ``trained_products`` products with training events; any other loss as it is."""
    if settings.loss != "auto":
        return settings
    many = trained_products > FULL_OVER_NEGATIVES * settings.negatives
    return settings.model_copy(update={"loss": "sampled" if many else "full"})


class Progress:
    """Callbacks the trainer reports through (all optional): steps per epoch, each step's
    loss, each epoch's metrics."""

    def start(self, epoch: int, steps: int) -> None: ...

    def step(self, loss: float) -> None: ...

    def end(self, epoch: int, metrics: dict[str, float]) -> None: ...


def fit(features: ItemFeatures, sequences: list[np.ndarray], settings: TrainSettings,
        tower: ItemTowerConfig, user: UserSettings, valid: Validation | None = None,
        progress: Progress | None = None,
        weights: list[np.ndarray] | None = None) -> TrainResult:
    """Train on ``sequences`` (item indices, oldest first; ``weights`` each event's type
    weight, None: all the same). Without ``valid``, each user's last event (sequences of 3+)
    is held out for validation and not trained on. With an empty ``valid`` (a refit),
    exactly ``settings.epochs`` epochs run and the last is kept."""
    with torch_threads(settings.threads):
        return Training(features, sequences, settings, tower, user, valid, progress,
                        weights=weights).to_end()


class torch_threads:  # noqa: N801 (a context manager, used like a function)
    """Cap torch's CPU threads to ``threads`` (0: leave them) inside the ``with`` block."""

    def __init__(self, threads: int) -> None:
        self.threads, self.saved = threads, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


class WeightAverage:
    """An exponential moving average of a run's trainable weights, updated after every
    optimiser step: ``average <- d * average + (1 - d) * weights``. ``d`` grows with the
    step count ``n`` as in TensorFlow's ``ExponentialMovingAverage`` (``(1 + n) / (10 + n)``)
    up to ``decay``, whose horizon is ``epochs`` epochs of ``steps`` steps
    (``1 - 1 / (epochs * steps)``): early on, while the model moves fast, the average
    follows it closely (a candidate is judged against the untrained model from its second
    epoch); near the plateau it spans about an epoch.

    Batches group sequences of like length in random order, so the weights at an epoch's
    end lean towards its last few batches: with the last step's weights, amazon-games'
    validation recall@10 swung by up to 8 % from one epoch to the next (0.1182, 0.1088,
    0.1178), and the same swings came back with the same batches at another model seed.
    The refit trains a chosen number of epochs with nobody to pick a good one, so it drew
    from those swings (docs/training.md). Only parameters are kept (no copy of the features
    held as buffers), beside the live ones; ``applied`` swaps them in for scoring and saving.
    """

    def __init__(self, params: list[torch.nn.Parameter], epochs: float, steps: int) -> None:
        self.params = params
        self.decay = 1.0 - 1.0 / max(epochs * steps, 1.0)
        self.average = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, param in zip(self.average, self.params, strict=True):
            average.lerp_(param, 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the live ones, for the block's length."""
        live = [p.detach().clone() for p in self.params]
        self.load()
        try:
            yield
        finally:
            self._assign(live)

    def load(self) -> None:
        """Put the averaged weights in place of the live ones, for good."""
        self._assign(self.average)

    @torch.no_grad()
    def _assign(self, values: list[torch.Tensor]) -> None:
        for param, value in zip(self.params, values, strict=True):
            param.copy_(value)


class Training:
    """One training run, an epoch at a time: ``fit`` loops it to the end, the search
    (``tuning.py``) interleaves several and drops the losing ones.

    After each epoch the validation targets are ranked (``valid_ranks``), with every
    product in ``boosts`` (cosine units) added to products without training events, and
    the epoch scores its best boost's recall@10; the best epoch's weights are kept. ``done``
    after ``epochs`` epochs, or ``patience`` epochs without a better score. With no
    validation users (a refit) the score is not read and the last epoch is kept. With
    ``average_epochs`` the weights scored and kept are ``WeightAverage``'s.
    """

    def __init__(self, features: ItemFeatures, sequences: list[np.ndarray],
                 settings: TrainSettings, tower: ItemTowerConfig, user: UserSettings,
                 valid: Validation | None = None, progress: Progress | None = None,
                 boosts: tuple[float, ...] = (0.0,),
                 weights: list[np.ndarray] | None = None) -> None:
        torch.manual_seed(settings.seed)
        self.settings, self.progress, self.boosts = settings, progress or Progress(), boosts
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)
        if valid is None:
            sequences, weights, valid = holdout_last(sequences, weights=weights)
        self.valid = valid.sample(settings.valid_users, settings.seed)
        if weights is None:
            weights = [np.ones(len(s)) for s in sequences]
        window = settings.max_len + 1
        self.examples = [s[-window:] for s in sequences if len(s) >= 2]
        self.weights = [w[-window:] for s, w in zip(sequences, weights, strict=True)
                        if len(s) >= 2]
        if not self.examples:
            raise ValueError("nothing to train on: no user has two or more events")
        n = len(features)
        popularity = np.bincount(np.concatenate([s[1:] for s in self.examples]), minlength=n)
        self.seen = np.bincount(np.concatenate(self.examples), minlength=n) > 0
        self.settings = settings = resolve_loss(settings, int(self.seen.sum()))
        words = (vocabulary(features.words, self.seen)
                 if settings.word_embeddings and features.words is not None else None)
        self.items = ItemEncoder(ItemTower(tower), features, settings.id_embeddings,
                                 settings.id_dropout, self.seen, words)
        self.users: torch.nn.Module = (
            SequentialUserTower(SequentialConfig(tower.dim, settings.max_len, settings.layers,
                                                 settings.heads, settings.dropout))
            # pooling reads the served window: a training example holds max_len + 1 events,
            # but validation pools the newest [user] max_history, as serving does
            if settings.user_tower == "sequential"
            else PoolingUsers(user, max(settings.max_len, user.max_history)))
        self.task = SampledSoftmax(popularity, settings.negatives, settings.temperature,
                                   settings.logq, self.seen, full=settings.loss == "full")
        fusion = self.items.tower.fusion
        # Only where products have two modalities is there a ratio to learn: a text-only
        # vector is invariant to its one weight, and Adam would still walk it on the
        # rounding noise of a zero gradient (a text weight of 0.84 on a text-only shop).
        learn_fusion = (settings.fusion_lr > 0 and features.has_image is not None
                        and bool(np.any(features.has_image)))
        fusion.requires_grad_(learn_fusion)
        params = [p for p in [*self.items.parameters(), *self.users.parameters()]
                  if p is not fusion]
        groups = [{"params": params}]
        if learn_fusion:  # no weight decay: it would pull towards the config
            groups.append({"params": [fusion], "lr": settings.fusion_lr, "weight_decay": 0.0})
        self.optimiser = torch.optim.AdamW(groups, lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimiser,
                                                               settings.lr_decay)
        self.average = (WeightAverage([p for g in groups for p in g["params"]],
                                      settings.average_epochs, self.steps)
                        if settings.average_epochs > 0 else None)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"recall": -1.0, "epoch": 0, "boost": 0.0, "state": None}
        self.seconds = 0.0
        self.done = False
        self.baseline = self.score()[0] if len(self.valid) else 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def score(self) -> tuple[float, float, np.ndarray]:
        """(best recall@10 over ``boosts``, that boost, each validation user's hit at it)
        of the model as it is now."""
        vectors = self.items.all_vectors()
        users = user_vectors(self.users, vectors, self.valid.histories,
                             history_window(self.users), weights=self.valid.weights)
        new = torch.from_numpy(~self.seen)
        ranks = valid_ranks(vectors, users, self.valid, new, self.boosts)
        recalls = (ranks < RECALL_K).mean(axis=1)
        best = int(np.argmax(recalls))  # the first of equals: the smallest boost
        return float(recalls[best]), self.boosts[best], ranks[best] < RECALL_K

    def epoch(self) -> dict[str, float]:
        """Train one epoch, score it, keep it if it is the best; returns its row."""
        started = time.perf_counter()
        number = self.epochs_run + 1
        batches = _batches(self.examples, self.settings.batch_size, self.rng)
        self.progress.start(number, len(batches))
        self.items.train()
        self.users.train()
        losses = []
        for batch in batches:
            loss = self._step(batch)
            losses.append(loss)
            if self.average is not None:
                self.average.update()
            self.progress.step(loss)
        self.schedule.step()
        recall, boost, hits = 0.0, 0.0, None
        if not len(self.valid):  # a refit: the last epoch is the one kept
            self.best = {"recall": recall, "epoch": number, "boost": boost, "state": None}
        else:
            with self.average.applied() if self.average is not None else nullcontext():
                recall, boost, hits = self.score()
                if recall > self.best["recall"]:
                    self.best = {"recall": recall, "epoch": number, "boost": boost,
                                 "hits": hits, "state": copy.deepcopy(
                                     (self.items.state_dict(), self.users.state_dict()))}
        self.seconds += time.perf_counter() - started
        row = {"epoch": number, "loss": float(np.nanmean(losses)) if losses else 0.0,
               f"valid_recall@{RECALL_K}": recall, "seconds": round(self.seconds, 1)}
        if len(self.boosts) > 1:
            row["boost"] = boost
        self.history.append(row)
        self.progress.end(number, row)
        if (number >= self.settings.epochs
                or number - self.best["epoch"] >= self.settings.patience):
            self.done = True
        return row

    def step_seconds(self, steps: int = 3) -> float:
        """Seconds an optimiser step of this run takes here: the mean of ``steps`` steps
        after one that warms up. They train the run, so time a run that is then dropped."""
        batches = _batches(self.examples, self.settings.batch_size, self.rng)[:steps + 1]
        started = time.perf_counter()
        for n, batch in enumerate(batches):
            if n == 1:
                started = time.perf_counter()
            self._step(batch)
        return (time.perf_counter() - started) / max(len(batches) - 1, 1)

    def _step(self, batch: np.ndarray) -> float:
        """One optimiser step on the examples ``batch`` indexes; its loss."""
        return _step([self.examples[i] for i in batch], [self.weights[i] for i in batch],
                     self.items, self.users, self.task, self.optimiser, self.generator,
                     self.settings.repeats)

    @property
    def steps(self) -> int:
        """Optimiser steps in an epoch."""
        return -(-len(self.examples) // self.settings.batch_size)

    def to_end(self) -> TrainResult:
        """Epochs until ``done`` or the time budget (``max_minutes``), then ``result``."""
        while not self.done and self.seconds < self.settings.max_minutes * 60:
            self.epoch()
        return self.result()

    def result(self) -> TrainResult:
        """The best epoch's towers (the last epoch's without validation users)."""
        if not self.history:
            raise ValueError("no epoch trained yet")
        items, users = self.items, self.users
        if self.best["state"] is not None:
            items.load_state_dict(self.best["state"][0])
            users.load_state_dict(self.best["state"][1])
        elif self.average is not None:  # a refit: its last epoch's average
            self.average.load()
        items.eval()
        users.eval()
        metrics = {f"valid_recall@{RECALL_K}": self.best["recall"],
                   "best_epoch": self.best["epoch"], "epochs_run": self.epochs_run,
                   f"valid_recall@{RECALL_K}_untrained": self.baseline,
                   "train_seconds": round(self.seconds, 1), "valid_users": len(self.valid),
                   "train_sequences": len(self.examples),
                   "train_positions": int(sum(len(s) - 1 for s in self.examples)),
                   "modality_weights": items.tower.modality_weights()}
        if len(self.boosts) > 1:
            metrics["valid_boost"] = self.best["boost"]
        ids = None
        if items.ids is not None:
            ids = (items.ids.weight.detach() * items.seen[:, None]).numpy().copy()
        words = items.word_table()
        if words is not None:
            metrics["words"] = len(words.words)
        return TrainResult(items.tower, users if isinstance(users, SequentialUserTower) else None,
                           ids, self.seen.copy(), metrics, list(self.history), words)


def history_window(users: torch.nn.Module) -> int:
    """How many of a history's newest events ``users`` reads."""
    config = getattr(users, "config", None)
    return config.max_len if config is not None else users.weights.shape[0]


def _batches(examples: list[np.ndarray], size: int, rng: np.random.Generator
             ) -> list[np.ndarray]:
    """Shuffled batches (indices into ``examples``) of sequences of similar length (little
    padding), in random order."""
    lengths = np.array([len(s) for s in examples])
    order = np.lexsort((rng.random(len(examples)), lengths))
    batches = [order[s:s + size] for s in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _step(batch: list[np.ndarray], weights: list[np.ndarray], items: ItemEncoder,
          users: torch.nn.Module, task: SampledSoftmax, optimiser: torch.optim.Optimizer,
          generator: torch.Generator, repeats: bool = True) -> float:
    """One optimiser step on ``batch`` (its events weighing ``weights`` in the history);
    without ``repeats``, a position whose target the user already had earlier in the window
    is read as history but not trained on."""
    length = max(len(s) for s in batch) - 1
    inputs = torch.zeros(len(batch), length, dtype=torch.long)
    targets = torch.zeros(len(batch), length, dtype=torch.long)
    valid = torch.zeros(len(batch), length, dtype=torch.bool)
    trained = torch.zeros(len(batch), length, dtype=torch.bool)
    weight = torch.zeros(len(batch), length)
    for i, (seq, w) in enumerate(zip(batch, weights, strict=True)):
        n = len(seq) - 1
        inputs[i, :n] = torch.from_numpy(seq[:-1])
        targets[i, :n] = torch.from_numpy(seq[1:])
        valid[i, :n] = True
        weight[i, :n] = torch.from_numpy(np.asarray(w[:-1], np.float32))
        trained[i, :n] = True if repeats else torch.from_numpy(new_targets(seq))
    if not bool(trained.any()):
        return float("nan")
    positives = targets[trained]
    candidates, labels = task.candidates(positives, generator)
    needed, where = torch.unique(torch.cat([inputs[valid], candidates]), return_inverse=True)
    vectors = items(needed)
    n_in = int(valid.sum())
    history = torch.zeros(len(batch), length, vectors.shape[1])
    history[valid] = vectors[where[:n_in]]
    user_vectors = users(history, weight)[trained]
    loss = task.loss(user_vectors, candidates, vectors[where[n_in:]], labels, len(positives))
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def new_targets(seq: np.ndarray) -> np.ndarray:
    """For each position ``t`` of ``seq`` (targets ``seq[1:]``), whether its target is a
    product the sequence had not had before it."""
    first = np.zeros(len(seq), bool)
    first[np.unique(seq, return_index=True)[1]] = True
    return first[1:]


@torch.no_grad()
def valid_ranks(items: torch.Tensor, users: torch.Tensor, valid: Validation,
                new: torch.Tensor | None = None, boosts: tuple[float, ...] = (0.0,),
                batch: int = 1024) -> np.ndarray:
    """Each validation target's 0-based full rank (history excluded, ties against the
    target) among ``items`` (n, d) for users ``users`` (len(valid), d), once per boost:
    ``boosts[b]`` added to every product in the mask ``new``. Shape (len(boosts), users).

    One comparison of the whole catalogue serves every boost: a boost lifts all new
    products, the target too when it is one, so it moves only the count of the other
    group (the new products above a trained target, the trained products above a new one),
    which is recounted on the new products' columns and the new targets' rows alone.
    """
    out = np.zeros((len(boosts), len(valid)), np.int64)
    new = torch.zeros(len(items), dtype=torch.bool) if new is None else new.bool()
    for start in range(0, len(valid), batch):
        scores = users[start:start + batch] @ items.T
        for i, h in enumerate(valid.histories[start:start + batch]):
            scores[i, torch.from_numpy(np.asarray(h, np.int64))] = -torch.inf
        targets = torch.from_numpy(valid.targets[start:start + batch])
        target = scores[torch.arange(len(scores)), targets][:, None]
        unboosted = (scores >= target).sum(1) - 1
        fresh, cold = scores[:, new], new[targets]  # the new products' columns; new targets
        fresh_above = (fresh >= target).sum(1)
        for b, boost in enumerate(boosts):
            rank = unboosted.clone()
            if boost:
                rank[~cold] += (fresh[~cold] + boost >= target[~cold]).sum(1) - fresh_above[~cold]
                lifted = target[cold] + boost
                trained_above = (scores[cold] >= lifted).sum(1) - (fresh[cold] >= lifted).sum(1)
                rank[cold] = trained_above + fresh_above[cold] - 1
            out[b, start:start + len(scores)] = rank.numpy()
    return out


@torch.no_grad()
def top_items(items: torch.Tensor, users: torch.Tensor, valid: Validation,
              bonus: torch.Tensor | None = None, k: int = RECALL_K,
              batch: int = 1024) -> np.ndarray:
    """Each validation user's top ``k`` products (history excluded, ``bonus`` added)."""
    out = np.zeros((len(valid), k), np.int64)
    for start in range(0, len(valid), batch):
        scores = users[start:start + batch] @ items.T
        if bonus is not None:
            scores = scores + bonus
        for i, h in enumerate(valid.histories[start:start + batch]):
            scores[i, torch.from_numpy(np.asarray(h, np.int64))] = -torch.inf
        out[start:start + len(scores)] = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return out


def evaluate(items: ItemEncoder, users: torch.nn.Module, valid: Validation,
             k: int = RECALL_K) -> float:
    """Full-ranking recall@k of ``valid``'s targets, each user's history excluded."""
    if len(valid) == 0:
        return 0.0
    vectors = items.all_vectors()
    users_t = user_vectors(users, vectors, valid.histories, history_window(users),
                           weights=valid.weights)
    ranks = valid_ranks(vectors, users_t, valid)
    return float((ranks[0] < k).mean())
