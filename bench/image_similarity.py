"""Do image features find products of the same type and colour? Nearest-neighbour category
agreement@k on hm-fashion for text only, image only and both.

For every product (the query), its ``k`` nearest other products by cosine are taken, and
agreement@k is the share of them with the query's label (``category`` = product type, and
``colour``). Reported: the mean over all queries, its 95 % bootstrap interval over query
items, and chance (the expected agreement of ``k`` random other products: the mean over
queries of (products with the query's label - 1) / (products - 1)).

Representations (frozen encoders as semrec loads them, no training):

- ``text``: all-MiniLM-L6-v2 over ``Product.text()``, the text semrec encodes; for
  hm-fashion that text names the product type and colour (``Category: ...``,
  ``colour: ...``), so it is also measured without them:
- ``text_plain``: MiniLM over title + description only;
- ``image``: the configured image encoder (``--image-model``, default efficientnet-lite0)
  on the product photo, decoded with ``ingest.load_image``;
- ``both``: the untrained item tower semrec builds for these encoders (orthogonal heads to
  ``--dim``, ``normalise(normalise(W_t t) + normalise(W_i i))``, ``semrec.towers.ItemTower``);
- ``both_concat``: the same fusion without the projection, in orthogonal subspaces:
  ``[t, i] / sqrt(2)`` (what the tower's sum would be if its heads kept every dimension);
- ``both_plain``, ``both_plain_concat``: the same with ``text_plain``.

Paired bootstrap intervals (same resampled queries) are given for ``both - text`` and
``both_plain - text_plain``. Features are cached in ``--cache`` (an .npz), so a re-run
encodes nothing.

Run from the repository root::

    nice -n 10 python -m bench.image_similarity --dataset ../shared/datasets/hm-fashion
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import begin, dataset_parser, finish, run_path, write_result
from ingest import load_image, read_catalog
from semrec.catalog import Product
from semrec.config import ImageEncoderSettings, TextEncoderSettings
from semrec.encoders import as_features, create_image_encoder, create_text_encoder
from semrec.towers import ItemTower, ItemTowerConfig

LABELS = ("category", "colour")
BATCH = 256


def plain_text(product: Product) -> str:
    """Title and description: the product text without its label columns."""
    return ". ".join(part for part in (product.title, product.description) if part)


def encode(products: list[Product], image_model: str, cache: Path) -> dict[str, Any]:
    """Text, plain text and image features (read from ``cache`` when it has them)."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            if list(saved["ids"]) == [p.product_id for p in products]:
                print(f"features from {cache}", flush=True)
                return {key: saved[key] for key in saved.files} | {"cached": True}
    text_encoder = create_text_encoder(TextEncoderSettings())
    image_encoder = create_image_encoder(ImageEncoderSettings(model=image_model))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    text = text_encoder.encode_text([p.text() for p in products])
    plain = text_encoder.encode_text([plain_text(p) for p in products])
    seconds["text_both_variants"] = time.perf_counter() - started
    started = time.perf_counter()
    chunks = []
    for start in range(0, len(products), BATCH):
        images = [load_image(p.image) for p in products[start:start + BATCH]]
        chunks.append(image_encoder.encode_image(images))
        print(f"  images {start + len(images)}/{len(products)}", flush=True)
    seconds["image_decode_and_encode"] = time.perf_counter() - started
    features = {"ids": np.array([p.product_id for p in products]), "text": text,
                "text_plain": plain, "image": np.concatenate(chunks),
                "text_id": np.array(text_encoder.id), "image_id": np.array(image_encoder.id),
                "seconds": np.array(repr(seconds))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **features)
    return features | {"cached": False}


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's ``k`` most cosine-similar other rows (rows are unit)."""
    out = np.empty((len(vectors), k), np.int64)
    for start in range(0, len(vectors), 1024):
        sims = vectors[start:start + 1024] @ vectors.T
        rows = np.arange(start, start + len(sims))
        sims[rows - start, rows] = -np.inf  # never the query itself
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start:start + len(sims)] = np.take_along_axis(top, order, axis=1)
    return out


def agreement(labels: np.ndarray, knn: np.ndarray) -> np.ndarray:
    """Per query: the share of its neighbours with its label."""
    return (labels[knn] == labels[:, None]).mean(axis=1)


