"""The storefront: the routes a shop page needs beside the recommendation API, and the
page itself (static files shipped in ``semrec/serving/static/``, served at ``/``).

Routes: ``GET /search`` (free-text semantic search), ``GET /items/{id}`` (one product),
``GET /items/{id}/image`` (its image, see ``serving.images``), ``GET /users/{id}/history``
(recent events), ``GET /popular``, ``GET /categories``, ``GET /report`` and
``GET /report/recall.png`` (the latest ``semrec evaluate --report``, read from
``[api] report_dir``, default ``<home>/reports/latest``). The page learns from a meta tag
whether reads need the key, so it asks for it before anything fails. Every read follows the
same key rule as the rest of the API. No response names a file on the server: products
carry ``image_url``, and the report's text is scrubbed of paths for callers without the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from semrec.config import Settings
from semrec.serving.images import ImageFetchFailed, NoImage, ProductImages
from semrec.serving.params import (
    ERRORS,
    READ,
    Diversity,
    FiltersDep,
    K,
    ProductId,
    Service,
    UserId,
)
from semrec.serving.recommender import Recommender, UnknownProduct
from semrec.serving.schemas import ItemOut, public_fields
from semrec.serving.search import QueryVectors, check_query
from semrec.serving.security import KeyHolder, scrub
from semrec.serving.service import ApiService
from semrec.state import ProductRow

STATIC = Path(__file__).resolve().parent / "static"
#: How long a browser may reuse an image without asking again (then it revalidates by ETag).
IMAGE_MAX_AGE_S = 300


class NoReport(LookupError):
    """No evaluation report (or plot) in the report folder."""


class SearchOut(BaseModel):
    query: str
    user_id: str | None
    personalised: bool = Field(description="True: re-ranked with the user's history.")
    items: list[ItemOut]


class ProductOut(BaseModel):
    """A product's catalog fields (``attributes`` included) and its ``image_url``."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    title: str
    image_url: str | None


class HistoryEventOut(BaseModel):
    """One event, with the product's fields when it is still in the catalog."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    event: str
    timestamp: float
    known: bool = Field(description="False: the product is not (or no longer) in the catalog.")
    image_url: str | None = None


class HistoryOut(BaseModel):
    user_id: str
    items: list[HistoryEventOut] = Field(description="Newest first.")


class PopularOut(BaseModel):
    items: list[ItemOut]


class CategoryOut(BaseModel):
    name: str
    products: int


class CategoriesOut(BaseModel):
    categories: list[CategoryOut]


class ReportOut(BaseModel):
    available: bool = Field(description="False: no report yet (``how`` says how to make one).")
    markdown: str | None = None
    plot_url: str | None = None
    modified: float | None = Field(None, description="When it was written (epoch seconds).")
    how: str | None = None


class Storefront:
    """What the storefront's routes share in one app (``app.state.storefront``): the
    verified-image cache, the query-vector cache, the report folder and the page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.needs_key = settings.api_key is not None and settings.api.read_requires_key
        self.images = ProductImages(settings.image)
        self.vectors = QueryVectors()
        self.report_dir = settings.api.report_dir or settings.home / "reports" / "latest"
        self.page = (STATIC / "index.html").read_text(encoding="utf-8").replace(
            "{{READS_NEED_KEY}}", "true" if self.needs_key else "false")  # asks before a 401


def install(app: FastAPI, service: ApiService) -> None:
    """Add the storefront's routes, its page at ``/`` and its files at ``/static``."""
    app.state.storefront = Storefront(service.ws.settings)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(NoImage)
    @app.exception_handler(NoReport)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc))}, status_code=404)

    @app.exception_handler(ImageFetchFailed)
    async def fetch_failed(request: Request, exc: ImageFetchFailed) -> JSONResponse:
        return JSONResponse({"detail": scrub(str(exc))}, status_code=502)


def _front(request: Request) -> Storefront:
    return request.app.state.storefront  # type: ignore[no-any-return]


router = APIRouter(responses=ERRORS)


