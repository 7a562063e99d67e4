"""The storefront's speed on amazon-games over loopback: ``GET /search`` latency, and the
page's first render with results in a headless Chromium.

The home is prepared as in ``bench.http_latency`` (text-only ingest and events through the
real CLI, kept for later runs), then ``semrec serve`` runs with the text encoder warmed.
Search: queries are the first 3 to 6 words of random product titles, every one distinct, so
each misses the server's query-vector cache (``cold``: text encoder + search); then the
same list again (``cached``). Sent with ``bench.http_latency.load`` at 1 and 8 in flight.
First render: Chromium opens ``/#/?q=QUERY`` (a new distinct query each time) and reads the
``semrec:results`` mark the page sets when result cards enter the DOM: milliseconds from
navigation start (``performance.timeOrigin``). The first navigation also loads the page's
files; later ones revalidate them (no-cache), as a returning visitor would.

Run from the repository root::

    python -m bench.storefront --home /tmp/web-amazon
"""

from __future__ import annotations

import argparse
import csv
import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

import uvloop

from bench._browser import chromium, serve
from bench._common import command_line, machine, percentiles, write_result
from bench.http_latency import DATASET, _env, load, prepare


def queries(catalog: Path, n: int, seed: int) -> list[str]:
    with open(catalog, newline="", encoding="utf-8") as f:
        titles = [row["title"] for row in csv.DictReader(f)]
    rng = random.Random(seed)
    out: dict[str, None] = {}
    for _ in range(50 * n):
        words = rng.choice(titles).split()[:rng.randint(3, 6)]
        if words:
            out[" ".join(words)] = None
        if len(out) == n:
            return list(out)
    raise ValueError(f"the catalog gives fewer than {n} distinct queries; ask for fewer")


def first_render(url: str, texts: list[str]) -> dict[str, Any]:
    driver = chromium(1280, 900)
    samples: list[float] = []
    try:
        for i, text in enumerate(texts):  # ?n=i: a real navigation, not a hash change
            driver.get(f"{url}/?n={i}#/?q={urllib.parse.quote(text)}")
            deadline = time.monotonic() + 30
            mark = None
            while mark is None and time.monotonic() < deadline:
                mark = driver.execute_script(
                    "const m = performance.getEntriesByName('semrec:results')[0];"
                    "return m ? m.startTime : null;")
                if mark is None:
                    time.sleep(0.01)
            if mark is None:
                raise RuntimeError(f"no results rendered for {text!r}")
            samples.append(float(mark))
    finally:
        driver.quit()
    return {"navigations": len(samples), "first_ms": round(samples[0], 1),
            **percentiles(samples[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/web-amazon"))
    parser.add_argument("--catalog", type=Path, default=DATASET / "catalog.csv")
    parser.add_argument("--events", type=Path, default=DATASET / "events.csv")
    parser.add_argument("--requests", type=int, default=1000, help="Per level.")
    parser.add_argument("--renders", type=int, default=41)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prep = prepare(args.home, args.catalog, args.events)
    texts = queries(args.catalog, 3 * args.requests + 100 + args.renders, args.seed)
    warmup, renders, rest = texts[:100], texts[100:100 + args.renders], texts[100 + args.renders:]
    results: list[dict[str, Any]] = []
    with serve(args.home, env=_env()) as base:
        path = lambda q: f"/search?{urllib.parse.urlencode({'q': q, 'k': 24})}"  # noqa: E731
        uvloop.run(load(base, [path(q) for q in warmup], 1, args.time_limit))
        for level, chunk in ((1, rest[:args.requests]), (8, rest[args.requests:])):
            for kind in ("cold", "cached"):
                row = {"endpoint": "search", "queries": kind,
                       **uvloop.run(load(base, [path(q) for q in chunk], level,
                                         args.time_limit))}
                results.append(row)
                print(f"search {kind:6} c={level} n={row['requests']} p50={row['p50']:.2f} ms "
                      f"p99={row['p99']:.2f} ms {row['throughput_rps']:.1f} req/s "
                      f"errors={row['errors']}", flush=True)
        render = first_render(base, renders)
        print(f"first render: first {render['first_ms']} ms, then p50={render['p50']:.1f} "
              f"p99={render['p99']:.1f} max={render['max']:.1f} ms "
              f"over {render['navigations'] - 1}", flush=True)
    write_result("storefront", {"command": command_line(), "machine": machine(),
                                "prepare_seconds": prep, "search": results,
                                "first_render": render})


if __name__ == "__main__":
    main()
