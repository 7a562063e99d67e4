"""Training that tunes itself on the shop's own validation targets, then refits on everything.

``tune`` runs a bounded search over training settings. Candidate 0 is the untrained model
(the frozen features through the initial, isometric heads, recency pooling: what a data
directory serves before any training), scored exactly like every trained candidate, so it
can win: a candidate that does not beat it on validation is never chosen. Then the
candidates of ``candidates()``, in order (the configured ``[train]`` first, then
alternatives that differ in one idea each: a higher temperature, published SASRec settings,
content heads only, no ID embeddings, a lower learning rate, stronger regularisation,
and the other loss: the full softmax second where ``[train] loss`` came out sampled, the
sampled one last where it came out full), each trained with early stopping on the validation
recall@10 and kept at its best epoch, in batches small enough for an epoch of at least
``MIN_STEPS`` steps (``steps_batch``: small shops). Where ``auto`` came out sampled, a few
steps of the full softmax are timed first (``full_epoch_seconds``), and if the budget affords
``FULL_FIRST_EPOCHS`` epochs of it, search and refit together, ``full`` is tried first: on a
fast enough machine the exact loss beats the sampled one within the budget; on a slow one the
sampled loss's cheaper epochs are what reach a good model.

The search is bounded by a time budget (``[train] max_minutes``) that includes the refit:
before every epoch it checks that the epoch and the refit of the best candidate so far still
fit, and stops otherwise. A candidate whose best-so-far recall after two or more epochs is
below the untrained model's, or below the leader's at the same epoch, is dropped (it is
unlikely to catch up, and the time is better spent on the next idea). Small shops, whose
epochs take seconds, see every candidate; a large one spends its budget on the first few, in
the order above.

New products: before the search, a seeded share of the products with events (``cold_products``) is
held out of every candidate's training (never a target, never an input), while validation
users keep them in their histories and as targets: they are the validation cold group,
standing in for the products the served model will meet untrained. Every epoch is scored
with each boost of ``BOOST_NATS`` added to the products without training events (the feed's
new-product boost, in nats of the candidate's softmax: ``boost * temperature`` in cosine
units), and its best boost is the candidate's; untrained candidates are never boosted, as in
serving. So the boost is chosen on validation, never on the test targets.

``refit`` then trains the chosen settings on every event, validation targets included, for
the epochs the search chose (how ALS is refit for the test), so the served model has read
every user's newest events. It is nothing when the untrained model won.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from semrec.config import TrainSettings, UserSettings
from semrec.towers.item import ItemTower, ItemTowerConfig
from semrec.training.data import ItemFeatures, Validation
from semrec.training.model import ItemEncoder, PoolingUsers
from semrec.training.trainer import (
    RECALL_K,
    Progress,
    Training,
    TrainResult,
    fit,
    history_window,
    resolve_loss,
    top_items,
    torch_threads,
    user_vectors,
    valid_ranks,
)

#: Feed boosts tried on validation for products without training events, in nats.
BOOST_NATS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Bounds on the share of products with events held out of the search as the cold group.
COLD_SHARE = (0.02, 0.1)
UNTRAINED = "untrained"
#: Where ``loss = "auto"`` came out sampled, the full softmax is tried first if the budget
#: affords this many epochs of it, search and refit together: on amazon-games' validation
#: it passed the sampled loss's best from its third epoch (docs/training.md, ninth session).
FULL_FIRST_EPOCHS = 3
#: An epoch has at least this many optimiser steps (``steps_batch``), batches no smaller
#: than ``MIN_BATCH`` sequences.
MIN_STEPS, MIN_BATCH = 50, 32


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a name and its overrides of ``[train]``."""

    name: str
    overrides: dict[str, Any]