@router.get("/", include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(_front(request).page, headers={"Cache-Control": "no-cache"})


@router.get("/search", tags=["recommendations"], dependencies=READ)
async def search(
    request: Request, service: Service,
    q: Annotated[str, Query(max_length=10_000, description=(
        "Free text describing what to find (at most [search] max_query_chars)."))],
    filters: FiltersDep, k: K = 10, diversity: Diversity = 0.0,
    user_id: Annotated[str | None, Query(min_length=1, max_length=200, description=(
        "Personalise: re-rank the query's best matches with this user's history."))] = None,
) -> SearchOut:
    """Products ranked for a free-text query through the served version's text side
    (text encoder, then the item tower's text head), filtered and diversified; with
    ``user_id``, re-ranked by ``q.x + [search] user_weight * u.x``. The query is encoded
    in a worker thread, batched with the queries that arrive meanwhile (``QueryVectors``:
    the encoder is the slow part), then the search runs in its turn."""
    front = _front(request)
    settings = front.settings
    query = check_query(q, settings.search.max_query_chars)
    version = await service.served()
    vector = await front.vectors.get(service.ws, version, query)
    if service.version != version:  # a switch in between: the vector of the new version
        version = await service.served()
        vector = await front.vectors.get(service.ws, version, query)

    def work(rec: Recommender) -> SearchOut:
        result = rec.search(query, vector, k, filters, diversity, user_id,
                            settings.search.user_weight)
        return SearchOut(query=result.query, user_id=result.user_id,
                         personalised=result.personalised,
                         items=[ItemOut.of(i) for i in result.items])

    return await service.query(work)


@router.get("/popular", tags=["recommendations"], dependencies=READ)
async def popular(service: Service, filters: FiltersDep, k: K = 10) -> PopularOut:
    """The most-interacted products passing the filters."""
    items = await service.query(lambda rec: rec.popular(k, filters))
    return PopularOut(items=[ItemOut.of(i) for i in items])


@router.get("/items/{product_id}", tags=["storefront"], dependencies=READ)
async def product(service: Service, product_id: ProductId) -> ProductOut:
    """One product's catalog fields and ``image_url``."""
    row = await _row(service, product_id)
    return ProductOut(**public_fields(product_id, row.payload))


@router.get("/items/{product_id}/image", tags=["storefront"], dependencies=READ,
            response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}},
                       304: {"description": "Not modified (If-None-Match)."},
                       502: {"description": "The image URL could not be fetched."}})
async def product_image(request: Request, service: Service,
                        product_id: ProductId) -> Response:
    """The image the product was indexed from (a file or, with ``image.allow_urls``, a
    URL): 404 if it has none, or if the bytes are no longer those indexed."""
    front = _front(request)
    row = await _row(service, product_id)
    image = await run_in_threadpool(front.images.get, row)  # a file read or a download
    etag = f'"{image.etag}"'
    headers = {"ETag": etag, "Cache-Control":
               f"{'private' if front.needs_key else 'public'}, max-age={IMAGE_MAX_AGE_S}"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(image.data, media_type=image.media_type, headers=headers)


@router.get("/users/{user_id}/history", tags=["storefront"], dependencies=READ)
async def history(service: Service, user_id: UserId, limit: Annotated[int, Query(
        ge=1, le=1000, description="How many of the newest events.")] = 20) -> HistoryOut:
    """The user's newest events, newest first, each with its product's fields."""
    def work() -> HistoryOut:
        events = service.ws.events.history(user_id, limit=limit)
        rows = service.ws.products.get_many(pid for pid, _, _ in events)
        items = []
        for pid, ts, event in reversed(events):
            fields = public_fields(pid, rows[pid].payload) if pid in rows else {}
            items.append(HistoryEventOut(**{**fields, "product_id": pid, "event": event,
                                            "timestamp": ts, "known": pid in rows}))
        return HistoryOut(user_id=user_id, items=items)

    return await service.read(work)


@router.get("/categories", tags=["storefront"], dependencies=READ)
async def categories(service: Service) -> CategoriesOut:
    """Every category with its product count (for a filter menu)."""
    pairs = await service.read(service.ws.products.categories)
    return CategoriesOut(categories=[CategoryOut(name=n, products=c) for n, c in pairs])


@router.get("/report", tags=["storefront"], dependencies=READ)
def report(request: Request, holds_key: KeyHolder) -> ReportOut:
    """The latest evaluation report (``report.md``) written by ``semrec evaluate
    --report`` into ``[api] report_dir`` (default ``<home>/reports/latest``); without
    one, ``available`` is false (not a 404: having no report yet is no error)."""
    folder = _front(request).report_dir
    md = folder / "report.md"
    try:
        text, modified = md.read_text(encoding="utf-8"), md.stat().st_mtime
    except (OSError, UnicodeDecodeError):
        return ReportOut(available=False, how=(
            "No evaluation report yet: run `semrec --home HOME evaluate --catalog ... "
            "--events ... --report HOME/reports/latest` (or set [api] report_dir)."))
    plot = "/report/recall.png" if (folder / "recall.png").is_file() else None
    return ReportOut(available=True, markdown=text if holds_key else scrub(text),
                     plot_url=plot, modified=modified)


@router.get("/report/recall.png", tags=["storefront"], dependencies=READ,
            response_class=FileResponse)
def report_plot(request: Request) -> FileResponse:
    """The latest report's recall plot."""
    plot = _front(request).report_dir / "recall.png"
    if not plot.is_file():
        raise NoReport("the latest evaluation report has no plot")
    return FileResponse(plot, media_type="image/png", headers={"Cache-Control": "no-cache"})


async def _row(service: ApiService, product_id: str) -> ProductRow:
    row = await service.read(lambda: service.ws.products.get(product_id))
    if row is None:
        raise UnknownProduct(product_id)
    return row


def _matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong) or is ``*``."""
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags
