"""An evaluation result as tables (Markdown, also printed by the CLI), verdict lines and a
recall@k plot with 95% confidence intervals as error bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUP_TITLES = {"models": "warm users", "cold": "cold users (target held out of training)",
                "all": "all users (warm and cold)", "valid": "validation"}


def shown_groups(result: dict[str, Any]) -> list[str]:
    """The test-user groups worth a table: warm, and cold and all when there are cold users
    (without them ``all`` is the warm group again)."""
    if result.get("cold"):
        return [g for g in ("models", "cold", "all") if result.get(g)]
    return ["models"] if result.get("models") else []


def metric_columns(result: dict[str, Any]) -> list[str]:
    ks = result["k"]
    return ([f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]
            + [f"coverage@{k}" for k in ks])


def table_rows(result: dict[str, Any], group: str) -> list[list[str]]:
    """One row per model in ``result[group]``: name, then ``metric_columns``; recall@k
    cells carry their 95% interval where the result has one."""
    columns = metric_columns(result)
    ci = result.get("ci", {}).get(group, {})
    rows = []
    for name, metrics in result.get(group, {}).items():
        cells = [name]
        for column in columns:
            if column not in metrics:
                cells.append("-")
                continue
            cell = f"{metrics[column]:.4f}"
            bounds = ci.get(name, {}).get(column) if column.startswith("recall@") else None
            if bounds:
                cell += f" [{_num(bounds[0])}, {_num(bounds[1])}]"
            cells.append(cell)
        rows.append(cells)
    return rows


def _num(x: float | None, digits: int = 4) -> str:
    return "inf" if x is None else f"{x:.{digits}f}"


def markdown_table(result: dict[str, Any], group: str) -> str:
    columns = ["model", *metric_columns(result)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result, group)]
    return "\n".join(lines)


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """``verdict.<group>.text`` for the groups shown."""
    verdicts = result.get("verdict", {})
    return [verdicts[g]["text"] for g in shown_groups(result) if g in verdicts]


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    """The whole report: data, split, verdict, tables per group with intervals, choices,
    tuning trials, stage times."""
    users = result["users"]
    counts = result["counts"]
    boot = result.get("bootstrap", {})
    parts = [
        f"# Evaluation: {result['dataset']} ({result['split']} split)",
        "",
        f"- data: `{result.get('catalog', '')}`, `{result.get('events', '')}`: "
        f"{counts['products']} products, {counts['users']} users, {counts['events']} events",
        f"- split `{result['split']}`, seed {result['seed']}, cold items "
        f"{result.get('cold_items', 0)} ({counts['cold_items']} products); test users: "
        f"{users['warm']} warm, {users['cold']} cold; validation users: "
        f"{counts['valid_users']}",
        "- full ranking over all products, the user's training history excluded",
    ]
    if boot:
        parts.append(f"- [low, high]: {boot['level']:.0%} bootstrap intervals, "
                     f"{boot['resamples']} resamples of the group's test users (the same "
                     "resamples for every model: ratios and differences are paired)")
    if lines := verdict_lines(result):
        parts += ["", "## Verdict", "", *[f"- {line}" for line in lines]]
    for group in shown_groups(result):
        parts += ["", f"## {GROUP_TITLES[group]}", "", markdown_table(result, group)]
    if plot_name:
        parts += ["", f"![recall@k]({plot_name})"]
    parts += _choices(result)
    if result.get("valid"):
        parts += ["", "## Validation", "", markdown_table(result, "valid")]
    seconds = result.get("seconds", {})
    if seconds:
        parts += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
        parts += [f"| {stage} | {value:.1f} |" for stage, value in seconds.items()]
    parts += ["", f"- split details: `{result.get('split_info', {})}`"]
    return "\n".join(parts) + "\n"


def _choices(result: dict[str, Any]) -> list[str]:
    choices = [f"- `{fam}` is `{c['variant']}` (best {c['by']})"
               for fam, c in result.get("chosen", {}).items()]
    for model in ("als", "ease"):
        if result.get(f"{model}_params"):
            trials = result.get("info", {}).get(model, {}).get("trials", [])
            choices.append(f"- {model.upper()} parameters chosen on validation: "
                           f"`{result[f'{model}_params']}` ({len(trials)} configurations "
                           "tried)")
    if not choices:
        return []
    parts = ["", "## Choices (validation only)", "", *choices]
    trials = result.get("info", {}).get("ease", {}).get("trials", [])
    if trials:
        metric = next(k for k in trials[0] if k.startswith("recall@"))
        parts += ["", f"EASE lambda search (validation {metric}):", "",
                  "| lambda | " + metric + " | mrr |", "|---|---|---|"]
        parts += [f"| {t['lambda']:g} | {t[metric]:.4f} | {t['mrr']:.4f} |"
                  for t in sorted(trials, key=lambda t: t["lambda"])]
    return parts


def plot_recall(result: dict[str, Any], path: Path) -> Path:
    """recall@k against k, one line per model with its 95% intervals as error bars; one
    panel per group shown (warm, and cold and all when there are cold users)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = shown_groups(result)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    ks = result["k"]
    chosen = {c["variant"]: family for family, c in result.get("chosen", {}).items()}
    for ax, group in zip(axes[0], groups, strict=True):
        names = [n for n in result[group] if n not in chosen]  # drawn once, as the family
        ci = result.get("ci", {}).get(group, {})
        for i, name in enumerate(names):
            metrics = result[group][name]
            y = [metrics[f"recall@{k}"] for k in ks]
            # spread the lines a little along x so that the error bars do not overlap
            x = [k * (1 + 0.025 * (i - (len(names) - 1) / 2)) for k in ks]
            bounds = [ci.get(name, {}).get(f"recall@{k}") for k in ks]
            err = None
            if all(bounds):  # recall intervals are always finite
                err = [[max(v - b[0], 0) for v, b in zip(y, bounds, strict=True)],
                       [max(b[1] - v, 0) for v, b in zip(y, bounds, strict=True)]]
            label = f"{name} ({variant})" if (variant := _variant(result, name)) else name
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(f"{result['dataset']} ({result['split']}): {GROUP_TITLES[group]}, "
                     f"{_group_users(result, group)} users", fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k (95% CI)")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _group_users(result: dict[str, Any], group: str) -> int:
    return result["users"][{"models": "warm"}.get(group, group)]


def _variant(result: dict[str, Any], name: str) -> str | None:
    return result.get("chosen", {}).get(name, {}).get("variant")


def write_report(result: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``folder/report.md`` and ``folder/recall.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    png = plot_recall(result, folder / "recall.png")
    md = folder / "report.md"
    md.write_text(markdown(result, png.name), encoding="utf-8")
    return md, png
