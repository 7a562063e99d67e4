"""The HTTP API (FastAPI): queries, ads, and live writes on the data directory it owns.

``semrec serve`` opens one ``ApiService`` (which takes the data directory's owner lock, as
Qdrant Edge allows one process per shard) and serves ``create_app(service)`` with uvicorn.
OpenAPI: ``/openapi.json``, interactive docs: ``/docs``.

Consistency: queries share a read-write lock over the open data directory and run in
parallel; a write (``POST /events``, ``PUT /items``, ``DELETE /items/...``) runs alone and is
visible to every query that starts after it returns.
Versions: each request first follows a promotion of ``models/CURRENT`` (``Semrec.refresh``),
so a re-index built beside the served one is picked up with no restart.
Errors are JSON ``{"detail": "..."}``: 401 missing or wrong API key, 404 unknown product or
empty catalog, 413 body over ``api.max_body_bytes``, 422 bad parameter or body, 500 without a
stack trace (the trace goes to the server log); no error body names a file-system path.
Security (``security.py``): with ``SEMREC_API_KEY`` set, every write needs the key, and
every read too when ``api.read_requires_key``.
Images in ``PUT /items`` are paths on the server, accepted only inside
``image.allowed_roots`` (checked again, symlinks resolved, when the file is read); a refused
or unreadable image leaves the product indexed from its text and is listed in
``image_errors``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from semrec.config import Settings
from semrec.index.base import Filters
from semrec.index.builder import IndexBuilder
from semrec.serving.context import EmptyIndex, Semrec
from semrec.serving.recommender import Feed, Recommender, UnknownProduct
from semrec.serving.schemas import (
    CampaignIn,
    DeletedOut,
    ErrorOut,
    EventsIn,
    EventsOut,
    FeedOut,
    ImageErrorOut,
    ItemOut,
    ItemsIn,
    ItemsOut,
    SimilarOut,
)
from semrec.serving.security import (
    BodyLimit,
    key_guard,
    key_holder,
    open_guard,
    public_info,
    scrub,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class UnknownItem(LookupError):
    """A product to delete is not in the catalog."""


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds new readers back. Queries run in
    parallel (Qdrant Edge and SQLite release the GIL), writes run alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def try_read(self) -> bool:
        """Take a shared hold without waiting: False while a write runs or waits."""
        with self._cond:
            if self._writer or self._waiting_writers:
                return False
            self._readers += 1
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._waiting_writers)
            self._readers += 1
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class QueryQueue:
    """Runs short synchronous jobs on the event loop one at a time, first come first
    served, and lets the loop read new requests between two jobs.

    Without it, every request that one poll of the sockets finds ready runs before the loop
    looks again, in the order the poll reports them; a request could wait almost two
    rounds of the others (at concurrency 8, p99 twice the median, measured). Here a request
    that arrives during a job queues behind those already waiting, so latency stays close
    to (requests ahead) x (service time).
    """

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = (
            collections.deque())
        self._worker: asyncio.Task[None] | None = None

    async def run(self, job: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._jobs:
            job, future = self._jobs.popleft()
            if not future.cancelled():  # the client went away while it waited
                try:
                    future.set_result(job())
                except Exception as exc:  # noqa: BLE001 - the request's handler raises it
                    future.set_exception(exc)
            await asyncio.sleep(0)  # one poll of the sockets between two jobs


class ApiService:
    """The data directory as the API sees it: one ``Semrec``, a read-write lock, one lazy
    builder (so the encoders load once per process)."""

    def __init__(self, settings: Settings) -> None:
        self.sr = Semrec(settings, role="serve")
        self.lock = ReadWriteLock()
        self.queue = QueryQueue()
        self._builder: IndexBuilder | None = None

    @contextmanager
    def session(self) -> Iterator[Semrec]:
        """Exclusive use of the data directory for one write, on the served version."""
        with self.lock.write():
            if self.sr.refresh():
                self._builder = None
            yield self.sr

    @contextmanager
    def reading(self) -> Iterator[Semrec]:
        """Shared use for one query; first follows a promoted version (under the write lock)."""
        if not self._serves_current():
            with self.session():
                pass
        with self.lock.read():
            yield self.sr

    def _serves_current(self) -> bool:
        """Whether the open store is the version ``models/CURRENT`` names (or none is open)."""
        opened = self.sr.store_version
        return opened is None or self.sr.models.current_version() == opened

    def recommender(self, sr: Semrec) -> Recommender:
        return sr.recommender()

    async def query(self, work: Callable[[Recommender], T]) -> T:
        """Run one query, in arrival order (``QueryQueue``), on the event loop itself when
        the lock is free and the served version current: a query is about a millisecond of
        CPU that holds the GIL (Qdrant Edge searches without releasing it), so a worker
        thread would add only the hop and GIL hand-offs. In a worker thread, waiting there,
        while a write runs or a promoted version must be opened first."""

        def now() -> tuple[bool, T | None]:
            if not (self._serves_current() and self.lock.try_read()):
                return False, None
            try:
                return True, work(self.recommender(self.sr))
            finally:
                self.lock.release_read()

        done, result = await self.queue.run(now)
        if done:
            return result  # type: ignore[return-value]
        return await run_in_threadpool(self._query_waiting, work)

    def _query_waiting(self, work: Callable[[Recommender], T]) -> T:
        with self.reading() as sr:
            return work(self.recommender(sr))

    def builder(self, sr: Semrec) -> IndexBuilder:
        if self._builder is None or self._builder.model_version != sr.store_version:
            from ingest import image_source

            image = sr.settings.image  # API clients may name files only inside allowed_roots
            self._builder = sr.builder(image_source(image.max_pixels, image.allowed_roots))
        return self._builder

    def warm(self) -> threading.Thread:
        """Load the text encoder in the background (queries are served meanwhile)."""
        thread = threading.Thread(target=self.sr.text_encoder, name="semrec-warm", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with self.lock.write():
            self.sr.close()


# -- query parameters --------------------------------------------------------------------
K = Annotated[int, Query(ge=1, le=1000, description="How many results.")]
Diversity = Annotated[float, Query(ge=0.0, le=1.0, description=(
    "MMR re-ranking: 0 = pure relevance, 1 = most diverse."))]


async def query_filters(
    category: Annotated[str | None, Query(description="Only this category.")] = None,
    min_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    max_price: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    in_stock: Annotated[bool | None, Query(description="true: in stock only.")] = None,
    exclude: Annotated[list[str], Query(description=(
        "Product IDs never to return (repeat the parameter, or separate with commas)."))] = [],  # noqa: B006
) -> Filters:
    """The business-rule filters shared by ``similar`` and ``feed``."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValueError(f"min_price ({min_price}) is above max_price ({max_price})")
    ids = frozenset(p.strip() for value in exclude for p in value.split(",") if p.strip())
    return Filters(category=category, min_price=min_price, max_price=max_price,
                   in_stock=in_stock, exclude=ids)


