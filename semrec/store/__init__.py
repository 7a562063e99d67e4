"""Vector stores behind one small interface; ``open_store`` picks one by URL scheme.

- ``""`` or ``edge:///path``: embedded Qdrant Edge under the data directory (the default);
- ``http://host:6333`` / ``https://...``: a Qdrant server or cluster (qdrant-client);
- ``:memory:``: qdrant-client's in-process mode (tests of the server code path).

On a cluster, ``?shards=N&replicas=R`` in the URL sets how new collections are spread
(``http://qdrant-1:6333?shards=3&replicas=2``). Each model version gets its own collection
``semrec-<version>``; the alias ``semrec`` names the served one (see ``activate``).

Scaling out changes the URL, nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from semrec.store.base import (
    MODALITIES,
    Filters,
    Hit,
    NoModalityVectors,
    StoredItem,
    VectorStore,
    point_id,
    read_vectors,
)

__all__ = ["MODALITIES", "SERVED_ALIAS", "Filters", "Hit", "NoModalityVectors", "StoredItem",
           "VectorStore", "open_store", "point_id", "read_vectors"]


def _edge(url: str, index_root: Path, name: str, dim: int) -> VectorStore:
    from semrec.store.edge import EdgeStore

    root = Path(urlparse(url).path) if url else index_root
    return EdgeStore.open(root / name, dim)


#: The stable alias of the served collection on a Qdrant server.
SERVED_ALIAS = "semrec"


def _server(url: str, index_root: Path, name: str, dim: int) -> VectorStore:
    from semrec.store.server import QdrantServerStore

    parts = urlparse(url)
    query = parse_qs(parts.query)
    unknown = set(query) - {"shards", "replicas"}
    if unknown:
        raise ValueError(f"store URL {url!r}: unknown option(s) {sorted(unknown)}; "
                         "only shards and replicas are understood")
    try:
        shards, replicas = (int(query[key][-1]) if key in query else None
                            for key in ("shards", "replicas"))
    except ValueError:
        raise ValueError(f"store URL {url!r}: shards and replicas must be integers") from None
    base = url if url == ":memory:" else parts._replace(query="").geturl()
    return QdrantServerStore.open(base, f"semrec-{name}", dim,
                                  api_key=os.environ.get("QDRANT_API_KEY"),
                                  alias=SERVED_ALIAS, shards=shards, replicas=replicas)


BACKENDS: dict[str, Callable[[str, Path, str, int], VectorStore]] = {
    "": _edge, "edge": _edge, "http": _server, "https": _server, "memory": _server,
}


def open_store(url: str, index_root: Path, name: str, dim: int) -> VectorStore:
    """Open collection ``name`` (``dim``-wide, cosine) on the store ``url`` names."""
    scheme = "memory" if url == ":memory:" else urlparse(url).scheme
    if scheme not in BACKENDS:
        raise ValueError(f"unknown store URL {url!r}: use '', edge:///path, http(s)://host:port "
                         "or :memory:")
    return BACKENDS[scheme](url, index_root, name, dim)