def chance(labels: np.ndarray) -> float:
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return float(((counts[inverse] - 1) / (len(labels) - 1)).mean())


def representations(features: dict[str, Any], dim: int) -> dict[str, np.ndarray]:
    """Every representation measured (see the module docstring), unit rows."""
    text, plain, image = features["text"], features["text_plain"], features["image"]
    tower = ItemTower(ItemTowerConfig(text_dim=text.shape[1], image_dim=image.shape[1], dim=dim))
    everyone = np.ones(len(text), bool)
    return {
        "text": as_features(text), "text_plain": as_features(plain),
        "image": as_features(image),
        "both": tower.embed(text, image, everyone),
        "both_concat": as_features(np.hstack([as_features(text), as_features(image)])),
        "both_plain": tower.embed(plain, image, everyone),
        "both_plain_concat": as_features(np.hstack([as_features(plain), as_features(image)])),
    }


def run(dataset: Path, image_model: str, k: int, dim: int, rounds: int,
        cache: Path, limit: int | None = None) -> dict[str, Any]:
    """Encode (or read the cache), then measure every representation on both labels."""
    catalog = read_catalog(dataset / "catalog.csv")
    products = [p for p in catalog.items if p.image is not None][:limit]
    features = encode(products, image_model, cache)
    labels = {
        "category": np.array([p.category or "" for p in products]),
        "colour": np.array([p.attributes.get("colour", "") for p in products]),
    }
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(products), size=(rounds, len(products)))
    result: dict[str, Any] = {
        "dataset": str(dataset), "products": len(products), "k": k, "tower_dim": dim,
        "bootstrap_rounds": rounds, "text_encoder": str(features["text_id"]),
        "image_encoder": str(features["image_id"]), "features_cached": features["cached"],
        "encode_seconds": str(features["seconds"]),
        "chance": {name: round(chance(values), 4) for name, values in labels.items()},
        "distinct": {name: int(len(set(values))) for name, values in labels.items()},
        "agreement": {}, "paired_difference": {},
    }
    per_query: dict[tuple[str, str], np.ndarray] = {}
    for rep, vectors in representations(features, dim).items():
        knn = neighbours(vectors, k)
        result["agreement"][rep] = {}
        for name, values in labels.items():
            scores = agreement(values, knn)
            per_query[rep, name] = scores
            means = scores[draws].mean(axis=1)
            result["agreement"][rep][name] = {
                "mean": round(float(scores.mean()), 4),
                "ci95": [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)],
                "x_chance": round(float(scores.mean()) / result["chance"][name], 2),
            }
        print(f"{rep:>18}: " + ", ".join(
            f"{name} {result['agreement'][rep][name]['mean']:.3f} "
            f"{result['agreement'][rep][name]['ci95']}" for name in labels), flush=True)
    for fused, alone in (("both", "text"), ("both_concat", "text"),
                         ("both_plain", "text_plain"), ("both_plain_concat", "text_plain")):
        key = f"{fused} - {alone}"
        result["paired_difference"][key] = {}
        for name in labels:
            diff = per_query[fused, name] - per_query[alone, name]
            means = diff[draws].mean(axis=1)
            result["paired_difference"][key][name] = {
                "mean": round(float(diff.mean()), 4),
                "ci95": [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)],
            }
    return result


def main() -> None:
    """Parse arguments, run, print and save the result."""
    parser = dataset_parser(__doc__, " and images/, e.g. ../shared/datasets/hm-fashion")
    parser.add_argument("--image-model", default="efficientnet-lite0",
                        help="image encoder (a registry name or an open_clip model)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=384, help="the item tower's width")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache (.npz); default bench/out/image_similarity-"
                             "<dataset>-<image model>.npz")
    args = parser.parse_args()
    dataset = args.dataset.resolve()
    cache = args.cache or run_path("image_similarity", dataset, args.image_model, args.limit,
                                   ".npz")
    head = begin()
    result = finish(head, run(dataset, args.image_model, args.k, args.dim, args.bootstrap,
                              cache, args.limit))
    for name in LABELS:
        print(f"chance {name}: {result['chance'][name]}")
    for key, diffs in result["paired_difference"].items():
        print(f"{key}: " + ", ".join(f"{n} {d['mean']:+.4f} {d['ci95']}" for n, d in diffs.items()))
    write_result("image_similarity", result)


if __name__ == "__main__":
    main()
