"""The ``semrec`` command line (typer + rich).

typer gives typed options with help for free; rich gives tables and progress bars.
Results go to stdout (``--json`` for machines); progress, warnings and errors to stderr.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from semrec.config import Settings, load_settings
from semrec.errors import reported
from semrec.home import HomeBusy
from semrec.index import ingest as index_products
from semrec.serving.recommender import SIMILAR_BY, Recommendation, open_recommender
from semrec.serving.remote import RemoteApi, live_server
from semrec.state import InsertReport
from semrec.store import Filters
from semrec.workspace import Workspace

app = typer.Typer(help="semrec: multimodal semantic product recommendations.",
                  no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line

HomeOption = Annotated[Path | None, typer.Option(
    "--home", envvar="SEMREC_HOME", help="Data directory (default ./semrec-data).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
KOption = Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many results.")]
CategoryOption = Annotated[str | None, typer.Option("--category", help="Only this category.")]


@app.callback()
def main(ctx: typer.Context, home: HomeOption = None) -> None:
    ctx.obj = home


def _settings(ctx: typer.Context) -> Settings:
    return load_settings(home=ctx.obj)


def _user_errors() -> Any:
    """Errors a user can act on: printed as one clear line, exit status 1."""
    return reported(err)


@contextmanager
def _owner_or_server(settings: Settings, role: str) -> Iterator[tuple[Any, RemoteApi | None]]:
    """The data directory opened as its index owner, or, while a live ``semrec serve`` owns
    it, that server's API (``(None, remote)``); else the usual busy error."""
    try:
        ws = Workspace(settings, role=role)
    except HomeBusy:
        remote = live_server(settings)
        if remote is None:
            raise
        err.print(f"the index is served by {remote.url}: sending this {role} there",
                  highlight=False)
        yield None, remote
        return
    with ws:
        yield ws, None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


@app.command()
def ingest(ctx: typer.Context,
           catalog: Annotated[Path, typer.Argument(help="Catalog file (.csv or .jsonl).")],
           strict: Annotated[bool, typer.Option(help=(
               "Reject a row for any bad field (not only product_id and title), and exit 1 "
               "if any row was rejected."))] = False,
           as_json: JsonFlag = False) -> None:
    """Read, validate, encode and index a catalog (new and changed products only)."""
    from ingest import image_source, read_catalog

    with _user_errors():
        settings = _settings(ctx)
        image = settings.image
        result = read_catalog(catalog, image_roots=image.allowed_roots,
                              allow_urls=image.allow_urls, strict=strict)
        for error in result.errors:
            err.print(f"[yellow]rejected:[/] {error}", highlight=False)
        for warning in result.warnings:
            err.print(f"[yellow]field left out:[/] {warning} (the product is indexed without "
                      "it)", highlight=False)
        roots = (catalog.absolute().parent, *image.allowed_roots)
        images = image_source(image.max_pixels, roots, allow_urls=image.allow_urls,
                              url_timeout_s=image.url_timeout_s,
                              max_download_bytes=image.max_download_bytes)
        with _owner_or_server(settings, "ingest") as (ws, remote):
            if ws is not None:
                ws.served_version(create=True)  # a bad encoder setting fails before any work
            with _progress() as bar:
                task = bar.add_task("indexing", total=len(result.items))
                if remote is not None:
                    report, total = remote.ingest(result.items, lambda n: bar.advance(task, n))
                else:
                    report = index_products(ws, result.items, images,
                                            on_progress=lambda n: bar.advance(task, n))
                    total = ws.products.count()
        if report.switched_from:
            old, kind = report.switched_from
            err.print(f"[bold yellow]WARNING: new encoders.[/] {old} was built on other "
                      f"encoders or weights than the config names: every product is now "
                      f"indexed in {report.model_version}, re-encoded where needed"
                      + ("; the trained model is no longer served: run `semrec train` again"
                         if kind == "trained" else ""), highlight=False)
        if report.image_problem:
            err.print(f"[bold yellow]WARNING: text-only indexing.[/] {report.image_problem}",
                      highlight=False)
        images_of = {p.product_id: p.image for p in result.items}
        for pid, reason in report.image_errors:
            err.print(f"[yellow]image skipped[/] for {pid} ({images_of.get(pid)}): {reason} "
                      "(indexed from its text)", highlight=False)
        summary = {
            "rows": len(result.items) + len(result.errors), "rejected": len(result.errors),
            "fields_left_out": len(result.warnings),
            "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "images_added": report.images_added, "texts_encoded": report.texts_encoded,
            "images_encoded": report.images_encoded, "image_errors": len(report.image_errors),
            "text_only": report.image_problem is not None, "products": total,
            "seconds": {k: round(v, 3) for k, v in report.seconds.items()},
        }
        if as_json:
            out.print_json(data=summary)
        else:
            out.print(f"{summary['added']} added, {summary['updated']} updated, "
                      f"{summary['unchanged']} unchanged, {summary['rejected']} rejected; "
                      f"encoded {summary['texts_encoded']} texts and {summary['images_encoded']} "
                      f"images; {total} products indexed.")
    if strict and result.errors:
        raise typer.Exit(1)


