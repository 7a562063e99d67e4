"""The API's service: the data directory it owns (a ``Workspace``), the version it serves,
and the one ``Scheduler`` every request goes through.

Consistency and versions: jobs run in arrival order, so a query sees every write that
returned before it arrived. Before each job the service follows a promotion of
``models/CURRENT`` (``semrec train`` builds the new version beside the served one): it
opens the new version, catches it up with what was written meanwhile
(``semrec.index.catch_up``), and only then answers from it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from semrec.config import Settings
from semrec.index import catch_up
from semrec.serving.recommender import Recommender, open_recommender
from semrec.workspace import EmptyIndex, Workspace

T = TypeVar("T")


class Scheduler:
    """Runs the API's jobs one at a time, first come first served, and lets the event loop
    read new requests between two jobs.

    A query runs on the event loop itself: it is about a millisecond of CPU, and Qdrant
    Edge holds the GIL while it searches, so a worker thread would add only the hop and
    GIL hand-offs (measured: docs/benchmarks.md). A write (an ingest, events, a delete,
    following a promoted version) runs in a worker thread, so the loop goes on accepting
    connections; the jobs queued behind it wait for it. Without the queue, every request
    that one poll of the sockets finds ready would run before the loop looks again, in the
    poll's order, and a request could wait almost two rounds of the others (at concurrency
    8, p99 twice the median, measured); here latency stays close to (jobs ahead) x (their
    service time).
    """

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Callable[[], Any], bool, asyncio.Future[Any]]] = (
            collections.deque())
        self._worker: asyncio.Task[None] | None = None

    async def query(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the event loop, in its turn."""
        return await self._submit(job, in_thread=False)

    async def write(self, job: Callable[[], T]) -> T:
        """Run ``job`` in a worker thread, in its turn, with nothing else running."""
        return await self._submit(job, in_thread=True)

    async def _submit(self, job: Callable[[], T], in_thread: bool) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, in_thread, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._jobs:
            job, in_thread, future = self._jobs.popleft()
            if future.cancelled():  # the client went away while it waited
                continue
            try:
                result = await asyncio.to_thread(job) if in_thread else job()
            except Exception as exc:  # noqa: BLE001 - the request's handler raises it
                if not future.cancelled():
                    future.set_exception(exc)
            else:
                if not future.cancelled():
                    future.set_result(result)
            await asyncio.sleep(0)  # one poll of the sockets between two jobs


class ApiService:
    """The data directory as the API sees it: a ``Workspace`` that owns the index, the
    version being served and its recommender, and the scheduler every request goes
    through."""

    def __init__(self, settings: Settings) -> None:
        self.ws = Workspace(settings, role="serve")
        self.scheduler = Scheduler()
        self.version: str | None = None
        self._recommender: Recommender | None = None

    def _behind(self) -> bool:
        return self.ws.models.current_version() != self.version

    def follow(self) -> None:
        """Serve the version ``models/CURRENT`` names, caught up with the catalog, and
        close the one served before. A no-op when it is already served."""
        current = self.ws.models.current_version()
        if current == self.version:
            return
        if current is not None:
            catch_up(self.ws, current)
            self._recommender = open_recommender(self.ws, current)
        old, self.version = self.version, current
        if old is not None and old != current:
            self.ws.close_store(old)

    def recommender(self) -> Recommender:
        if self._recommender is None:
            raise EmptyIndex()
        return self._recommender

    async def served(self) -> str:
        """The served version, once followed (``EmptyIndex`` when there is none)."""
        if self._behind():
            await self.scheduler.write(self.follow)
        if self.version is None:
            raise EmptyIndex()
        return self.version

    async def read(self, work: Callable[[], T]) -> T:
        """Run one read, in arrival order, once the served version is followed."""
        if self._behind():
            await self.scheduler.write(self.follow)
        return await self.scheduler.query(work)

    async def query(self, work: Callable[[Recommender], T]) -> T:
        """Run one query on the served version's recommender."""
        return await self.read(lambda: work(self.recommender()))

    async def write(self, work: Callable[[Workspace], T]) -> T:
        """Run one write on the data directory (the served version followed first), alone."""
        def job() -> T:
            self.follow()
            result = work(self.ws)
            self.follow()  # the first write on an empty data directory creates a version
            return result

        return await self.scheduler.write(job)

    def warm(self) -> threading.Thread:
        """Load the text encoder in the background (queries are served meanwhile)."""
        thread = threading.Thread(target=self.ws.encoders.text, name="semrec-warm",
                                  daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.ws.close()
