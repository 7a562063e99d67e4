"""Similar items by look, through the real store: category agreement@10 on hm-fashion for
``similar --by text``, ``--by image`` and ``--by both``, and the in-process latency of
``similar --by image`` against the default.

The catalog is ingested into a data directory (``--home``, kept between runs: a re-run finds
every product unchanged and encodes nothing) with the efficientnet-lite0 image encoder
(``SEMREC_IMAGE__MODEL=efficientnet-lite0``), untrained. Then every product is the query of
``Recommender.similar(pid, k, by=...)`` once: a Qdrant Edge HNSW search of its own fused,
text or image vector. Agreement@k is the share of the ``k`` results with the query's label
(``category`` = product type, and ``colour``), as in ``bench/image_similarity.py``, whose
numbers come from the features directly: mean over queries, 95 % bootstrap interval over
query items (same seed), chance, and the paired difference ``image - text``.

Latency: ``--latency-queries`` random products, each asked ``by=both`` and ``by=image``
(interleaved, after a warm-up), milliseconds per ``similar`` call in-process.

Run from the repository root::

    nice -n 10 python -m bench.similar_by --dataset ../shared/datasets/hm-fashion
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import begin, dataset_parser, finish, percentiles, run_path, write_result
from bench.image_similarity import chance
from ingest import image_source, read_catalog
from semrec.config import load_settings
from semrec.index import ingest
from semrec.serving.recommender import SIMILAR_BY, open_recommender
from semrec.workspace import Workspace

LABELS = ("category", "colour")


def build(home: Path, catalog: Path, image_model: str, limit: int | None) -> dict[str, Any]:
    """Ingest ``catalog`` (its first ``limit`` products) into ``home``; the ingest report."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "semrec.toml").write_text(
        f'[image]\nmodel = "{image_model}"\nallow_download = false\nfallback = ""\n')
    settings = load_settings(home=home)
    products = read_catalog(catalog, image_roots=settings.image.allowed_roots).items[:limit]
    images = image_source(settings.image.max_pixels, (catalog.absolute().parent,))
    started = time.perf_counter()
    with Workspace(settings, role="bench") as ws:
        report = ingest(ws, products, images)
    return {"products": len(products), "seconds": round(time.perf_counter() - started, 1),
            "added": report.added, "unchanged": report.unchanged,
            "images_encoded": report.images_encoded, "image_errors": len(report.image_errors),
            "stages": {k: round(v, 1) for k, v in report.seconds.items()}}


def measure(home: Path, k: int, rounds: int, latency_queries: int) -> dict[str, Any]:
    """Agreement@k for every ``by`` over every product, and ``similar`` latency."""
    settings = load_settings(home=home)
    with Workspace(settings, role="bench") as ws:
        rec = open_recommender(ws)
        rows = sorted(ws.products.all(), key=lambda r: r.product_id)
        ids = [r.product_id for r in rows]
        labels = {"category": np.array([r.payload.get("category") or "" for r in rows]),
                  "colour": np.array([(r.payload.get("attributes") or {}).get("colour", "")
                                      for r in rows])}
        index = {pid: i for i, pid in enumerate(ids)}
        with_image = np.array([r.image_key is not None for r in rows])
        rng = np.random.default_rng(0)
        draws = rng.integers(0, len(ids), size=(rounds, len(ids)))
        result: dict[str, Any] = {
            "products": len(ids), "with_image": int(with_image.sum()), "k": k,
            "bootstrap_rounds": rounds, "version": ws.served_version(),
            "chance": {n: round(chance(v), 4) for n, v in labels.items()},
            "agreement": {}, "paired_difference": {}, "short_lists": {},
        }
        per_query: dict[tuple[str, str], np.ndarray] = {}
        for by in SIMILAR_BY:
            started = time.perf_counter()
            knn = np.full((len(ids), k), -1, np.int64)
            for i, pid in enumerate(ids):
                got = [index[r.product_id] for r in rec.similar(pid, k, by=by)]
                knn[i, :len(got)] = got
            seconds = time.perf_counter() - started
            result["short_lists"][by] = int((knn < 0).any(axis=1).sum())
            result["agreement"][by] = {"seconds_all_queries": round(seconds, 1)}
            for name, values in labels.items():
                hits = np.where(knn >= 0, values[np.maximum(knn, 0)] == values[:, None], False)
                scores = hits.mean(axis=1)
                per_query[by, name] = scores
                means = scores[draws].mean(axis=1)
                result["agreement"][by][name] = {
                    "mean": round(float(scores.mean()), 4),
                    "ci95": [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)]}
            print(f"by {by:>5}: " + ", ".join(
                f"{n} {result['agreement'][by][n]['mean']:.3f} {result['agreement'][by][n]['ci95']}"
                for n in labels) + f" ({seconds:.1f} s)", flush=True)
        for a, b in (("image", "text"), ("both", "text"), ("image", "both")):
            result["paired_difference"][f"{a} - {b}"] = {}
            for name in labels:
                diff = per_query[a, name] - per_query[b, name]
                means = diff[draws].mean(axis=1)
                result["paired_difference"][f"{a} - {b}"][name] = {
                    "mean": round(float(diff.mean()), 4),
                    "ci95": [round(float(np.percentile(means, q)), 4) for q in (2.5, 97.5)]}
        result["latency_ms"] = latency(rec, [ids[i] for i in np.flatnonzero(with_image)], k,
                                       latency_queries)
    return result


def latency(rec: Any, ids: list[str], k: int, n: int) -> dict[str, Any]:
    """p50/p99 of ``similar`` by both and by image over ``n`` random products with images."""
    rng = np.random.default_rng(1)
    picks = [ids[i] for i in rng.choice(len(ids), size=min(n, len(ids)), replace=False)]
    for pid in picks[:20]:  # warm-up
        rec.similar(pid, k), rec.similar(pid, k, by="image")
    samples: dict[str, list[float]] = {"both": [], "image": []}
    for pid in picks:
        for by in samples:
            started = time.perf_counter()
            rec.similar(pid, k, by=by)
            samples[by].append((time.perf_counter() - started) * 1000)
    return {by: percentiles(s) for by, s in samples.items()}


def main() -> None:
    """Parse arguments, build the home, measure, print and save the result."""
    parser = dataset_parser(__doc__, " and images/, e.g. ../shared/datasets/hm-fashion")
    parser.add_argument("--home", type=Path, default=None,
                        help="data directory (default bench/out/similar_by-<dataset>-"
                             "<image model>-home)")
    parser.add_argument("--image-model", default="efficientnet-lite0")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds")
    parser.add_argument("--latency-queries", type=int, default=300)
    args = parser.parse_args()
    dataset = args.dataset.resolve()
    home = args.home or run_path("similar_by", dataset, args.image_model, args.limit, "-home")
    head = begin()
    built = build(home, dataset / "catalog.csv", args.image_model, args.limit)
    print(f"ingest: {built}", flush=True)
    result = measure(home, args.k, args.bootstrap, args.latency_queries)
    result = finish(head, {"dataset": str(dataset), "home": str(home),
                           "image_model": args.image_model, "ingest": built, **result})
    print(f"chance: {result['chance']}")
    for key, diffs in result["paired_difference"].items():
        print(f"{key}: " + ", ".join(f"{n} {d['mean']:+.4f} {d['ci95']}" for n, d in diffs.items()))
    for by, lat in result["latency_ms"].items():
        print(f"latency by {by}: p50 {lat['p50']} ms, p99 {lat['p99']} ms (n={lat['n']})")
    write_result("similar_by", result)


if __name__ == "__main__":
    main()
