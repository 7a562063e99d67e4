"""HTTP latency and throughput of ``semrec serve`` on loopback, with a bounded load generator.

The catalog (amazon-games by default) is ingested text-only and its events loaded through
the real CLI into ``--home`` (kept, so later runs skip this), then ``semrec serve`` runs in a
subprocess on 127.0.0.1 and an aiohttp client on uvloop sends a fixed list of requests
(``--requests`` per level, stopping early at ``--time-limit`` seconds) with 1, 8 and 32
requests in flight. Endpoints: ``GET /users/{id}/feed?k=10`` for random users with history
and ``GET /items/{id}/similar?k=10`` for random products. Latency is per request, measured
at the client (connection reuse on, as a real client would); throughput is completed
requests over the level's wall time. Any non-200 answer or transport error is an error.

The load generator shares the machine with the server (2 cores here), so these are upper
bounds on what the server alone would show. It is aiohttp rather than httpx because it
costs less CPU per request (measured side by side at concurrency 32: httpx 412 req/s and
p99 324 ms against aiohttp's 529 req/s and p99 67 ms on the same server), and CPU the
client takes is CPU the server does not get.

Run from the repository root::

    python -m bench.http_latency --home /tmp/semrec-bench-http
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

from bench._common import command_line, machine, percentiles, write_result

DATASET = Path("/work/shared/datasets/amazon-games")
SEMREC = [sys.executable, "-c", "from semrec.cli import app; app()"]


def _env() -> dict[str, str]:
    return {**os.environ, "SEMREC_IMAGE__ENABLED": "false"}


def prepare(home: Path, catalog: Path, events: Path) -> dict[str, float]:
    """Ingest and load events through the CLI unless ``home`` already has them."""
    seconds: dict[str, float] = {}
    if (home / "semrec.db").exists() and (home / "models" / "CURRENT").exists():
        return seconds
    for step, args in (("ingest", ["ingest", str(catalog)]), ("events", ["events", str(events)])):
        started = time.perf_counter()
        subprocess.run([*SEMREC, "--home", str(home), *args, "--json"], check=True, env=_env(),
                       stdout=subprocess.DEVNULL)
        seconds[step] = round(time.perf_counter() - started, 1)
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([*SEMREC, "--home", str(home), "serve", "--port", str(port),
                               "--no-warm"], env=_env())  # queries only: no encoder
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"semrec serve exited with status {server.returncode}")
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("semrec serve did not answer /health within 120 s")


async def load(base: str, paths: list[str], concurrency: int,
               time_limit: float) -> dict[str, Any]:
    """Send ``paths`` with ``concurrency`` in flight; stop starting new ones at the limit."""
    queue = list(reversed(paths))
    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as client:
        deadline = time.perf_counter() + time_limit

        async def worker() -> None:
            while queue and time.perf_counter() < deadline:
                path = queue.pop()
                started = time.perf_counter()
                try:
                    async with client.get(path) as response:
                        await response.read()
                        if response.status != 200:
                            errors.append(f"{response.status} {path}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{type(exc).__name__} {path}")
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "error_examples": errors[:5], "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 1), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/semrec-bench-http"))
    parser.add_argument("--catalog", type=Path, default=DATASET / "catalog.csv")
    parser.add_argument("--events", type=Path, default=DATASET / "events.csv")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2000, help="Per endpoint and level.")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=60.0, help="Seconds per level.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prep = prepare(args.home, args.catalog, args.events)
    with open(args.catalog, newline="", encoding="utf-8") as f:
        products = [row["product_id"] for row in csv.DictReader(f)]
    with open(args.events, newline="", encoding="utf-8") as f:
        users = sorted({row["user_id"] for row in csv.DictReader(f)})
    rng = random.Random(args.seed)
    port = free_port()
    server = start_server(args.home, port)
    base = f"http://127.0.0.1:{port}"
    results: list[dict[str, Any]] = []
    try:
        info = httpx.get(f"{base}/info", timeout=30).json()
        endpoints = {"feed": lambda: f"/users/{rng.choice(users)}/feed?k=10",
                     "similar": lambda: f"/items/{rng.choice(products)}/similar?k=10"}
        for name, make in endpoints.items():
            uvloop.run(load(base, [make() for _ in range(args.warmup)], 8, args.time_limit))
            for level in (int(c) for c in args.concurrency.split(",")):
                paths = [make() for _ in range(args.requests)]
                row = {"endpoint": name, **uvloop.run(load(base, paths, level,
                                                            args.time_limit))}
                results.append(row)
                print(f"{name:8} c={level:<3} n={row['requests']:<5} p50={row['p50']:7.2f} ms "
                      f"p99={row['p99']:7.2f} ms {row['throughput_rps']:7.1f} req/s "
                      f"errors={row['errors']}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result("http_latency", {
        "command": command_line(), "machine": machine(), "prepare_seconds": prep,
        "products": info["products"], "users": info["users"], "events": info["events"],
        "model": info["served_version"], "results": results,
    })


if __name__ == "__main__":
    main()
