"""Sending CLI work to the ``semrec serve`` that owns the data directory.

Qdrant Edge allows one process per shard, so while a server runs it alone may open the
index. ``semrec serve`` writes ``<home>/server.json`` (its URL and pid) and removes it on
exit; ``live_server`` finds a server that is really there (its pid alive, ``/health``
answering), and ``RemoteApi`` speaks its HTTP API with the configured ``SEMREC_API_KEY``.
So ``semrec ingest`` beside a running server validates the file locally and sends the good
rows with ``PUT /items`` in batches; ``similar`` and ``feed`` ask the server. Image paths
travel as absolute paths: the server reads them only inside its ``image.allowed_roots``.

Only the standard library (``urllib``) is used: no extra runtime dependency.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semrec.catalog import Product
from semrec.config import Settings
from semrec.errors import UserError
from semrec.index import IngestReport
from semrec.serving.recommender import Feed, Recommendation, SearchResult
from semrec.store.base import Filters

SERVER_FILE = "server.json"
#: Products per ``PUT /items`` call: small enough to keep each write lock short.
BATCH = 128


class RemoteError(UserError, RuntimeError):
    """The server refused a request or could not be reached; the message says which."""


def write_server_file(home: Path, url: str) -> Path:
    """Announce this process as the server of ``home`` at ``url`` (atomic replace)."""
    path = home / SERVER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, path)
    return path


def remove_server_file(home: Path) -> None:
    """Withdraw the announcement, if it is this process's own."""
    path = home / SERVER_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def live_server(settings: Settings) -> RemoteApi | None:
    """The server announced in ``<home>/server.json`` if its process is alive and answers
    ``/health``; None otherwise (no file, a stale file from a crash, or no answer)."""
    try:
        info = json.loads((settings.home / SERVER_FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    key = settings.api_key.get_secret_value() if settings.api_key else None
    remote = RemoteApi(str(info["url"]), key)
    try:
        remote.call("GET", "/health", timeout=5)
    except RemoteError:
        return None
    return remote


class RemoteApi:
    """A small client of the semrec HTTP API."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: Any = None,
             params: Sequence[tuple[str, Any]] = (), timeout: float = 600) -> Any:
        """The JSON answer; raises ``RemoteError`` with the server's ``detail``."""
        query = urllib.parse.urlencode([(k, v) for k, v in params if v is not None])
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}",
                                         data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("X-API-Key", self.key)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", exc.reason)
            except ValueError:
                detail = exc.reason
            raise RemoteError(f"the server at {self.url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(f"cannot reach the server at {self.url}: {exc}") from None

    def ingest(self, products: Sequence[Product],
               on_progress: Callable[[int], None] | None = None) -> tuple[IngestReport, int]:
        """Upsert ``products`` through ``PUT /items`` in batches; the summed report and the
        catalog size after the last batch. Each batch is atomic on the server, so a failure
        part-way leaves whole batches in and re-running the command finishes the job."""
        report, total = IngestReport(), 0
        for start in range(0, len(products), BATCH):
            batch = products[start:start + BATCH]
            answer = self.call("PUT", "/items", {"items": [p.payload() for p in batch]})
            report.added += answer["added"]
            report.updated += answer["updated"]
            report.unchanged += answer["unchanged"]
            report.image_errors += [(e["product_id"], e["reason"])
                                    for e in answer.get("image_errors", [])]
            total = answer["products"]
            if on_progress:
                on_progress(len(batch))
        return report, total

    def similar(self, product_id: str, k: int, filters: Filters,
                diversity: float, by: str = "both") -> list[Recommendation]:
        path = f"/items/{urllib.parse.quote(product_id, safe='')}/similar"
        answer = self.call("GET", path, params=[*_params(k, filters, diversity), ("by", by)])
        return [_recommendation(item) for item in answer["items"]]

    def feed(self, user_id: str, k: int, filters: Filters, diversity: float) -> Feed:
        path = f"/users/{urllib.parse.quote(user_id, safe='')}/feed"
        answer = self.call("GET", path, params=_params(k, filters, diversity))
        return Feed(answer["user_id"], [_recommendation(i) for i in answer["items"]],
                    answer["personalised"], answer["history_size"])

    def search(self, query: str, k: int, filters: Filters, diversity: float,
               user_id: str | None = None) -> SearchResult:
        params = [("q", query), ("user_id", user_id), *_params(k, filters, diversity)]
        answer = self.call("GET", "/search", params=params)
        return SearchResult(answer["query"], [_recommendation(i) for i in answer["items"]],
                            answer["user_id"], answer["personalised"])


def _params(k: int, filters: Filters, diversity: float) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = [
        ("k", k), ("diversity", diversity), ("category", filters.category),
        ("min_price", filters.min_price), ("max_price", filters.max_price),
        ("in_stock", None if filters.in_stock is None else str(filters.in_stock).lower())]
    return params + [("exclude", pid) for pid in sorted(filters.exclude)]


def _recommendation(item: dict[str, Any]) -> Recommendation:
    payload = {k: v for k, v in item.items() if k not in {"score", "source", "because"}}
    return Recommendation(item["product_id"], item["score"], payload, item["source"],
                          item.get("because"))
