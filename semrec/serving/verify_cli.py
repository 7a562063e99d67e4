"""``semrec verify [--catalog FILE] [--repair]``: the typer command (registered on the main
app by ``serving/cli.py``); the checks themselves are in ``verify.py``.

Exit status: 0 when everything agrees (or every difference was repaired), 1 otherwise.
Needs the index, so it is refused (naming the owner) while ``semrec serve`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from semrec.config import load_settings
from semrec.errors import reported
from semrec.workspace import Workspace

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line


def verify(
    ctx: typer.Context,
    catalog: Annotated[Path | None, typer.Option(
        "--catalog", help="Also compare with this catalog file (.csv or .jsonl).")] = None,
    repair: Annotated[bool, typer.Option(help="Fix every difference found.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check that catalog, feature cache, events and index agree; --repair fixes them."""
    from ingest import image_source, read_catalog
    from semrec.index.verify import verify as run_verify

    with reported(err):
        settings = load_settings(home=ctx.obj)
        products = None
        if catalog is not None:
            result = read_catalog(catalog, image_roots=settings.image.allowed_roots,
                                  allow_urls=settings.image.allow_urls)
            products = result.items
        roots = ((catalog.absolute().parent,) if catalog else ()) + settings.image.allowed_roots
        image = settings.image
        images = image_source(image.max_pixels, roots or None, allow_urls=image.allow_urls,
                              url_timeout_s=image.url_timeout_s,
                              max_download_bytes=image.max_download_bytes)
        with Workspace(settings, role="verify") as ws:
            report = run_verify(ws, images, products, repair=repair)
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.counts.items())
        out.print(f"checked: {counts}", highlight=False)
        for f in report.findings[:50]:
            out.print(f"{f.kind}: {f.subject}: {f.detail}", highlight=False)
        if len(report.findings) > 50:
            out.print(f"... and {len(report.findings) - 50} more", highlight=False)
        kinds = ", ".join(f"{n} {k}" for k, n in report.by_kind().items())
        out.print("everything agrees" if report.ok else
                  f"{len(report.findings)} difference(s) ({kinds})"
                  + (f"; repaired, {len(report.remaining)} left" if report.repaired
                     else "; run with --repair to fix"), highlight=False)
    if report.remaining or (not report.ok and not repair):
        raise typer.Exit(1)
