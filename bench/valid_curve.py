"""One training variant's validation curve, as the search would see it: recall@10 and seconds
by epoch on a dataset's evaluation split.

Splits the dataset as ``semrec evaluate`` does (``--split``, ``--cold-items``), takes the
validation phase's training events, holds out the search's cold products
(``tuning.hold_out_cold``), samples ``[train] valid_users`` validation users and shrinks
the batch for a small shop (``tuning.steps_batch``), as ``tuning.tune`` does; then trains
``[train]`` plus the variant's ``key=value`` overrides with ``fit`` and prints each epoch.
Nothing is read from the test targets. Text features come from an evaluation's data
directory (``semrec evaluate --workdir W``: the catalog's features cached there; image
features are not read, so on a catalog with images this is the text-only curve), the
products' words from the catalog; nothing is encoded.
One variant per run, so two runs side by side on two cores time two variants under the same
load::

    python -m bench.valid_curve --dataset ../shared/datasets/amazon-games --workdir W loss=full
    python -m bench.valid_curve --dataset ../shared/datasets/amazon-games --workdir W loss=sampled
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from bench._common import begin, finish, train_overrides, write_result
from semrec.config import TrainSettings, UserSettings
from semrec.evaluation.splits import load_dataset, make_split
from semrec.towers import ItemTowerConfig
from semrec.towers.words import product_words
from semrec.training import ItemFeatures, Validation, fit, load_home
from semrec.training.trainer import Progress
from semrec.training.tuning import hold_out_cold, steps_batch


class Epochs(Progress):
    def __init__(self) -> None:
        self.started, self.rows = time.perf_counter(), []

    def end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append({**metrics, "wall": round(time.perf_counter() - self.started, 1)})
        print(json.dumps(self.rows[-1]), flush=True)


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
    where = {pid: i for i, pid in enumerate(cached.product_ids)}
    order = np.array([where[pid] for pid in dataset.product_ids], np.int64)
    features = ItemFeatures(dataset.product_ids, cached.text[order],
                            words=[product_words(p) for p in dataset.products])

    train = split.valid.train
    offsets = train.offsets(split.n_users)
    sequences = [train.items[offsets[u]:offsets[u + 1]] for u in range(split.n_users)]
    valid = Validation([sequences[u] for u in split.valid.users],
                       split.valid.targets).sample(settings.valid_users, settings.seed)
    sequences, _, held = hold_out_cold(sequences, None, len(features), settings.seed)
    settings = settings.model_copy(update=steps_batch(settings, {}, sequences))  # as searched

    tower = ItemTowerConfig(text_dim=features.text.shape[1], image_dim=512, dim=settings.dim,
                            seed=settings.seed)
    epochs = Epochs()
    result = fit(features, sequences, settings, tower, UserSettings(), valid=valid,
                 progress=epochs)
    body = {"dataset": str(args.dataset), "split": args.split, "cold_items": args.cold_items,
            "variant": overrides, "held_out_products": int(held.sum()),
            "valid_users": len(valid), "epochs": epochs.rows, "metrics": result.metrics}
    print(json.dumps(result.metrics), flush=True)
    write_result("valid_curve", finish(head, body))


if __name__ == "__main__":
    main()
