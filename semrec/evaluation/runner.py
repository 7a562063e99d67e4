"""One evaluation run: read the data, split it once, run every model on that split, score
the test targets, and gather the results (metrics per group, choices, confidence intervals,
the verdict, stage times) as JSON.

Groups: ``models`` holds the warm users (test target seen in training), ``cold`` the users
whose target was held out of training, ``all`` both together (what a shop sees).
``ci.<group>.<model>.<metric>`` is a 95% bootstrap interval over that group's users;
``ci.<group>.ratio`` and ``ci.<group>.difference`` compare ``semrec`` (the family entry
chosen on validation) with the best baseline on the group's point estimate, on the same
resampled users (paired). ``verdict.<group>`` says whether semrec is at least that baseline
and whether the ratio's interval lies above 1.

The run works in its own data directory (a fresh temporary one unless ``workdir`` is given)
with the embedded store, so the user's index, feature cache and Qdrant server are never
touched; only the encoder/tower/user settings are taken from the user's configuration.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semrec.config import Settings
from semrec.evaluation.base import EvalContext, QuietStages, Stages
from semrec.evaluation.metrics import (
    BOOTSTRAP,
    LEVEL,
    Ranked,
    bootstrap_means,
    interval,
    per_user,
    rank_users,
    ratio_samples,
    summarise,
)
from semrec.evaluation.models import DEFAULT_MODELS, get_runner
from semrec.evaluation.report import GROUP_TITLES
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
    train_minutes: float = 15.0  # semrec-trained's search + refit: amazon within 25 minutes
    bootstrap: int = BOOTSTRAP  # resamples of the users per confidence interval


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
    result = evaluate_split(ctx, config.models, config.bootstrap)
    result["cold_items"] = config.cold_items
    return result


#: result key per group of test users
GROUP_KEYS: dict[str, str] = {"warm": "models", "cold": "cold", "all": "all"}


def evaluate_split(ctx: EvalContext, models: Sequence[str],
                   bootstrap: int = BOOTSTRAP) -> dict[str, Any]:
    """Run ``models`` on ``ctx.split`` and score each on the test targets, per group, with
    ``bootstrap`` resamples for the confidence intervals."""
    split, dataset = ctx.split, ctx.dataset
    masks = split.groups()
    masks["all"] = np.ones(len(split.test.users), bool)
    history = split.test.train.matrix(split.n_users, split.n_items)
    result: dict[str, Any] = {
        "dataset": dataset.name, "split": split.kind, "k": list(ctx.ks), "seed": ctx.seed,
        "counts": {"products": dataset.n_items, "users": dataset.n_users,
                   "events": len(dataset.events), "cold_items": len(split.cold_items),
                   "unknown_product_events": dataset.unknown_product_events,
                   "valid_users": len(split.valid.users)},
        "users": {group: int(masks[group].sum()) if group in masks else 0
                  for group in GROUP_KEYS},
        "split_info": split.info, "models": {}, "cold": {}, "all": {}, "valid": {},
    }
    families: dict[str, list[tuple[str, float]]] = {}  # family -> (variant, valid score)
    ranked: dict[str, Ranked] = {}
    baselines: list[str] = []
    for name in models:
        fitted_models = get_runner(name)(ctx)
        while fitted_models:  # one at a time, so that a scored model's scorer (EASE's
            fitted = fitted_models.pop(0)  # n x n weights) is freed before the next fit
            with ctx.stages.stage(f"{fitted.name}: score test", total=len(split.test.users)) \
                    as advance:
                ranked[fitted.name] = rank_users(fitted.scorer, split.test.users,
                                                 split.test.targets, history, max(ctx.ks),
                                                 on_batch=advance)
            for group, mask in masks.items():
                result[GROUP_KEYS[group]][fitted.name] = _rounded(
                    summarise(ranked[fitted.name].subset(mask), ctx.ks, split.n_items))
            if fitted.valid is not None:
                result["valid"][fitted.name] = _rounded(fitted.valid)
            if "params" in fitted.info:
                result[f"{fitted.name}_params"] = fitted.info["params"]
            result.setdefault("info", {})[fitted.name] = {
                k: v for k, v in fitted.info.items() if k != "params"}
            if fitted.family:
                families.setdefault(fitted.family, []).append(
                    (fitted.name, (fitted.valid or {}).get(ctx.primary, 0.0)))
            if fitted.baseline:
                baselines.append(fitted.name)
            del fitted
    aliases: dict[str, str] = {}
    for family, variants in families.items():
        best = max(variants, key=lambda v: v[1])[0]  # ties: the first
        aliases[family] = best
        result.setdefault("chosen", {})[family] = {"variant": best,
                                                   "by": f"valid {ctx.primary}"}
        for key in ("models", "cold", "all", "valid"):
            if best in result[key]:
                result[key][family] = result[key][best]
    result["bootstrap"] = {"resamples": bootstrap, "level": LEVEL, "unit": "test users",
                           "seed": ctx.seed, "paired": True}
    result["ci"], result["verdict"] = {}, {}
    for group, mask in masks.items():
        if not mask.any():
            continue
        key = GROUP_KEYS[group]
        if group == "all" and "cold" not in masks:  # all users are the warm ones
            ci, verdict = copy.deepcopy(result["ci"]["models"]), \
                copy.deepcopy(result["verdict"].get("models"))
        else:
            ci, verdict = compare(ranked, mask, ctx.ks, result[key], baselines,
                                  aliases.get("semrec"), bootstrap, ctx.seed)
        ci.update({family: ci[variant] for family, variant in aliases.items()})
        result["ci"][key] = ci
        if verdict is not None:
            verdict["text"] = verdict_line(key, verdict)
            result["verdict"][key] = verdict
    return result


def compare(ranked: dict[str, Ranked], mask: np.ndarray, ks: Sequence[int],
            points: dict[str, dict[str, float]], baselines: Sequence[str],
            semrec: str | None, resamples: int, seed: int
            ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Bootstrap intervals for one group of test users (``mask``): every model's per-user
    metrics, and semrec's ratio and difference to the best baseline on ``recall@ks[0]``'s
    point estimate (``points``), all on the same resampled users.

    The ratio is ``null`` where the baseline's point estimate is 0 (cold users: a baseline
    cannot score a cold product); a bound is ``null`` where it is infinite (the baseline
    found nothing in that share of resamples)."""
    names = list(ranked)
    per = [per_user(ranked[name].subset(mask), ks) for name in names]
    metrics = list(per[0])
    values = np.stack([p[m] for p in per for m in metrics])
    samples = bootstrap_means(values, resamples, seed).reshape(len(names), len(metrics), -1)
    ci: dict[str, Any] = {
        name: {m: _bounds(interval(samples[i, j])) for j, m in enumerate(metrics)}
        for i, name in enumerate(names)}
    primary = f"recall@{ks[0]}"
    if semrec is None or not baselines:
        return ci, None
    best = max(baselines, key=lambda b: (points[b][primary], -baselines.index(b)))
    s, b = (samples[names.index(n), metrics.index(primary)] for n in (semrec, best))
    sv, bv = points["semrec"][primary], points[best][primary]
    ratio = round(sv / bv, 4) if bv > 0 else None
    ratio_ci = interval(ratio_samples(s, b)) if bv > 0 else None
    ci["ratio"] = _bounds(ratio_ci) if ratio_ci is not None else None
    ci["difference"] = _bounds(interval(s - b))
    verdict = {"metric": primary, "semrec": semrec, "semrec_value": sv,
               "best_baseline": best, "baseline_value": bv, "ratio": ratio,
               "ratio_ci": ci["ratio"], "difference_ci": ci["difference"],
               "at_least_baseline": sv >= bv,
               "ratio_ci_above_1": None if ratio_ci is None else bool(ratio_ci[0] > 1.0),
               "difference_ci_above_0": ci["difference"][0] > 0.0}
    return ci, verdict


