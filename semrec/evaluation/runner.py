"""One evaluation run: read the data, split it once, run every model on that split, score
the test targets, and gather the results (metrics per group, choices, stage times) as JSON.

The run works in its own data directory (a fresh temporary one unless ``workdir`` is given)
with the embedded store, so the user's index, feature cache and Qdrant server are never
touched; only the encoder/tower/user settings are taken from the user's configuration.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semrec.config import Settings
from semrec.evaluation.base import EvalContext, Fitted, QuietStages, Stages
from semrec.evaluation.metrics import rank_users, summarise
from semrec.evaluation.models import DEFAULT_MODELS, get_runner
from semrec.evaluation.splits import Dataset, load_dataset, make_split

DEFAULT_KS: tuple[int, ...] = (10, 20, 50)


@dataclass(frozen=True)
class EvalConfig:
    catalog: Path
    events: Path
    split: str = "last"
    cold_items: float = 0.0
    ks: tuple[int, ...] = DEFAULT_KS
    models: tuple[str, ...] = DEFAULT_MODELS
    seed: int = 0
    quantile: float = 0.9  # the temporal split's cut
    workdir: Path | None = None  # kept (and reused: cached features) when given
    train_minutes: float = 10.0  # semrec-trained's cap: the amazon run fits in 20 minutes


def evaluate(config: EvalConfig, settings: Settings,
             stages: Stages | None = None) -> dict[str, Any]:
    """Run ``config`` end to end; ``settings`` is the user's configuration (its ``home`` and
    ``store`` are replaced by the evaluation's own directory and embedded store)."""
    stages = stages or QuietStages()
    for name in config.models:
        get_runner(name)  # fail on a typo before any work
    settings = settings.model_copy(update={"train": settings.train.model_copy(
        update={"max_minutes": config.train_minutes})})
    started = time.perf_counter()
    with stages.stage("read"):
        dataset = load_dataset(config.catalog, config.events)
    if config.workdir is not None:
        if config.workdir.resolve() == Path(settings.home).resolve():
            raise ValueError(f"--workdir {config.workdir} is your own data directory; "
                             "evaluation needs a directory of its own")
        result = _run(config, settings, dataset, config.workdir, stages)
    else:
        with tempfile.TemporaryDirectory(prefix="semrec-eval-") as tmp:
            result = _run(config, settings, dataset, Path(tmp), stages)
    result["catalog"], result["events"] = str(config.catalog), str(config.events)
    result["seconds"] = {k: round(v, 2) for k, v in stages.seconds.items()}
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    return result


def _run(config: EvalConfig, settings: Settings, dataset: Dataset, workdir: Path,
         stages: Stages) -> dict[str, Any]:
    with stages.stage("split"):
        split = make_split(dataset, config.split, config.cold_items, config.seed,
                           config.quantile)
    own = settings.model_copy(update={"home": workdir, "store": ""})
    ctx = EvalContext(dataset, split, tuple(config.ks), own, workdir, stages, config.seed)
    result = evaluate_split(ctx, config.models)
    result["cold_items"] = config.cold_items
    return result


def evaluate_split(ctx: EvalContext, models: Sequence[str]) -> dict[str, Any]:
    """Run ``models`` on ``ctx.split`` and score each on the test targets, per group."""
    split, dataset = ctx.split, ctx.dataset
    groups = split.groups()
    history = split.test.train.matrix(split.n_users, split.n_items)
    result: dict[str, Any] = {
        "dataset": dataset.name, "split": split.kind, "k": list(ctx.ks), "seed": ctx.seed,
        "counts": {"products": dataset.n_items, "users": dataset.n_users,
                   "events": len(dataset.events), "cold_items": len(split.cold_items),
                   "unknown_product_events": dataset.unknown_product_events,
                   "valid_users": len(split.valid.users)},
        "users": {"warm": int(groups["warm"].sum()),
                  "cold": int(groups["cold"].sum()) if "cold" in groups else 0},
        "split_info": split.info, "models": {}, "cold": {}, "valid": {},
    }
    families: dict[str, list[Fitted]] = {}
    for name in models:
        for fitted in get_runner(name)(ctx):
            with ctx.stages.stage(f"{fitted.name}: score test", total=len(split.test.users)) \
                    as advance:
                ranked = rank_users(fitted.scorer, split.test.users, split.test.targets,
                                    history, max(ctx.ks), on_batch=advance)
            for group, mask in groups.items():
                key = "models" if group == "warm" else "cold"
                result[key][fitted.name] = _rounded(
                    summarise(ranked.subset(mask), ctx.ks, split.n_items))
            if fitted.valid is not None:
                result["valid"][fitted.name] = _rounded(fitted.valid)
            if "params" in fitted.info:
                result[f"{fitted.name}_params"] = fitted.info["params"]
            result.setdefault("info", {})[fitted.name] = {
                k: v for k, v in fitted.info.items() if k != "params"}
            if fitted.family:
                families.setdefault(fitted.family, []).append(fitted)
    for family, variants in families.items():
        best = max(variants, key=lambda f: (f.valid or {}).get(ctx.primary, 0.0))
        result.setdefault("chosen", {})[family] = {"variant": best.name,
                                                   "by": f"valid {ctx.primary}"}
        for key in ("models", "cold", "valid"):
            if best.name in result[key]:
                result[key][family] = result[key][best.name]
    return result


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}
