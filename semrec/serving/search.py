"""Free-text queries: a sentence to a vector in the served version's item space.

A query is embedded the way a product's text is: the configured text encoder, then the
served version's item tower with the text term alone (``ItemTower.embed(text)``: no image
term, no ID embedding). For an untrained version the text head is an isometry of the
encoder's space, so this is the encoder's own similarity; for a trained one it is the
trained text head, the same map the products' text went through.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import numpy as np

from semrec.errors import InvalidInput
from semrec.workspace import Workspace


def check_query(text: str, max_chars: int, name: str = "q") -> str:
    """``text`` stripped; ``InvalidInput`` naming the parameter ``name`` (a 422 in the API)
    if it is empty or too long."""
    query = text.strip()
    if not query:
        raise InvalidInput(f"{name}: the query is empty; type a few words that describe a "
                         "product")
    if len(query) > max_chars:
        raise InvalidInput(f"{name}: the query has {len(query)} characters, more than the "
                         f"{max_chars} allowed ([search] max_query_chars)")
    return query


def query_vectors(ws: Workspace, version: str, texts: list[str]) -> np.ndarray:
    """The unit vectors of ``texts`` under ``version`` (built on the configured text
    encoder: ``ModelMismatch`` otherwise, as the queries would land in another space), in one
    call of the encoder."""
    ws.check_text_encoder(version)
    features = ws.encoders.text().encode_text(texts)
    return ws.items(version).tower.embed(features)


def query_vector(ws: Workspace, version: str, text: str) -> np.ndarray:
    """``query_vectors`` of one text."""
    return query_vectors(ws, version, [text])[0]


class QueryVectors:
    """Query vectors for the API: a bounded LRU cache per (version, query) (a storefront
    sends the same query again whenever a filter or the page changes, and shoppers' queries
    repeat), and dynamic batching of the rest: the queries that arrive while the encoder is
    busy are encoded together in its next call, in a worker thread, so concurrent searches
    share one encoder pass instead of queueing one pass each."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._waiting: dict[tuple[str, str], list[asyncio.Future[np.ndarray]]] = {}
        self._encoding: asyncio.Task[None] | None = None
        self.passes = 0  # encoder calls so far (each encodes every query waiting for it)

    async def get(self, ws: Workspace, version: str, text: str) -> np.ndarray:
        key = (version, text)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._encoding is None or self._encoding.done():
            self._encoding = asyncio.create_task(self._encode(ws))
        return await future

    async def _encode(self, ws: Workspace) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            for version in {v for v, _ in batch}:
                keys = [k for k in batch if k[0] == version]
                self.passes += 1
                try:
                    vectors = await asyncio.to_thread(
                        query_vectors, ws, version, [text for _, text in keys])
                except Exception as exc:  # noqa: BLE001 - each waiting request raises it
                    for key in keys:
                        for future in batch[key]:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, vector in zip(keys, vectors, strict=True):
                    self._keep(key, vector)
                    for future in batch[key]:
                        if not future.done():
                            future.set_result(vector)

    def _keep(self, key: tuple[str, str], vector: np.ndarray) -> None:
        self._cache[key] = vector
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
