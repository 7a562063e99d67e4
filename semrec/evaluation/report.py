"""An evaluation result as tables (Markdown, also printed by the CLI) and a recall@k plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUP_TITLES = {"models": "warm users", "cold": "cold users (target held out of training)"}


def metric_columns(result: dict[str, Any]) -> list[str]:
    ks = result["k"]
    return ([f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]
            + [f"coverage@{k}" for k in ks])


def table_rows(result: dict[str, Any], group: str) -> list[list[str]]:
    """One row per model in ``result[group]``: name, then ``metric_columns``."""
    columns = metric_columns(result)
    return [[name, *(f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns)]
            for name, metrics in result.get(group, {}).items()]


def markdown_table(result: dict[str, Any], group: str) -> str:
    columns = ["model", *metric_columns(result)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result, group)]
    return "\n".join(lines)


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    """The whole report: data, split, tables per group, choices, stage times."""
    users = result["users"]
    counts = result["counts"]
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
    for group in ("models", "cold"):
        if result.get(group):
            parts += ["", f"## {GROUP_TITLES[group]}", "", markdown_table(result, group)]
    if plot_name:
        parts += ["", f"![recall@k]({plot_name})"]
    choices = [f"- `{fam}` is `{c['variant']}` (best {c['by']})"
               for fam, c in result.get("chosen", {}).items()]
    if result.get("als_params"):
        choices.append(f"- ALS parameters chosen on validation: `{result['als_params']}`")
    if choices:
        parts += ["", "## Choices", "", *choices]
    if result.get("valid"):
        parts += ["", "## Validation", "", markdown_table(result, "valid")]
    seconds = result.get("seconds", {})
    if seconds:
        parts += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
        parts += [f"| {stage} | {value:.1f} |" for stage, value in seconds.items()]
    parts += ["", f"- split details: `{result.get('split_info', {})}`"]
    return "\n".join(parts) + "\n"


def plot_recall(result: dict[str, Any], path: Path) -> Path:
    """recall@k against k, one line per model; warm and cold side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("models", "cold") if result.get(g)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    ks = result["k"]
    chosen = {c["variant"]: family for family, c in result.get("chosen", {}).items()}
    for ax, group in zip(axes[0], groups, strict=True):
        for name, metrics in result[group].items():
            if name in chosen:
                continue  # drawn once, under its family's name
            label = f"{name} ({variant})" if (variant := _variant(result, name)) else name
            ax.plot(ks, [metrics[f"recall@{k}"] for k in ks], marker="o", label=label)
        ax.set_title(f"{result['dataset']} ({result['split']}): {GROUP_TITLES[group]}",
                     fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _variant(result: dict[str, Any], name: str) -> str | None:
    return result.get("chosen", {}).get(name, {}).get("variant")


def write_report(result: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``folder/report.md`` and ``folder/recall.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    png = plot_recall(result, folder / "recall.png")
    md = folder / "report.md"
    md.write_text(markdown(result, png.name), encoding="utf-8")
    return md, png
