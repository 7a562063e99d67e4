"""In-process latency of ``Recommender.similar`` and ``Recommender.feed``, warm.

Two parts (each can be skipped):

- **real**: amazon-games ingested text-only (as ``semrec ingest`` does) and its events
  loaded (as ``semrec events`` does) into a home (``--home`` to reuse one across runs; a
  temp home otherwise), then ``similar`` for random products and ``feed`` for random users
  with history, through ``open_recommender(workspace)`` exactly as the CLI/API wires it.
  A second, smaller pass times the pieces of ``feed`` one by one.
- **synthetic**: random unit vectors (``--dim``: 384 by default, the untrained tower's
  width; 128 is a trained tower's default ``[train] dim``) at each of ``--sizes`` through
  the real store (``EdgeStore.open(path, dim)``), upserted in batches (upsert rate), then
  ``optimize()`` (HNSW build time); ``similar`` through ``Recommender.similar`` on that
  store, and feed = ``store.get`` of 20 random items, pooled (``towers.user.pool``), then
  ``store.search`` excluding those 20 IDs. ``--cluster-size N`` draws them in groups of
  about N around random centres instead of uniformly. The HNSW answers are checked against
  exact search (recall@k of 200 random queries), so a fast but wrong index cannot pass for
  fast.

Every timed query is preceded by ``--warmup`` untimed ones. Percentiles are of single-query
wall times (``time.perf_counter``), in milliseconds.

Run from the repository root::

    python -m bench.query_latency --home /tmp/semrec-bench-amazon --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from bench._common import command_line, machine, percentiles, write_result
from semrec.config import ImageEncoderSettings, UserSettings, load_settings
from semrec.index import ingest as index_ingest
from semrec.serving.recommender import Recommender, open_recommender
from semrec.store.base import Filters
from semrec.store.edge import EdgeStore
from semrec.towers.user import history_weights, pool
from semrec.workspace import Workspace

DIM = 384
RECALL_QUERIES = 200
HISTORY = 20


def timed(fn: Callable[[Any], Any], args: list[Any], warmup: int) -> list[float]:
    """Milliseconds of ``fn(a)`` for each ``a`` in ``args``, after ``warmup`` untimed calls."""
    for a in args[:warmup]:
        fn(a)
    out = []
    for a in args:
        started = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - started) * 1000)
    return out


def store_info(store: Any) -> dict[str, int]:
    """Segment count, point count and how many vectors are in an HNSW index."""
    info = store.shard.info()
    return {"segments": info.segments_count, "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count}


# -- real: amazon-games -----------------------------------------------------------------------
def prepare_home(home: Path, dataset: Path) -> dict[str, Any]:
    """Ingest the catalog and load the events into ``home`` unless already there (an
    interrupted ingest resumes: indexed products are skipped, cached features reused)."""
    from ingest import image_digest, load_image, read_catalog, read_events
    from semrec.index.stage import ImageSource

    settings = load_settings(home=home, image=ImageEncoderSettings(enabled=False))
    done: dict[str, Any] = {}
    with Workspace(settings, role="ingest") as ws:
        products = read_catalog(dataset / "catalog.csv").items
        if ws.products.count() < len(products):  # new, or a run that was cut off
            images = ImageSource(digest=image_digest, load=lambda p: load_image(p))
            started = time.perf_counter()
            report = index_ingest(ws, products, images)
            done["ingest_s"] = round(time.perf_counter() - started, 1)
            done["ingested"] = report.added
            print(f"ingested {report.added} products in {done['ingest_s']} s", flush=True)
        if ws.events.count() == 0:
            events = read_events(dataset / "events.csv").items
            started = time.perf_counter()
            ws.events.add(events)
            done["events_s"] = round(time.perf_counter() - started, 1)
            print(f"loaded {len(events)} events in {done['events_s']} s", flush=True)
    return done


def bench_real(home: Path, dataset: Path, queries: int, warmup: int, k: int,
               seed: int) -> dict[str, Any]:
    """similar/feed latency on the ingested catalog in ``home``."""
    prepared = prepare_home(home, dataset)
    settings = load_settings(home=home, image=ImageEncoderSettings(enabled=False))
    rng = random.Random(seed)
    with Workspace(settings, role="bench") as ws:
        rec = open_recommender(ws)
        product_ids = [r[0] for r in ws.conn.execute("SELECT product_id FROM products")]
        users = [r[0] for r in ws.conn.execute("SELECT DISTINCT user_id FROM events")]
        pids = rng.choices(product_ids, k=queries)
        uids = rng.choices(users, k=queries)
        info = store_info(ws.served_store())
        print(f"home {home}: {len(product_ids)} products, {len(users)} users, store {info}",
              flush=True)
        similar_ms = timed(lambda p: rec.similar(p, k), pids, warmup)
        print(f"similar: {percentiles(similar_ms)}", flush=True)
        feed_ms = timed(lambda u: rec.feed(u, k), uids, warmup)
        print(f"feed: {percentiles(feed_ms)}", flush=True)
        parts = feed_parts(rec, uids[: max(queries // 4, 1)], k)
        print(f"feed parts: {parts}", flush=True)
        history = [len(ws.events.history(u, settings.user.max_history)) for u in uids[:500]]
    return {"home": str(home), "prepared": prepared, "products": len(product_ids),
            "users": len(users), "store": info, "k": k,
            "similar_ms": percentiles(similar_ms), "feed_ms": percentiles(feed_ms),
            "feed_parts_ms": parts, "mean_history_len": round(float(np.mean(history)), 1)}


def feed_parts(rec: Recommender, uids: list[str], k: int) -> dict[str, dict[str, float]]:
    """Where a feed's time goes: the steps of ``Recommender.feed``, timed one by one."""
    steps: dict[str, list[float]] = {"bought (sqlite)": [], "history (sqlite)": [],
                                     "store.get": [], "pool": [], "store.search": []}

    def lap(name: str, started: float) -> float:
        now = time.perf_counter()
        steps[name].append((now - started) * 1000)
        return now

    for uid in uids:
        t = time.perf_counter()
        bought = rec.events.products_with_event(uid, rec.user.bought_events)
        t = lap("bought (sqlite)", t)
        history = rec.events.history(uid, limit=rec.user.max_history)
        t = lap("history (sqlite)", t)
        stored = {s.product_id: s.vector
                  for s in rec.store.get(list(dict.fromkeys(p for p, _, _ in history)))}
        t = lap("store.get", t)
        kept = [(p, e) for p, _, e in history if p in stored]
        vector = pool(np.stack([stored[p] for p, _ in kept]),
                      history_weights([e for _, e in kept], rec.user))
        t = lap("pool", t)
        rec.store.search(vector, k, Filters().with_exclude(bought), with_vectors=True)
        lap("store.search", t)
    return {name: percentiles(ms) for name, ms in steps.items()}