@dataclass
class Scored:
    """What the search learnt of one candidate: validation recall@10 at its best epoch and
    boost (``epochs`` 0 for the untrained model), coverage@10 of its validation top tens,
    recall of the cold group alone, the item tower's fusion weights at that epoch
    (``modality_weights``: how much text and image came to count; None untried), and how
    the run ended (``status``: ``untrained``, ``converged``, ``max_epochs``, ``dropped``
    behind the leader, ``budget``, or ``skipped`` for want of time)."""

    name: str
    overrides: dict[str, Any]
    recall: float = 0.0
    epochs: int = 0
    boost: float = 0.0
    coverage: float | None = None
    cold_recall: float | None = None
    epochs_run: int = 0
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    status: str = "skipped"
    curve: list[float] = field(default_factory=list)
    modality_weights: dict[str, float] | None = None
    hits: np.ndarray | None = field(default=None, repr=False)  # per validation user

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, hits=None))
        out.pop("hits")
        for key in ("recall", "coverage", "cold_recall", "seconds", "seconds_per_epoch"):
            if out[key] is not None:
                out[key] = round(out[key], 5)
        out["curve"] = [round(c, 5) for c in self.curve]
        return out


@dataclass
class TuneResult:
    """Every candidate in the order tried (the untrained model first) and the one chosen:
    the best validation recall@10, the earlier one among equals, and a trained one only
    when its win over the untrained model is clear (``paired_z`` >= ``[train] win_z``).
    ``settings`` is what ``refit`` trains (None when the untrained model won); ``valid``
    the validation users every candidate was scored on; ``model`` the chosen candidate as
    the search trained it (validation targets unseen), None when untrained."""

    candidates: list[Scored]
    chosen: Scored
    settings: TrainSettings | None
    valid: Validation
    cold_products: int
    cold_targets: int
    seconds: float
    budget_seconds: float
    model: TrainResult | None = None
    z: float = 0.0  # paired_z of the best trained candidate over the untrained model

    @property
    def untrained_won(self) -> bool:
        return self.chosen.name == UNTRAINED

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.name, "valid_recall@10": round(self.chosen.recall, 5),
                "modality_weights": self.chosen.modality_weights,
                "epochs": self.chosen.epochs, "new_product_boost": self.chosen.boost,
                "valid_users": len(self.valid), "cold_products": self.cold_products,
                "cold_targets": self.cold_targets, "seconds": round(self.seconds, 1),
                "budget_seconds": round(self.budget_seconds, 1), "z_over_untrained": self.z,
                "candidates": [c.to_dict() for c in self.candidates]}


class TuneProgress(Progress):
    """The trainer's callbacks plus one per candidate (all optional)."""

    def candidate(self, name: str, overrides: dict[str, Any]) -> None: ...

    def scored(self, result: Scored) -> None: ...