@app.command()
def events(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(help="Events file (.csv or .jsonl).")],
           as_json: JsonFlag = False) -> None:
    """Load interactions (user_id, product_id, timestamp, event) into the event log."""
    from ingest import read_events

    with _user_errors():
        settings = _settings(ctx)
        result = read_events(file, event_types=settings.user.known_events)
        for error in result.errors:
            err.print(f"[yellow]rejected:[/] {error}", highlight=False)
        with Workspace(settings, role="events", own_index=False) as sr:
            unknown = sorted({e.product_id for e in result.items}
                             - sr.products.known(e.product_id for e in result.items))
            report = InsertReport(0, 0)
            with _progress() as bar:
                task = bar.add_task("loading events", total=len(result.items))
                for start in range(0, len(result.items), 20_000):
                    chunk = result.items[start:start + 20_000]
                    added = sr.events.add(chunk)
                    report = InsertReport(report.inserted + added.inserted,
                                          report.duplicates + added.duplicates)
                    bar.advance(task, len(chunk))
            summary = {"rows": len(result.items) + len(result.errors),
                       "rejected": len(result.errors), "inserted": report.inserted,
                       "duplicates": report.duplicates, "unknown_products": len(unknown),
                       "events": sr.events.count(), "users": sr.events.user_count()}
        if unknown:
            unknown_set = set(unknown)
            n_events = sum(e.product_id in unknown_set for e in result.items)
            err.print(f"[yellow]{n_events} event(s) name {len(unknown)} product(s) not in the "
                      f"catalog[/] (e.g. {', '.join(unknown[:5])}): kept, they count once those "
                      "products are ingested.", highlight=False)
        if as_json:
            out.print_json(data=summary)
        else:
            out.print(f"{report.inserted} events loaded ({report.duplicates} already there, "
                      f"{len(result.errors)} rejected); {summary['events']} events from "
                      f"{summary['users']} users in total.")


MinPriceOption = Annotated[float | None, typer.Option("--min-price", min=0,
                                                     help="Only at this price or above.")]
MaxPriceOption = Annotated[float | None, typer.Option("--max-price", min=0,
                                                     help="Only at this price or below.")]
InStockOption = Annotated[bool | None, typer.Option(
    "--in-stock/--out-of-stock", help="Only products in stock (or only out of stock).")]
ExcludeOption = Annotated[list[str] | None, typer.Option(
    "--exclude", help="Product IDs never to return (repeat, or separate with commas).")]
DiversityOption = Annotated[float, typer.Option(
    "--diversity", min=0.0, max=1.0, help="MMR re-ranking: 0 = pure relevance, 1 = most diverse.")]
SimilarBy = Enum("SimilarBy", {name: name for name in SIMILAR_BY}, type=str)  # type: ignore[misc]
ByOption = Annotated[SimilarBy, typer.Option(
    "--by", help="Similar by: image (looks like it), text, or both (the fused vector).")]


@app.command()
def similar(ctx: typer.Context, product_id: str, k: KOption = 10,
            category: CategoryOption = None, min_price: MinPriceOption = None,
            max_price: MaxPriceOption = None, in_stock: InStockOption = None,
            exclude: ExcludeOption = None, diversity: DiversityOption = 0.0,
            by: ByOption = SimilarBy.both,  # type: ignore[attr-defined]
            as_json: JsonFlag = False) -> None:
    """Products most similar to PRODUCT_ID (never itself), by image, text or both."""
    with _user_errors():
        filters = Filters.parse(category, min_price, max_price, in_stock, exclude)
        with _owner_or_server(_settings(ctx), "similar") as (ws, remote):
            items = (remote or open_recommender(ws)).similar(product_id, k, filters, diversity,
                                                             by.value)
    _show(items, as_json, f"Similar to {product_id}" + ("" if by.value == "both"
                                                         else f" by {by.value}"))


@app.command()
def feed(ctx: typer.Context, user_id: str, k: KOption = 10, category: CategoryOption = None,
         min_price: MinPriceOption = None, max_price: MaxPriceOption = None,
         in_stock: InStockOption = None, exclude: ExcludeOption = None,
         diversity: DiversityOption = 0.0, as_json: JsonFlag = False) -> None:
    """A personalised feed for USER_ID, leaving out what they already bought."""
    with _user_errors():
        filters = Filters.parse(category, min_price, max_price, in_stock, exclude)
        with _owner_or_server(_settings(ctx), "feed") as (ws, remote):
            result = (remote or open_recommender(ws)).feed(user_id, k, filters, diversity)
    if not result.personalised:
        err.print(f"user {user_id!r} has no history yet: showing popular products.",
                  highlight=False)
    title = (f"Feed for {user_id} (from {result.history_size} interactions)"
             if result.personalised else f"Popular products (no history for {user_id})")
    _show(result.items, as_json, title)


