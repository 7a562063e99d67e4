"""The HTTP API (FastAPI): queries, ads, and live writes on the data directory it owns.

``semrec serve`` opens one ``ApiService`` (a ``Workspace`` that takes the data directory's
owner lock, as Qdrant Edge allows one process per shard) and serves ``create_app(service)``
with uvicorn. The routes live on this module's ``router`` and the storefront's (``storefront.py``);
every request is a job of the service's one ``Scheduler`` (``service.py``). OpenAPI:
``/openapi.json``, interactive docs: ``/docs``.
Errors are JSON ``{"detail": "..."}``: 401 missing or wrong API key, 404 unknown product or
empty catalog, 413 body over ``api.max_body_bytes``, 422 a bad parameter or body, 500 a
server bug (generic message; the trace goes to the server log); no error body names a
file-system path.
Security (``security.py``): with ``SEMREC_API_KEY`` set, every write needs the key, and
every read too when ``api.read_requires_key``.
Images in ``PUT /items`` are paths on the server, accepted only inside
``image.allowed_roots`` (checked again, symlinks resolved, when the file is read); a refused
or unreadable image leaves the product indexed from its text and is listed in
``image_errors``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from semrec.errors import InvalidInput, UserError
from semrec.index import delete, ingest
from semrec.serving import storefront
from semrec.serving.params import (
    ERRORS,
    READ,
    WRITE,
    Diversity,
    FiltersDep,
    K,
    ProductId,
    Service,
    SimilarBy,
    UserId,
)
from semrec.serving.recommender import Feed, NoSuchModality, Recommender, UnknownProduct
from semrec.serving.schemas import (
    ITEMS_SHAPE,
    CampaignIn,
    DeletedOut,
    EventsIn,
    EventsOut,
    FeedOut,
    ImageErrorOut,
    ItemOut,
    ItemsOut,
    SimilarOut,
    catalog_records,
)
from semrec.serving.security import BodyLimit, KeyHolder, public_info, scrub
from semrec.serving.service import ApiService, Scheduler
from semrec.store import NoModalityVectors
from semrec.workspace import EmptyIndex, ModelMismatch, Workspace

__all__ = ["ApiService", "Scheduler", "create_app", "router"]
log = logging.getLogger(__name__)


class UnknownItem(UserError, LookupError):
    """A product to delete is not in the catalog."""


router = APIRouter(responses=ERRORS)


@router.get("/health", tags=["service"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/info", tags=["service"], dependencies=READ)
async def info(service: Service, holds_key: KeyHolder) -> dict[str, Any]:
    """Counts, the served model version and the store (the data directory's path and the
    store's location only for a caller with the API key)."""
    data = await service.read(lambda: {**service.ws.info(), "served_version": service.version})
    return data if holds_key else public_info(data)


@router.get("/items/{product_id}/similar", response_model=SimilarOut,
            tags=["recommendations"], dependencies=READ)
async def similar(service: Service, product_id: ProductId, filters: FiltersDep, k: K = 10,
                  diversity: Diversity = 0.0, by: SimilarBy = "both") -> SimilarOut:
    """Products most similar to ``product_id`` (never itself), filtered and diversified;
    ``by=image`` finds those that look like it (404 for a product without an image)."""
    items = await service.query(lambda rec: rec.similar(product_id, k, filters, diversity, by))
    return SimilarOut(product_id=product_id, items=[ItemOut.of(i) for i in items])


@router.get("/users/{user_id}/feed", response_model=FeedOut, tags=["recommendations"],
            dependencies=READ)
async def feed(service: Service, user_id: UserId, filters: FiltersDep, k: K = 10,
               diversity: Diversity = 0.0) -> FeedOut:
    """A personalised feed (never what the user bought), each item with ``because``;
    popular products for a user without history."""
    result = await service.query(lambda rec: _require_catalog(
        rec, rec.feed(user_id, k, filters, diversity)))
    return FeedOut.of(result)


@router.post("/users/{user_id}/ads", response_model=FeedOut, tags=["recommendations"],
             dependencies=READ)
async def ads(service: Service, user_id: UserId, campaign: CampaignIn) -> FeedOut:
    """The campaign's products ranked for this user, diversified across the slots: never
    out of stock, never already bought; the most popular for a new user."""
    wanted = campaign.to_campaign()
    result = await service.query(lambda rec: _require_catalog(rec, rec.ads(user_id, wanted)))
    return FeedOut.of(result)


@router.post("/events", response_model=EventsOut, tags=["writes"], dependencies=WRITE)
async def events(service: Service, body: EventsIn) -> EventsOut:
    """Record interactions; the users' next feeds reflect them at once. Unknown users are
    new users; unknown products are kept and listed in ``unknown_products``; an event type
    the configuration does not weigh is a 422."""
    body.check_types(service.ws.settings.user.known_events)
    batch = body.to_events()

    def work(ws: Workspace) -> EventsOut:
        unknown = sorted({e.product_id for e in batch}
                         - ws.products.known(e.product_id for e in batch))
        report = ws.events.add(batch)
        return EventsOut(inserted=report.inserted, duplicates=report.duplicates,
                         unknown_products=unknown)

    return await service.write(work)


@router.put("/items", response_model=ItemsOut, tags=["writes"], dependencies=WRITE)
async def put_items(service: Service, body: Annotated[Any, Body(description=(
        f"{ITEMS_SHAPE[0].upper()}{ITEMS_SHAPE[1:]}. Fields as in a catalog file: "
        "product_id and title required; description, category, brand, price, in_stock, "
        "image optional (a bad one is left out and listed in fields_left_out); an image "
        "is a path on the server inside image.allowed_roots."),
        examples=[{"product_id": "SKU-1", "title": "Red summer dress", "price": 39.9,
                   "category": "dresses", "colour": "red"}])]) -> ItemsOut:
    """Insert or update products; searchable as soon as the call returns. The body is
    validated exactly as a JSONL catalog line is: a bad product_id or title, or a
    product_id given twice, is a 422; any other bad field costs that field alone. An image
    that is refused or unreadable is listed in ``image_errors`` and its product indexed
    from its text."""
    from ingest import image_source, read_products

    image = service.ws.settings.image
    read = read_products(catalog_records(body), "items", Path("/"), image.allowed_roots,
                         allow_urls=image.allow_urls, unit="item")
    if read.errors:
        raise InvalidInput("; ".join(str(e) for e in read.errors[:20]))
    refused = [(w.product_id or "", w.reason) for w in read.warnings if w.field == "image"]
    left_out = [scrub(str(w)) for w in read.warnings if w.field != "image"]
    images = image_source(image.max_pixels, image.allowed_roots, allow_urls=image.allow_urls,
                          url_timeout_s=image.url_timeout_s,
                          max_download_bytes=image.max_download_bytes)

    def work(ws: Workspace) -> ItemsOut:
        report = ingest(ws, read.items, images)
        return ItemsOut(added=report.added, updated=report.updated, unchanged=report.unchanged,
                        products=ws.products.count(), model_version=report.model_version,
                        image_errors=[ImageErrorOut(product_id=pid, reason=scrub(reason))
                                      for pid, reason in refused + report.image_errors],
                        fields_left_out=left_out)

    return await service.write(work)


@router.delete("/items/{product_id}", response_model=DeletedOut, tags=["writes"],
               dependencies=WRITE)
async def delete_item(service: Service, product_id: ProductId) -> DeletedOut:
    """Remove a product: gone from every result when the call returns."""
    def work(ws: Workspace) -> DeletedOut:
        if not ws.products.known([product_id]):
            raise UnknownItem(f"unknown product ID {product_id!r}: not in the catalog")
        delete(ws, [product_id])
        return DeletedOut(deleted=product_id)

    return await service.write(work)


def create_app(service: ApiService) -> FastAPI:
    """The FastAPI application serving ``service`` (which the caller opens and closes)."""
    app = FastAPI(title="semrec", version="0.1.0", description=(
        "Multimodal semantic product recommendations: similar items, personalised feeds, "
        "ads, and live catalog and event updates."))
    settings = service.ws.settings
    app.state.service = service
    app.state.api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.state.read_requires_key = settings.api.read_requires_key
    _error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.include_router(router)
    storefront.install(app, service)
    return app


def _require_catalog(rec: Recommender, feed: Feed) -> Feed:
    """An empty result from an empty catalog is a 404, not an empty list."""
    if not feed.items and rec.products.count() == 0:
        raise EmptyIndex()
    return feed


def _error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": scrub(message)}, status_code=status)

    @app.exception_handler(UnknownProduct)
    @app.exception_handler(NoSuchModality)
    @app.exception_handler(UnknownItem)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(EmptyIndex)
    async def empty(request: Request, exc: Exception) -> JSONResponse:
        return error(404, "no products indexed yet: PUT /items or `semrec ingest CATALOG`")

    @app.exception_handler(InvalidInput)
    async def bad_value(request: Request, exc: InvalidInput) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(NoModalityVectors)
    @app.exception_handler(ModelMismatch)
    async def mismatch(request: Request, exc: ModelMismatch) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(part) for part in e.get("loc", ()) if part != "body")
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, "internal error; see the server log")
