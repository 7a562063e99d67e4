"""One training variant's validation curve, as the search would see it: recall@10 and seconds
by epoch on a dataset's evaluation split.

Splits the dataset as ``semrec evaluate`` does (``--split``, ``--cold-items``), takes the
validation phase's training events, holds out the search's cold products
(``tuning.hold_out_cold``), samples ``[train] valid_users`` validation users and shrinks
the batch for a small shop (``tuning.searched``), as ``tuning.tune`` does; then trains
``[train]`` plus the variant's ``key=value`` overrides with ``fit``'s loop and prints each
epoch. Nothing is read from the test targets. Text features come from an evaluation's data
directory (``semrec evaluate --workdir W``: the catalog's features cached there; image
features are not read, so on a catalog with images this is the text-only curve) with the
products' words read there too; nothing is encoded.
Then the best epoch's warm / cold / all validation recall at a range of new-product boosts
(``boost_frontier``). One variant per run, so two runs side by side on two cores time two
variants under the same load::

    python -m bench.valid_curve --dataset ../shared/datasets/amazon-games --workdir W loss=full
    python -m bench.valid_curve --dataset ../shared/datasets/amazon-games --workdir W loss=sampled
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench._common import begin, finish, train_overrides, write_result
from semrec.config import TrainSettings, UserSettings
from semrec.evaluation.splits import load_dataset, make_split
from semrec.towers import ItemTowerConfig
from semrec.towers.sequential import user_vectors
from semrec.training import Validation, load_home
from semrec.training.trainer import Progress, Training, history_window, torch_threads, valid_ranks
from semrec.training.tuning import hold_out_cold, searched


class Epochs(Progress):
    def __init__(self) -> None:
        self.started, self.rows = time.perf_counter(), []

    def end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append({**metrics, "wall": round(time.perf_counter() - self.started, 1)})
        print(json.dumps(self.rows[-1]), flush=True)


#: The boosts (cosine units) of the frontier: negative ones too, to see the whole curve.
FRONTIER = tuple(round(float(b), 3) + 0.0 for b in np.arange(-0.1, 0.201, 0.025))  # no -0.0


def boost_frontier(run: Training, valid: Validation, held: np.ndarray) -> list[dict]:
    """The best epoch's validation recall@10 of warm users, cold users (their target held
    out of training) and all, with each boost in ``FRONTIER`` added to the products without
    training events: the trade-off the search's boost is chosen on."""
    vectors = run.items.all_vectors()
    users = user_vectors(run.users, vectors, valid.histories, history_window(run.users),
                         weights=valid.weights)
    hits = valid_ranks(vectors, users, valid, torch.from_numpy(~run.seen), FRONTIER) < 10
    cold = held[valid.targets]
    rows = [{"boost": b, "warm": round(float(h[~cold].mean()), 4),
             "cold": round(float(h[cold].mean()), 4) if cold.any() else None,
             "all": round(float(h.mean()), 4)} for b, h in zip(FRONTIER, hits, strict=True)]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="folder with catalog.csv")
    parser.add_argument("--workdir", type=Path, required=True,
                        help="an evaluation's data directory with the catalog's features")
    parser.add_argument("--split", default="last")
    parser.add_argument("--cold-items", type=float, default=0.0)
    parser.add_argument("variant", nargs="*", help="[train] overrides: key=value")
    args = parser.parse_args()
    overrides = train_overrides(args.variant)
    head = begin()
    settings = TrainSettings(**{"patience": 3, "max_minutes": 120.0, **overrides})

    dataset = load_dataset(args.dataset / "catalog.csv", args.dataset / "events.csv")
    split = make_split(dataset, args.split, cold_fraction=args.cold_items)
    conn = sqlite3.connect(f"file:{args.workdir / 'semrec.db'}?mode=ro", uri=True)
    cached, _, _ = load_home(conn, image_dim=512)
    features = replace(cached.select(dataset.product_ids), image=None,
                       has_image=None)  # the text-only curve

    train = split.valid.train
    offsets = train.offsets(split.n_users)
    sequences = [train.items[offsets[u]:offsets[u + 1]] for u in range(split.n_users)]
    valid = Validation([sequences[u] for u in split.valid.users],
                       split.valid.targets).sample(settings.valid_users, settings.seed)
    sequences, _, held = hold_out_cold(sequences, None, len(features), settings.seed)
    settings = searched(settings, {}, sequences)

    tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=512, dim=settings.dim,
                            seed=settings.seed)
    epochs = Epochs()
    with torch_threads(settings.threads):  # fit, keeping the run for the frontier
        run = Training(features, sequences, settings, tower, UserSettings(), valid, epochs)
        result = run.to_end()
        frontier = boost_frontier(run, valid, held)
    body = {"dataset": str(args.dataset), "split": args.split, "cold_items": args.cold_items,
            "variant": overrides, "held_out_products": int(held.sum()),
            "valid_users": len(valid), "epochs": epochs.rows, "metrics": result.metrics,
            "boost_frontier": frontier}
    print(json.dumps(result.metrics), flush=True)
    write_result("valid_curve", finish(head, body))


if __name__ == "__main__":
    main()
