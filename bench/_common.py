"""Helpers shared by the benchmark scripts: the command line, machine facts, JSON output."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def command_line() -> str:
    """The exact command this process was started with (``python -m bench.x ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        module = Path(argv[0]).resolve()
        try:
            name = ".".join(module.relative_to(Path.cwd().resolve()).with_suffix("").parts)
            argv[0:1] = ["-m", name]
        except ValueError:
            pass
    return shlex.join([sys.executable, *argv])


def dataset_parser(doc: str, example: str) -> argparse.ArgumentParser:
    """The argument parser of a benchmark over a dataset folder: its description is the
    first paragraph of ``doc`` (the script's docstring), with the options every such script
    takes, ``--dataset`` (required; ``example`` names a folder for the help) and ``--limit``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True,
                        help=f"folder with catalog.csv{example}")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N products of the catalog (default: all)")
    return parser


def train_overrides(items: list[str]) -> dict[str, Any]:
    """``[train]`` overrides from ``key=value`` arguments: each value read as JSON where it
    is JSON (numbers, booleans), else as the string it is."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run_path(prefix: str, dataset: Path, image_model: str, limit: int | None,
             suffix: str = "") -> Path:
    """Where a benchmark keeps what it builds for one dataset, image encoder and
    ``--limit`` (a feature cache, a data directory) between runs, under ``bench/out``."""
    return OUT / (f"{prefix}-{dataset.name}-{image_model}{f'-{limit}' if limit else ''}"
                  f"{suffix}")


def begin() -> dict[str, Any]:
    """The head of every result, printed as it starts: the command line and the machine."""
    head = {"command": command_line(), "machine": machine()}
    print(f"command: {head['command']}")
    print(f"machine: {head['machine']}", flush=True)
    return head


def finish(head: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A whole result: ``head`` (``begin``), ``body``, and the load average at the end."""
    return {**head, **body, "loadavg_at_end": os.getloadavg()}


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, load, library versions: what the numbers ran on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu, "nproc": os.cpu_count(), "mem_gib": mem_gib,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "loadavg_at_start": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 3),
            "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``bench/out/<name>-<UTC time>.json`` and print where."""
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT / f"{name}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"result written to {path}")
    return path
