"""Recommendation quality: the ``semrec evaluate`` runs behind the quality table.

Runs, with the evaluate code itself (``semrec.evaluation.evaluate``), on one shared split
per run and full ranking:

- amazon-games, ``last`` split, then again with 10% cold products;
- hm-fashion, ``temporal`` split, then again with 10% cold products.

For each run it prints the equivalent ``semrec evaluate`` command, the warm and cold tables
and the stage times; all results go to ``bench/out/quality-<time>.json`` (plus a Markdown
report and plot per run under ``bench/out/quality-reports/<run>/``). The two runs on one dataset
share a scratch data directory, so the second reuses the cached text features (its ingest
stage is near zero); the first run's times are those of a fresh ``semrec evaluate``.

Run from the repository root::

    python -m bench.quality                          # all four runs
    python -m bench.quality --only amazon-games      # one dataset
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench._common import OUT, command_line, machine, write_result
from semrec.config import load_settings
from semrec.evaluation import EvalConfig, evaluate
from semrec.evaluation.base import QuietStages
from semrec.evaluation.report import markdown_table, write_report

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"

#: (dataset, split, cold fraction)
RUNS: tuple[tuple[str, str, float], ...] = (
    ("amazon-games", "last", 0.0),
    ("amazon-games", "last", 0.1),
    ("hm-fashion", "temporal", 0.0),
    ("hm-fashion", "temporal", 0.1),
)


class PrintedStages(QuietStages):
    """Times stages and prints each top-level one as it starts (no bars in logs)."""

    def stage(self, name: str, total: int | None = None,
              timed: bool = True) -> AbstractContextManager[Callable[[int], None]]:
        if timed and name not in self.seconds:
            print(f"  . {name}", flush=True)
        return super().stage(name, total, timed)


def evaluate_command(config: EvalConfig) -> str:
    """The ``semrec evaluate`` command line that runs ``config``."""
    args = ["semrec", "evaluate", "--catalog", str(config.catalog), "--events",
            str(config.events), "--split", config.split, "--k", ",".join(map(str, config.ks))]
    if config.cold_items:
        args += ["--cold-items", str(config.cold_items)]
    return shlex.join(args)


def run(datasets: Path, only: list[str] | None, report_root: Path) -> list[dict[str, Any]]:
    settings = load_settings()
    results = []
    scratch: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="semrec-quality-") as tmp:
        for name, split, cold in RUNS:
            if only and name not in only:
                continue
            folder = datasets / name
            scratch.setdefault(name, Path(tmp) / name)
            config = EvalConfig(catalog=folder / "catalog.csv", events=folder / "events.csv",
                                split=split, cold_items=cold, workdir=scratch[name])
            print(f"\n$ {evaluate_command(config)}", flush=True)
            result = evaluate(config, settings, PrintedStages())
            result["command"] = evaluate_command(config)
            label = f"{name}-{split}" + (f"-cold{cold}" if cold else "")
            write_report(result, report_root / label)
            _print(result)
            results.append(result)
    return results


def _print(result: dict[str, Any]) -> None:
    users = result["users"]
    print(f"\nwarm users ({users['warm']}):\n{markdown_table(result, 'models')}")
    if result.get("cold"):
        print(f"\ncold users ({users['cold']}):\n{markdown_table(result, 'cold')}")
    print(f"\nALS parameters: {result.get('als_params')}; semrec = "
          f"{result.get('chosen', {}).get('semrec', {}).get('variant')}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS,
                        help="Folder holding amazon-games/ and hm-fashion/.")
    parser.add_argument("--only", nargs="*", help="Dataset names to run (default all).")
    args = parser.parse_args()
    stamp_dir = OUT / "quality-reports"
    results = run(args.datasets, args.only, stamp_dir)
    write_result("quality", {"command": command_line(), "machine": machine(),
                             "runs": results})
    print(f"reports under {stamp_dir}")


if __name__ == "__main__":
    main()