# -- synthetic ------------------------------------------------------------------------------
def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM,
                 centres: np.ndarray | None = None) -> np.ndarray:
    """``n`` random unit vectors of width ``dim``: uniform on the sphere, or, with
    ``centres``, each around a random centre (cosine ~0.7 to it), as embeddings of real
    products cluster by kind. Uniform vectors are the worst case for HNSW: every point is
    nearly as far as every other, so the same search finds far fewer true neighbours."""
    v = rng.standard_normal((n, dim), dtype=np.float32)
    if centres is not None:
        v = centres[rng.integers(0, len(centres), n)] + v / np.sqrt(dim)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def hnsw_recall(store: EdgeStore, queries: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` that the HNSW search returns, over ``queries``."""
    found = 0
    for q in queries:
        approx = {h.product_id for h in store.search(q, k)}
        exact = store.shard.query(qe.QueryRequest(
            limit=k, query=qe.Query.Nearest(q.tolist()), with_payload=True,
            params=qe.SearchParams(exact=True)))
        found += len(approx & {p.payload["product_id"] for p in exact})
    return found / (k * len(queries))


def bench_synthetic(size: int, root: Path, queries: int, warmup: int, k: int, batch: int,
                    seed: int, dim: int = DIM, cluster_size: int = 0) -> dict[str, Any]:
    """Upsert ``size`` random vectors, optimize, then time similar and synthetic feed."""
    rng = np.random.default_rng(seed)
    clusters = max(size // cluster_size, 1) if cluster_size else 0
    centres = unit_vectors(rng, clusters, dim) if clusters else None
    path = root / f"synthetic-{size}"
    store = EdgeStore.open(path, dim)
    try:
        started = time.perf_counter()
        for start in range(0, size, batch):
            n = min(batch, size - start)
            ids = [f"p{i}" for i in range(start, start + n)]
            store.upsert(ids, unit_vectors(rng, n, dim, centres), [{"product_id": i} for i in ids])
            if (start // batch) % 20 == 19:
                print(f"  upserted {start + n}/{size} "
                      f"({(start + n) / (time.perf_counter() - started):.0f}/s)", flush=True)
        upsert_s = time.perf_counter() - started
        before = store_info(store)
        started = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - started
        after = store_info(store)
        print(f"  {size}: upsert {upsert_s:.1f} s ({size / upsert_s:.0f}/s), optimize "
              f"{optimize_s:.1f} s; before {before}, after {after}", flush=True)

        rec = Recommender(store, None, None, UserSettings())  # type: ignore[arg-type]
        pick = random.Random(seed)
        pids = [f"p{pick.randrange(size)}" for _ in range(queries)]
        similar_ms = timed(lambda p: rec.similar(p, k), pids, warmup)
        print(f"  similar: {percentiles(similar_ms)}", flush=True)
        histories = [[f"p{pick.randrange(size)}" for _ in range(HISTORY)]
                     for _ in range(queries)]

        def feed(history: list[str]) -> None:
            items = store.get(history)
            vector = pool(np.stack([i.vector for i in items]), np.ones(len(items)))
            store.search(vector, k, Filters(exclude=frozenset(history)))

        feed_ms = timed(feed, histories, warmup)
        print(f"  feed: {percentiles(feed_ms)}", flush=True)
        recall = hnsw_recall(store, unit_vectors(rng, RECALL_QUERIES, dim, centres), k)
        print(f"  HNSW recall@{k} against exact search: {recall:.3f}", flush=True)
    finally:
        store.close()
    disk_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return {"size": size, "dim": dim, "clusters": clusters, "upsert_s": round(upsert_s, 2),
            "upsert_per_s": round(size / upsert_s), "optimize_s": round(optimize_s, 2),
            "store_before_optimize": before, "store_after_optimize": after,
            "disk_mb": round(disk_mb, 1), "similar_ms": percentiles(similar_ms),
            "feed_ms": percentiles(feed_ms), f"hnsw_recall@{k}": round(recall, 4),
            "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                        / 1024)}


def main() -> None:
    """Parse arguments, run the chosen parts, print and save the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/datasets/"
                        "amazon-games", help="dataset for the real part (catalog + events)")
    parser.add_argument("--home", type=Path, default=None,
                        help="home for the real part; reused if it has products/events "
                             "(default: a temp home, deleted after)")
    parser.add_argument("--queries", type=int, default=2000, help="timed queries per kind")
    parser.add_argument("--warmup", type=int, default=200, help="untimed queries first")
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="synthetic catalog sizes, comma-separated ('' for none)")
    parser.add_argument("--dim", type=int, default=DIM, help="synthetic vector width")
    parser.add_argument("--cluster-size", type=int, default=0,
                        help="synthetic vectors in groups of about this many around random "
                             "centres, like a product's variants (0: uniform)")
    parser.add_argument("--batch", type=int, default=10_000, help="synthetic upsert batch")
    parser.add_argument("--skip-real", action="store_true", help="synthetic part only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cmd = command_line()
    print(f"command: {cmd}")
    info = machine()
    print(f"machine: {info}", flush=True)
    result: dict[str, Any] = {"command": cmd, "machine": info, "queries": args.queries,
                              "warmup": args.warmup, "k": args.k}
    if not args.skip_real:
        home = args.home or Path(tempfile.mkdtemp(prefix="semrec-bench-query-"))
        try:
            result["real"] = bench_real(home.resolve(), args.dataset.resolve(), args.queries,
                                        args.warmup, args.k, args.seed)
        finally:
            if args.home is None:
                shutil.rmtree(home, ignore_errors=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result["synthetic"] = []
    root = Path(tempfile.mkdtemp(prefix="semrec-bench-synthetic-"))
    try:
        for size in sizes:
            print(f"synthetic {size}", flush=True)
            result["synthetic"].append(bench_synthetic(size, root, args.queries, args.warmup,
                                                       args.k, args.batch, args.seed,
                                                       args.dim, args.cluster_size))
            shutil.rmtree(root / f"synthetic-{size}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["loadavg_at_end"] = os.getloadavg()
    write_result("query_latency", result)


if __name__ == "__main__":
    main()