@app.command()
def search(ctx: typer.Context,
           query: Annotated[str, typer.Argument(help="Free text: what you are looking for.")],
           k: KOption = 10, category: CategoryOption = None, min_price: MinPriceOption = None,
           max_price: MaxPriceOption = None, in_stock: InStockOption = None,
           exclude: ExcludeOption = None, diversity: DiversityOption = 0.0,
           user: Annotated[str | None, typer.Option(
               "--user", help="Personalise: re-rank the matches with this user's history.")]
           = None, as_json: JsonFlag = False) -> None:
    """Products matching a free-text QUERY (semantic search over the served version)."""
    from semrec.serving.search import check_query, query_vector

    with _user_errors():
        settings = _settings(ctx)
        text = check_query(query, settings.search.max_query_chars, "QUERY")
        filters = Filters.parse(category, min_price, max_price, in_stock, exclude)
        with _owner_or_server(settings, "search") as (ws, remote):
            if remote is not None:
                result = remote.search(text, k, filters, diversity, user)
            else:
                version = ws.served_version()
                result = open_recommender(ws, version).search(
                    text, query_vector(ws, version, text), k, filters, diversity, user,
                    settings.search.user_weight)
    who = f" for {user}" if user and result.personalised else ""
    _show(result.items, as_json, f"Search: {text!r}{who}")


@app.command()
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
          warm: Annotated[bool, typer.Option(
              help="Load the text encoder at start, so the first PUT /items is fast.")] = True,
          open_without_key: Annotated[bool, typer.Option(
              help="Listen on HOST even with no SEMREC_API_KEY (writes open to anyone).")]
          = False,
          ) -> None:
    """Serve the HTTP API on this data directory (OpenAPI docs at /docs).

    The server owns the data directory while it runs: other commands that open the index
    send their work to it (<home>/server.json says where). Without SEMREC_API_KEY it
    listens on loopback only, unless --open-without-key."""
    import uvicorn

    from semrec.serving.api import ApiService, create_app
    from semrec.serving.remote import remove_server_file, write_server_file
    from semrec.serving.security import serve_host

    with _user_errors():
        settings = _settings(ctx)
        host, notice = serve_host(host, settings.api_key is not None, open_without_key)
        service = ApiService(settings)
    if notice:
        err.print(f"[bold yellow]{notice}[/]", highlight=False)
    if settings.api.encoder_threads:
        import torch

        torch.set_num_threads(settings.api.encoder_threads)
    if warm:
        service.warm()
    try:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        write_server_file(settings.home, url)
        err.print(f"serving {settings.home} on http://{host}:{port} "
                  f"(docs at http://{host}:{port}/docs)", highlight=False)
        # uvicorn re-raises SIGTERM after its graceful shutdown: exit, so `finally` runs.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        remove_server_file(settings.home)
        service.close()


@app.command()
def info(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Counts of products, users and events; the models and their versions."""
    with _user_errors(), Workspace(_settings(ctx), role="info", own_index=False) as sr:
        data = sr.info()
    if as_json:
        out.print_json(data=data)
        return
    table = Table(show_header=False, box=None)
    for key in ("home", "products", "users", "events", "features_cached", "store"):
        table.add_row(key, str(data[key]))
    model = data["model"]
    table.add_row("model", "none yet" if model is None else
                  f"{model['version']} ({model['kind']}, dim {model['dim']}, "
                  f"encoders {model['encoders']})")
    table.add_row("model versions", ", ".join(data["model_versions"]) or "none")
    out.print(table)


def _show(items: list[Recommendation], as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps([i.to_dict() for i in items], ensure_ascii=False) + "\n")
        return
    table = Table(title=title)
    columns = ["#", "product_id", "score", "title", "category", "price"]
    if any(i.because for i in items):
        columns.append("because")
    for column in columns:
        table.add_column(column)
    for rank, item in enumerate(items, 1):
        price: Any = item.payload.get("price", "")
        cells = [str(rank), item.product_id, f"{item.score:.3f}", item.title,
                 str(item.payload.get("category", "")), str(price)]
        table.add_row(*cells, *([item.because or ""] if len(columns) > len(cells) else []))
    out.print(table)


from semrec.serving.verify_cli import verify  # noqa: E402 - registered last, kept in its module

app.command()(verify)
