"""How far well-known non-neural recommenders get on the training split: a yardstick for the
training issue's target (1.56 x tuned ALS on amazon-games ``last``).

Same split as ``bench/training_ablation.py`` (each user's last event is the test target,
history = everything before it, history excluded from the ranking, ties against the
target). Every model is fitted on the test users' histories, i.e. on the same information
ALS is refitted on in ``semrec evaluate``:

- EASE (Steck, 2019): closed-form item-item regression, ``B = I - P / diag(P)`` with
  ``P = (X'X + lambda I)^-1``, one fit per ``lambda``;
- last-item transitions: how often product ``j`` followed product ``i`` in a history
  (plus half the reverse), scored from the user's newest product;
- EASE plus transitions, row-normalised, for a couple of weights.

Needs O(n_products^2) memory (2.3 GB for amazon-games' 16,859 products)::

    python -m bench.upper_bounds --home /tmp/semrec-bench-http
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench._common import command_line, machine, write_result
from bench.training_ablation import split
from semrec.training import load_home

K = 10
LAMBDAS = (300.0, 1000.0)
TRANSITION_WEIGHTS = (0.5, 2.0)
BATCH = 2048


def recall(score: Callable[[slice], np.ndarray], seen: sp.csr_matrix,
           targets: np.ndarray) -> float:
    """Full-ranking recall@K, each user's history excluded, ties against the target."""
    hits = 0
    for start in range(0, len(targets), BATCH):
        rows = slice(start, start + BATCH)
        scores = np.asarray(score(rows), np.float64)
        scores[seen[rows].nonzero()] = -np.inf
        t = targets[rows]
        target = scores[np.arange(len(t)), t]
        hits += int((((scores >= target[:, None]).sum(axis=1) - 1) < K).sum())
    return hits / len(targets)


def ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args()
    print(f"command: {command_line()}", flush=True)
    conn = sqlite3.connect(f"file:{args.home / 'semrec.db'}?mode=ro", uri=True)
    features, sequences, _ = load_home(conn, image_dim=512)
    n = len(features)
    _, _, histories, targets = split(sequences, np.array([], np.int64))
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.concatenate(histories))),
                      shape=(len(histories), n))
    x.data[:] = 1.0
    out: dict[str, float] = {}
    started = time.perf_counter()
    for lam in LAMBDAS:
        b = ease(x, lam)
        out[f"ease_lambda_{lam:g}"] = recall(lambda r, b=b: x[r] @ b, x, targets)
        print(f"EASE lambda={lam:g}: recall@{K} {out[f'ease_lambda_{lam:g}']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    pairs = [h for h in histories if len(h) > 1]
    src = np.concatenate([h[:-1] for h in pairs])
    dst = np.concatenate([h[1:] for h in pairs])
    follows = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(n, n))
    follows = (follows + 0.5 * follows.T).tocsr()
    last = np.array([h[-1] for h in histories])
    popularity = np.asarray(x.sum(axis=0)).ravel()[None, :]

    def transitions(r: slice) -> np.ndarray:
        return follows[last[r]].toarray() + 1e-6 * popularity  # popularity breaks ties

    out["last_item_transitions"] = recall(transitions, x, targets)
    for w in TRANSITION_WEIGHTS:
        def both(r: slice, w: float = w, b: np.ndarray = b) -> np.ndarray:
            t = follows[last[r]]
            norm = np.maximum(1.0, np.asarray(t.sum(axis=1)))
            return x[r] @ b + w * t.toarray() / norm
        out[f"ease_lambda_{LAMBDAS[-1]:g}_plus_{w:g}_transitions"] = recall(both, x, targets)
    for name, value in out.items():
        print(f"{name}: recall@{K} {value:.4f}", flush=True)
    write_result("upper_bounds", {"command": command_line(), "machine": machine(),
                                  "users": len(targets), "products": n,
                                  f"recall@{K}": out})


if __name__ == "__main__":
    main()