def candidates(base: TrainSettings, text_dim: int, repeats: bool = True,
               words: bool = True) -> list[Candidate]:
    """The search space, in the order tried: the configured ``[train]``, then one idea each,
    those that won or came close on other shops' validation first (docs/training.md).

    ``content``: pooling users, no ID embeddings, heads as wide as the text features and a
    quarter of the learning rate, so it starts at the untrained model and moves gently (the
    candidate for small shops, where IDs and a transformer overfit). ``sasrec``: the settings
    published for SASRec on Amazon data (dim 64, 1 block, 1 head, dropout 0.2, lr 1e-3).
    ``no-repeats`` (only where the events have ``repeats``, a product bought again): no
    training on targets already in the user's history, which feeds leave out anyway.
    ``no-words`` (only where the products have ``words``): no learnt word vectors.
    The candidates at a lower learning rate (``sasrec``, ``content``, ``slow``) keep it
    constant (``lr_decay`` 1): annealing steadies the full rate's swings, but it stopped these
    gentle ones short on the small shops' validation (docs/training.md).
    """
    ideas = [
        Candidate("configured", {}),
        Candidate("warm", {"temperature": base.temperature * 2}),
        Candidate("sasrec", {"user_tower": "sequential", "dim": 64, "layers": 1, "heads": 1,
                             "dropout": 0.2, "lr": 1e-3, "lr_decay": 1.0}),
        Candidate("content", {"user_tower": "pooling", "id_embeddings": False,
                              "dim": text_dim, "lr": base.lr / 4, "lr_decay": 1.0}),
        Candidate("no-ids", {"id_embeddings": False}),
        *([Candidate("no-words", {"word_embeddings": False})] if words else []),
        Candidate("slow", {"lr": base.lr / 4, "lr_decay": 1.0}),
        Candidate("regularised", {"weight_decay": 0.1, "dropout": 0.5, "id_dropout": 0.5}),
    ]
    if repeats:
        ideas.insert(5, Candidate("no-repeats", {"repeats": False}))
    # the loss [train] did not take: where it took the sampled one (``auto`` on a large
    # catalogue, for speed), the exact one is the first alternative; else the last
    if base.loss == "sampled":
        ideas.insert(1, Candidate("full", {"loss": "full"}))
    else:
        ideas.append(Candidate("sampled", {"loss": "sampled"}))
    seen: set[str] = set()
    out = []
    for idea in ideas:
        key = base.model_copy(update=idea.overrides).model_dump_json()
        if key not in seen:
            seen.add(key)
            out.append(idea)
    return out


def tune(features: ItemFeatures, sequences: list[np.ndarray], valid: Validation,
         base: TrainSettings, tower: ItemTowerConfig, untrained: ItemTowerConfig,
         user: UserSettings, budget_minutes: float | None = None,
         progress: TuneProgress | None = None,
         space: list[Candidate] | None = None,
         weights: list[np.ndarray] | None = None) -> TuneResult:
    """Search ``space`` (default ``candidates(base)``; without ``base.search`` its first,
    the configured settings, alone) on ``valid``, training on
    ``sequences`` minus the held-out cold products (their events weighing ``weights`` by
    type, as ``valid``'s histories weigh theirs); ``tower`` is the trained item tower's
    config (its ``dim`` replaced by each candidate's), ``untrained`` the initial one.
    ``budget_minutes`` (default ``base.max_minutes``) bounds the search and the refit."""
    auto = base.loss == "auto"
    base = resolve_loss(base, _products_with_events(sequences))
    if space is None:
        space = candidates(base, tower.text_dim, any(len(np.unique(s)) < len(s)
                                                     for s in sequences),
                           features.words is not None)
        space = space if base.search else space[:1]
    with torch_threads(base.threads):
        return _tune(features, sequences, valid, base, tower, untrained, user,
                     (budget_minutes or base.max_minutes) * 60, progress or TuneProgress(),
                     space, weights, auto)


