"""Vector stores behind one small interface; ``open_store`` picks one by URL scheme.

- ``""`` or ``edge:///path``: embedded Qdrant Edge under the data directory (the default);
- ``http://host:6333`` / ``https://...``: a Qdrant server or cluster (qdrant-client);
- ``:memory:``: qdrant-client's in-process mode (tests of the server code path).

Scaling out changes the URL, nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from semrec.index.base import Filters, Hit, StoredItem, VectorStore, point_id

__all__ = ["Filters", "Hit", "StoredItem", "VectorStore", "open_store", "point_id"]


def _edge(url: str, index_root: Path, name: str, dim: int) -> VectorStore:
    from semrec.index.edge import EdgeStore

    root = Path(urlparse(url).path) if url else index_root
    return EdgeStore.open(root / name, dim)


def _server(url: str, index_root: Path, name: str, dim: int) -> VectorStore:
    from semrec.index.server import QdrantServerStore

    return QdrantServerStore.open(url, f"semrec-{name}", dim,
                                  api_key=os.environ.get("QDRANT_API_KEY"))


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
