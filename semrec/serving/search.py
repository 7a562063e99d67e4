"""Free-text queries: a sentence to a vector in the served version's item space.

A query is embedded the way a product's text is: the configured text encoder, then the
served version's item tower with the text term alone (``ItemTower.embed(text)``: no image
term, no ID embedding). For an untrained version the text head is an isometry of the
encoder's space, so this is the encoder's own similarity; for a trained one it is the
trained text head, the same map the products' text went through.
"""

from __future__ import annotations

import threading
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


def query_vector(ws: Workspace, version: str, text: str) -> np.ndarray:
    """The unit vector of ``text`` under ``version`` (built on the configured text encoder:
    ``ModelMismatch`` otherwise, as the query would land in another space)."""
    ws.check_text_encoder(version)
    features = ws.encoders.text().encode_text([text])
    return ws.items(version).tower.embed(features)[0]


class QueryVectors:
    """``query_vector`` with a bounded LRU cache per (version, query): a storefront sends
    the same query again whenever a filter or the page changes, and shoppers' queries
    repeat. Thread-safe; a new served version simply misses."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ws: Workspace, version: str, text: str) -> np.ndarray:
        key = (version, text)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        vector = query_vector(ws, version, text)
        with self._lock:
            self._cache[key] = vector
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return vector