def verdict_line(group: str, v: dict[str, Any]) -> str:
    """One sentence: semrec against the best baseline on one group."""
    head = (f"{GROUP_TITLES[group]}: semrec ({v['semrec']}) {v['metric']} "
            f"{v['semrec_value']:.4f} vs {v['best_baseline']} {v['baseline_value']:.4f}")
    if v["ratio"] is None:
        lo, hi = v["difference_ci"]
        sure = "above 0" if v["difference_ci_above_0"] else "not above 0"
        return (f"{head}: no baseline finds any target (so no ratio); the difference's 95% "
                f"CI [{lo:.4f}, {hi:.4f}] is {sure}")
    lo, hi = v["ratio_ci"]
    where = "at least" if v["at_least_baseline"] else "below"
    sure = "lies above 1" if v["ratio_ci_above_1"] else "does not lie above 1"
    return (f"{head}: ratio {v['ratio']:.2f} [{_fmt(lo)}, {_fmt(hi)}], {where} the best "
            f"baseline; the ratio's 95% CI {sure}")


def _fmt(x: float | None) -> str:
    return "inf" if x is None else f"{x:.2f}"


def _bounds(pair: tuple[float, float]) -> list[float | None]:
    """An interval for JSON: rounded, infinite bounds as ``null``."""
    return [round(x, 6) if np.isfinite(x) else None for x in pair]


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}