def _tune(features: ItemFeatures, sequences: list[np.ndarray], valid: Validation,
          base: TrainSettings, tower: ItemTowerConfig, untrained: ItemTowerConfig,
          user: UserSettings, budget: float, progress: TuneProgress,
          space: list[Candidate], weights: list[np.ndarray] | None,
          auto: bool = False) -> TuneResult:
    started = time.perf_counter()
    valid = valid.sample(base.valid_users, base.seed)
    train, train_weights, cold = hold_out_cold(sequences, weights, len(features), base.seed)
    cold_users = cold[valid.targets] if len(valid) else np.zeros(0, bool)
    positions = sum(max(len(s) - 1, 0) for s in sequences)
    tuned_positions = max(sum(max(len(s) - 1, 0) for s in train), 1)
    trained = _products_with_events(train)

    progress.candidate(UNTRAINED, {})
    zero = score_untrained(features, untrained, user, valid, cold_users)
    progress.scored(zero)
    results, leader = [zero], zero
    model: TrainResult | None = None
    runs: dict[str, float] = {}  # seconds per epoch seen, per candidate

    # where ``auto`` took the sampled loss (a large catalogue), time the full softmax: it
    # goes first if the budget affords FULL_FIRST_EPOCHS epochs of it, search and refit
    full = next((i for i in space if i.overrides.get("loss") == "full"), None)
    probe = None
    if auto and base.loss == "sampled" and full is not None:
        probe = full_epoch_seconds(features, train, base, full, tower, user,
                                   train_weights) + zero.seconds
        affords = FULL_FIRST_EPOCHS * probe * (1 + positions / tuned_positions)
        if affords <= budget - (time.perf_counter() - started):
            space = [full, *(idea for idea in space if idea is not full)]

    def refit_seconds(best: Scored) -> float:
        return best.epochs * best.seconds_per_epoch * positions / tuned_positions

    def epoch_guess(idea: Candidate) -> float:
        if idea.name in runs:
            return runs[idea.name]
        if idea is full and probe is not None:
            return probe
        guess = max(runs.values()) if runs else 0.0
        if idea.overrides.get("loss") == "full" and base.loss == "sampled":
            guess *= max(trained / max(base.negatives, 1), 1.0)  # a step scores every product
        return guess

    stop = False
    for idea in space:
        scored = Scored(idea.name, idea.overrides)
        results.append(scored)
        if stop:
            continue
        elapsed = time.perf_counter() - started
        if elapsed + epoch_guess(idea) + refit_seconds(leader) > budget:
            stop = True
            continue
        settings = searched(base, idea.overrides, train)
        progress.candidate(idea.name, idea.overrides)
        boosts = tuple(b * settings.temperature for b in BOOST_NATS)
        run = Training(features, train, settings, replace(tower, dim=settings.dim), user,
                       valid, progress, boosts, train_weights)
        scored.status = "budget"
        while True:
            row = run.epoch()
            runs[idea.name] = run.seconds / run.epochs_run
            scored.curve.append(row[f"valid_recall@{RECALL_K}"])
            _update(scored, run, settings)
            if run.done:
                scored.status = ("max_epochs" if run.epochs_run >= settings.epochs
                                 else "converged")
                break
            if _behind(scored, leader, zero):
                scored.status = "dropped"
                break
            elapsed = time.perf_counter() - started
            # the next epoch may become this candidate's best: its refit one epoch longer
            grown = replace(scored, epochs=scored.epochs_run + 1)
            refit_cost = max(refit_seconds(leader), refit_seconds(grown))
            if elapsed + runs[idea.name] + refit_cost > budget:
                stop = True
                break
        _describe(scored, run, valid, cold_users)
        progress.scored(scored)
        if scored.recall > leader.recall:
            leader, model = scored, run.result()
        del run
    z = paired_z(leader.hits, zero.hits) if leader is not zero else 0.0
    if leader is not zero and z < base.win_z:  # not a clear win: keep the untrained model
        leader, model = zero, None
    chosen_settings = (None if leader.name == UNTRAINED
                       else searched(base, leader.overrides, train).model_copy(
                           update={"epochs": leader.epochs}))
    return TuneResult(results, leader, chosen_settings, valid, int(cold.sum()),
                      int(cold_users.sum()), time.perf_counter() - started, budget, model,
                      round(z, 3))


def _products_with_events(sequences: list[np.ndarray]) -> int:
    """How many products the sequences' trainable examples (2+ events) name."""
    named = [s for s in sequences if len(s) >= 2]
    return len(np.unique(np.concatenate(named))) if named else 0


