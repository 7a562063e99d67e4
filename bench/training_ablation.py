"""What each training choice is worth: the training core on one split, variant by variant.

Reads a data directory that has the catalog ingested and the events loaded (its cached
features and event sequences, as ``semrec train`` does; nothing is encoded), splits each
user's sequence leave-last-out (last event: test, the one before: validation, the rest:
training), optionally holds ``cold`` of the products with events out of all training, then
for each variant calls ``semrec.training.fit`` and scores the test targets by full ranking
(history excluded, ties against the target), warm and cold users apart. Then, for the same
model, these diagnoses:

- the cold targets ranked among cold products only, and how far the tenth-best warm product
  is above them (why a trained model loses new products);
- the feed's new-product boost: ``beta`` (cosine units) added to every cold product's score,
  for each of ``BOOSTS``;
- with ID embeddings, each cold product given the mean ID embedding of its k nearest trained
  products by content, for each of ``IMPUTE_K``;
- blends ``(1 - b) cos_trained + b cos_frozen`` with the untrained recency-pooled text
  space, for b in 0, 0.3, 0.5, 0.7, 1.

A variant is ``key=value`` overrides of ``[train]`` (``cold=0.1`` for the cold share); one
variant per run, so each run is its own timing::

    python -m bench.training_ablation --home /tmp/semrec-bench-http epochs=3 cold=0.1
    python -m bench.training_ablation --home /tmp/semrec-bench-http epochs=3 cold=0.1 logq=false
    python -m bench.training_ablation --home /tmp/semrec-bench-http epochs=10 loss=full cold=0.1

The home must not be open in a running ``semrec serve`` (it is read through SQLite only).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from bench._common import command_line, machine, train_overrides, write_result
from semrec.config import TrainSettings, UserSettings
from semrec.evaluation.metrics import rank_users
from semrec.towers import ItemTowerConfig
from semrec.towers.item import add_terms
from semrec.towers.user import history_weights, pool
from semrec.training import Validation, fit, holdout_last, load_home
from semrec.training.trainer import PoolingUsers, Progress, user_vectors

K = 10
BLENDS = (0.0, 0.3, 0.5, 0.7, 1.0)
IMPUTE_K = (1, 5, 20, 100)
BOOSTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def split(sequences: list[np.ndarray], cold: np.ndarray
          ) -> tuple[list[np.ndarray], Validation, list[np.ndarray], np.ndarray]:
    """Leave-last-out (``holdout_last``: the last event is the test target, the one before
    it the validation target), then ``cold`` products removed from all training and
    histories, and from the validation targets."""
    head, _, valid = holdout_last(sequences, back=2)
    _, _, test = holdout_last(sequences, back=1)

    def warm(seq: np.ndarray) -> np.ndarray:
        return seq[~np.isin(seq, cold)]

    keep = ~np.isin(valid.targets, cold)
    valid_h = [warm(h) for h, k in zip(valid.histories, keep, strict=True) if k]
    return ([warm(s) for s in head], Validation(valid_h, valid.targets[keep]),
            [warm(h) for h in test.histories], test.targets)


class PrintEpochs(Progress):
    def end(self, epoch: int, metrics: dict[str, float]) -> None:
        print(json.dumps(metrics), flush=True)


def ranks(users: torch.Tensor, items: torch.Tensor, histories: list[np.ndarray],
          targets: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """Each target's 0-based rank by the evaluation's own ranking (``rank_users``: history
    excluded, ties against the target); ``among`` (a product mask) limits the competitors."""
    history = sp.csr_matrix((np.ones(sum(len(h) for h in histories), np.float32),
                             np.concatenate([np.asarray(h, np.int64) for h in histories]),
                             np.cumsum([0, *map(len, histories)])),
                            shape=(len(targets), items.shape[0]))

    def score(rows: np.ndarray) -> np.ndarray:
        scores = (users[rows] @ items.T).numpy()
        if among is not None:
            target = scores[np.arange(len(rows)), targets[rows]]
            scores[:, ~among] = -np.inf
            scores[np.arange(len(rows)), targets[rows]] = target
        return scores

    return rank_users(score, np.arange(len(targets)), targets, history, kmax=0).ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("variant", nargs="*", help="[train] overrides: key=value")
    args = parser.parse_args()
    overrides = train_overrides(args.variant)
    cold_share = float(overrides.pop("cold", 0.0))
    settings = TrainSettings(**overrides)
    print(f"command: {command_line()}", flush=True)

    conn = sqlite3.connect(f"file:{args.home / 'semrec.db'}?mode=ro", uri=True)
    features, sequences, _ = load_home(conn, image_dim=512)
    rng = np.random.default_rng(settings.seed)
    seen = np.unique(np.concatenate(sequences))
    cold = rng.choice(seen, int(round(cold_share * len(seen))), replace=False)
    train, valid, test_h, test_t = split(sequences, cold)

    tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=512, dim=settings.dim,
                            seed=settings.seed)
    result = fit(features, train, settings, tower, UserSettings(), valid=valid,
                 progress=PrintEpochs())
    items = torch.from_numpy(result.item_vectors(features))
    users = result.user_tower or PoolingUsers(UserSettings(), settings.max_len)
    trained_users = user_vectors(users, items, test_h, settings.max_len)
    frozen = torch.from_numpy(features.text / np.linalg.norm(features.text, axis=1,
                                                             keepdims=True)).float()
    frozen_users = torch.from_numpy(np.stack([
        pool(frozen[h].numpy(), history_weights(["purchase"] * len(h), UserSettings()))
        if len(h) else np.zeros(frozen.shape[1], np.float32) for h in test_h]))

    is_cold = np.isin(test_t, cold)
    rank = ranks(trained_users, items, test_h, test_t)
    out: dict[str, Any] = {
        "variant": {**overrides, "cold": cold_share}, "metrics": result.metrics,
        "epochs": result.epochs, "warm_users": int((~is_cold).sum()),
        "cold_users": int(is_cold.sum()),
        f"warm_recall@{K}": float((rank[~is_cold] < K).mean()),
        f"warm_ndcg@{K}": float(((rank[~is_cold] < K) / np.log2(rank[~is_cold] + 2)).mean()),
    }
    if is_cold.any():
        out[f"cold_recall@{K}"] = float((rank[is_cold] < K).mean())
        mask = np.zeros(len(items), bool)
        mask[cold] = True
        rows = np.flatnonzero(is_cold)
        for name, u, v in (("trained", trained_users, items), ("untrained", frozen_users, frozen)):
            hist = [test_h[r] for r in rows]
            among = ranks(u[rows], v, hist, test_t[rows], among=mask)
            above = ranks(u[rows], v, hist, test_t[rows], among=~mask)
            scores = u[rows] @ v.T
            for i, h in enumerate(hist):
                scores[i, torch.from_numpy(np.asarray(h, np.int64))] = -torch.inf
            gap = (scores[torch.arange(len(rows)), torch.from_numpy(test_t[rows])]
                   - scores[:, torch.from_numpy(~mask)].topk(K, dim=1).values[:, -1])
            out[f"diagnosis_{name}"] = {
                f"cold_target_recall@{K}_among_cold": float((among < K).mean()),
                "median_share_of_warm_above_target": float(np.median(above / (~mask).sum())),
                f"median_target_minus_{K}th_warm_score": float(gap.median()),
            }
    if is_cold.any():
        new = torch.zeros(len(items), 1)
        new[cold] = 1.0
        ones = torch.ones(len(trained_users), 1)
        out["boost"] = []
        for beta in BOOSTS:
            r = ranks(torch.cat([trained_users, ones], 1), torch.cat([items, beta * new], 1),
                      test_h, test_t)
            out["boost"].append({"beta": beta, f"warm_recall@{K}": float((r[~is_cold] < K).mean()),
                                 f"cold_recall@{K}": float((r[is_cold] < K).mean())})
    if is_cold.any() and result.id_embeddings is not None:
        content = torch.from_numpy(result.item_tower.embed(features.text, features.image,
                                                           features.has_image))
        warm_rows = np.flatnonzero(np.abs(result.id_embeddings).sum(1) > 0)
        sims = content[cold] @ content[warm_rows].T
        out["impute"] = []
        for k in IMPUTE_K:
            top = sims.topk(k, dim=1).indices.numpy()
            ids = result.id_embeddings.copy()
            ids[cold] = ids[warm_rows[top]].mean(axis=1)
            imputed = torch.from_numpy(add_terms(content.numpy(), ids))
            u = user_vectors(users, imputed, test_h, settings.max_len)
            r = ranks(u, imputed, test_h, test_t)
            out["impute"].append({"k": k, f"warm_recall@{K}": float((r[~is_cold] < K).mean()),
                                  f"cold_recall@{K}": float((r[is_cold] < K).mean())})
    out["blend"] = []
    for b in BLENDS:
        w_trained, w_frozen = float(np.sqrt(1 - b)), float(np.sqrt(b))
        blended_users = torch.cat([w_trained * trained_users, w_frozen * frozen_users], 1)
        blended_items = torch.cat([w_trained * items, w_frozen * frozen], 1)
        r = ranks(blended_users, blended_items, test_h, test_t)
        row = {"b": b, f"warm_recall@{K}": float((r[~is_cold] < K).mean())}
        if is_cold.any():
            row[f"cold_recall@{K}"] = float((r[is_cold] < K).mean())
        out["blend"].append(row)
    print(json.dumps({k: v for k, v in out.items() if k != "epochs"}, indent=1), flush=True)
    write_result("training_ablation", {"command": command_line(), "machine": machine(), **out})


if __name__ == "__main__":
    main()