FiltersDep = Annotated[Filters, Depends(query_filters)]
ProductId = Annotated[str, Path(min_length=1, max_length=200)]
UserId = Annotated[str, Path(min_length=1, max_length=200)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut},
    422: {"model": ErrorOut}}


def create_app(service: ApiService) -> FastAPI:
    """The FastAPI application serving ``service`` (which the caller opens and closes)."""
    app = FastAPI(title="semrec", version="0.1.0", description=(
        "Multimodal semantic product recommendations: similar items, personalised feeds, "
        "ads, and live catalog and event updates."))
    app.state.service = service
    _error_handlers(app)
    settings = service.sr.settings
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    writer = [Depends(key_guard(key))]
    reader = [Depends(key_guard(key) if settings.api.read_requires_key else open_guard)]
    known_events = settings.user.known_events

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", tags=["service"], dependencies=reader, responses=ERRORS)
    def info(holds_key: bool = Depends(key_holder(key))) -> dict[str, Any]:
        """Counts, the served model version and the store (the data directory's path and
        the store's location only for a caller with the API key)."""
        with service.reading() as sr:
            data = sr.info()
            data["served_version"] = sr.models.current_version()
            return data if holds_key else public_info(data)

    @app.get("/items/{product_id}/similar", response_model=SimilarOut, responses=ERRORS,
             tags=["recommendations"], dependencies=reader)
    async def similar(product_id: ProductId, filters: FiltersDep, k: K = 10,
                      diversity: Diversity = 0.0) -> SimilarOut:
        """Products most similar to ``product_id`` (never itself), filtered and diversified."""
        items = await service.query(lambda rec: rec.similar(product_id, k, filters, diversity))
        return SimilarOut(product_id=product_id, items=[ItemOut.of(i) for i in items])

    @app.get("/users/{user_id}/feed", response_model=FeedOut, responses=ERRORS,
             tags=["recommendations"], dependencies=reader)
    async def feed(user_id: UserId, filters: FiltersDep, k: K = 10,
                   diversity: Diversity = 0.0) -> FeedOut:
        """A personalised feed (never what the user bought), each item with ``because``;
        popular products for a user without history."""
        result = await service.query(lambda rec: _require_catalog(
            rec, rec.feed(user_id, k, filters, diversity)))
        return FeedOut.of(result)

    @app.post("/users/{user_id}/ads", response_model=FeedOut, responses=ERRORS,
              tags=["recommendations"], dependencies=reader)
    async def ads(user_id: UserId, campaign: CampaignIn) -> FeedOut:
        """The campaign's products ranked for this user, diversified across the slots:
        never out of stock, never already bought; the most popular for a new user."""
        result = await service.query(lambda rec: _require_catalog(
            rec, rec.ads(user_id, campaign.to_campaign())))
        return FeedOut.of(result)

    @app.post("/events", response_model=EventsOut, responses=ERRORS, tags=["writes"],
              dependencies=writer)
    def events(body: EventsIn) -> EventsOut:
        """Record interactions; the users' next feeds reflect them at once. Unknown users
        are new users; unknown products are kept and listed in ``unknown_products``; an event
        type the configuration does not weigh is a 422."""
        body.check_types(known_events)
        batch = body.to_events()
        with service.session() as sr:
            unknown = sorted({e.product_id for e in batch}
                             - sr.products.known(e.product_id for e in batch))
            report = sr.events.add(batch)
        return EventsOut(inserted=report.inserted, duplicates=report.duplicates,
                         unknown_products=unknown)

    @app.put("/items", response_model=ItemsOut, responses=ERRORS, tags=["writes"],
             dependencies=writer)
    def put_items(body: ItemsIn) -> ItemsOut:
        """Insert or update products; searchable as soon as the call returns. An ``image``
        is a path on the server inside ``image.allowed_roots``; one that is refused or
        unreadable is listed in ``image_errors`` and its product indexed from its text."""
        if not settings.image.allowed_roots and any(p.image for p in body.items):
            raise ValueError("images are not accepted over the API unless the server "
                             "configures image.allowed_roots; ingest them with "
                             "`semrec ingest CATALOG`")
        products = [p.to_product() for p in body.items]
        with service.session() as sr:
            builder = service.builder(sr)
            report = builder.ingest(products)
            return ItemsOut(added=report.added, updated=report.updated,
                            unchanged=report.unchanged, products=sr.products.count(),
                            model_version=builder.model_version,
                            image_errors=[ImageErrorOut(product_id=pid, reason=scrub(reason))
                                          for pid, reason in report.image_errors])

    @app.delete("/items/{product_id}", response_model=DeletedOut, responses=ERRORS,
                tags=["writes"], dependencies=writer)
    def delete_item(product_id: ProductId) -> DeletedOut:
        """Remove a product: gone from every result when the call returns."""
        with service.session() as sr:
            if not sr.products.known([product_id]):
                raise UnknownItem(f"unknown product ID {product_id!r}: not in the catalog")
            sr.delete_products([product_id])
        return DeletedOut(deleted=product_id)

    from semrec.serving.storefront import install  # it imports this module's parameters
    install(app, service)
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
    @app.exception_handler(UnknownItem)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(EmptyIndex)
    async def empty(request: Request, exc: Exception) -> JSONResponse:
        return error(404, "no products indexed yet: PUT /items or `semrec ingest CATALOG`")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return error(422, str(exc))

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
        return error(500, f"internal error ({type(exc).__name__}); see the server log")