def steps_batch(base: TrainSettings, overrides: dict[str, Any],
                sequences: list[np.ndarray]) -> dict[str, int]:
    """A batch size small enough that an epoch has ``MIN_STEPS`` optimiser steps: a small
    shop's few hundred sequences in batches of 512 would learn from a handful of steps an
    epoch (amazon-office: 10), which early stopping reads as not learning. Empty when the
    configured ``batch_size`` already gives that many (or a candidate sets its own)."""
    if "batch_size" in overrides:
        return {}
    n = sum(1 for s in sequences if len(s) >= 2)
    size = max(MIN_BATCH, n // MIN_STEPS)
    return {"batch_size": size} if size < base.batch_size else {}


def searched(base: TrainSettings, overrides: dict[str, Any],
             train: list[np.ndarray]) -> TrainSettings:
    """``base`` with a candidate's ``overrides``, in the batches ``steps_batch`` gives it:
    the settings the search trains that candidate with."""
    return base.model_copy(update={**overrides, **steps_batch(base, overrides, train)})


def no_validation() -> Validation:
    """No validation users: a run that trains without scoring (a refit, a timing)."""
    return Validation([], np.zeros(0, np.int64))


def full_epoch_seconds(features: ItemFeatures, train: list[np.ndarray], base: TrainSettings,
                       full: Candidate, tower: ItemTowerConfig, user: UserSettings,
                       weights: list[np.ndarray] | None) -> float:
    """Seconds an epoch of ``full`` (the full softmax) would train for here: a few steps of a
    run that is then dropped, timed (``Training.step_seconds``), times an epoch's steps."""
    settings = searched(base, full.overrides, train)
    run = Training(features, train, settings, replace(tower, dim=settings.dim), user,
                   no_validation(), weights=weights)
    return run.step_seconds() * run.steps


def paired_z(hits: np.ndarray | None, baseline: np.ndarray | None) -> float:
    """McNemar's z of ``hits`` over ``baseline`` on the same users: (b - c) / sqrt(b + c),
    b the users only ``hits`` finds, c those only ``baseline`` finds (0 when none differ)."""
    if hits is None or baseline is None or not len(hits):
        return 0.0
    b, c = int((hits & ~baseline).sum()), int((~hits & baseline).sum())
    return (b - c) / np.sqrt(b + c) if b + c else 0.0


def _update(scored: Scored, run: Training, settings: TrainSettings) -> None:
    scored.recall, scored.hits = run.best["recall"], run.best["hits"]
    scored.epochs = run.best["epoch"]
    scored.boost = round(run.best["boost"] / settings.temperature, 3)
    scored.epochs_run = run.epochs_run
    scored.seconds = run.seconds
    scored.seconds_per_epoch = run.seconds / run.epochs_run


def _behind(scored: Scored, leader: Scored, zero: Scored) -> bool:
    """After two or more epochs, below the untrained model, or below what the leader had
    reached by the same epoch."""
    n = len(scored.curve)
    if n < 2:
        return False
    if max(scored.curve) < zero.recall:
        return True
    return bool(leader.curve) and max(scored.curve) < max(leader.curve[:n])


def _describe(scored: Scored, run: Training, valid: Validation, cold_users: np.ndarray) -> None:
    """Coverage@10 and cold-group recall of the candidate at its best epoch and boost."""
    run.result()  # loads the best epoch's weights
    vectors = run.items.all_vectors()
    users = user_vectors(run.users, vectors, valid.histories, history_window(run.users),
                         weights=valid.weights)
    bonus = torch.from_numpy(np.where(run.seen, 0.0, run.best["boost"]).astype(np.float32))
    score = score_vectors(vectors, users, valid, bonus, cold_users)
    scored.coverage, scored.cold_recall = score["coverage"], score["cold_recall"]
    scored.modality_weights = run.items.tower.modality_weights()


def hold_out_cold(sequences: list[np.ndarray], weights: list[np.ndarray] | None,
                  n_items: int, seed: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray] | None, np.ndarray]:
    """What the search trains on: ``sequences`` (and their ``weights``) without the
    ``cold_products``, and those products as a mask over the catalogue."""
    held = cold_products(sequences, n_items, seed)
    cold = np.zeros(n_items, bool)
    cold[held] = True
    if not len(held):
        return sequences, weights, cold
    kept = None if weights is None else [w[~cold[s]] for s, w in
                                         zip(sequences, weights, strict=True)]
    return [s[~cold[s]] for s in sequences], kept, cold


def cold_products(sequences: list[np.ndarray], n_items: int, seed: int) -> np.ndarray:
    """The products held out of the search: a seeded sample of those with events, as many
    as the catalog's share of products without events (the ones new to a trained model),
    bounded by ``COLD_SHARE``."""
    counts = np.bincount(np.concatenate(sequences), minlength=n_items) if sequences else \
        np.zeros(n_items, np.int64)
    with_events = np.flatnonzero(counts)
    share = float(np.clip(1 - len(with_events) / max(n_items, 1), *COLD_SHARE))
    n = int(round(share * len(with_events)))
    if n == 0 or len(with_events) < 50:  # too few products to spare any
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(seed).choice(with_events, n, replace=False))


@torch.no_grad()
def score_vectors(items: torch.Tensor, users: torch.Tensor, valid: Validation,
                  bonus: torch.Tensor | None = None,
                  cold_users: np.ndarray | None = None) -> dict[str, Any]:
    """Validation recall@10 (history excluded, ``bonus`` added to each product's score),
    coverage@10 (distinct products in the top tens over the catalog) and the recall of the
    users in ``cold_users`` alone (None without any)."""
    if not len(valid):
        return {"recall": 0.0, "coverage": 0.0, "cold_recall": None,
                "hits": np.zeros(0, bool)}
    if bonus is not None and bool(bonus.any()):
        boost = float(bonus.max())
        ranks = valid_ranks(items, users, valid, bonus > 0, (boost,))[0]
    else:
        ranks = valid_ranks(items, users, valid)[0]
    hits = ranks < RECALL_K
    top = top_items(items, users, valid, bonus)
    cold = None
    if cold_users is not None and cold_users.any():
        cold = float(hits[cold_users].mean())
    return {"recall": float(hits.mean()), "coverage": len(np.unique(top)) / len(items),
            "cold_recall": cold, "hits": hits}


def score_untrained(features: ItemFeatures, tower: ItemTowerConfig, user: UserSettings,
                    valid: Validation, cold_users: np.ndarray | None = None) -> Scored:
    """Candidate 0: the initial item tower (no IDs) and recency pooling over the newest
    ``max_history`` events, each weighing its type (``valid.weights``), as served before
    any training; never boosted."""
    started = time.perf_counter()
    items = ItemEncoder(ItemTower(tower), features, id_embeddings=False)
    vectors = items.all_vectors()
    users = user_vectors(PoolingUsers(user, user.max_history), vectors, valid.histories,
                         user.max_history, weights=valid.weights)
    score = score_vectors(vectors, users, valid, None, cold_users)
    return Scored(UNTRAINED, {}, recall=score["recall"], coverage=score["coverage"],
                  cold_recall=score["cold_recall"], status=UNTRAINED,
                  modality_weights=items.tower.modality_weights(),
                  seconds=time.perf_counter() - started, hits=score["hits"])


def refit(features: ItemFeatures, sequences: list[np.ndarray], tuned: TuneResult,
          tower: ItemTowerConfig, user: UserSettings,
          progress: Progress | None = None,
          weights: list[np.ndarray] | None = None) -> TrainResult | None:
    """The chosen settings trained on every sequence (its events weighing ``weights``) for
    the epochs the search chose, validation targets included, the last epoch kept; None
    when the untrained model won."""
    if tuned.settings is None:
        return None
    settings = tuned.settings.model_copy(update={"max_minutes": 24 * 60.0})
    result = fit(features, sequences, settings, replace(tower, dim=settings.dim), user,
                 valid=no_validation(), progress=progress, weights=weights)
    result.metrics.update({f"valid_recall@{RECALL_K}": tuned.chosen.recall,
                           f"valid_recall@{RECALL_K}_untrained": tuned.candidates[0].recall,
                           "best_epoch": tuned.chosen.epochs, "refit": True})
    return result
