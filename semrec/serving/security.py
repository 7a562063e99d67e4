"""The API's guards: an API key on writes (and optionally reads), a request-body size limit,
and error messages with no file-system paths.

The key comes from ``SEMREC_API_KEY`` (``Settings.api_key``); a client sends it as
``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Keys are compared in constant time
(``hmac.compare_digest``), so response timing says nothing about how much of a guess was
right. Without a key configured every endpoint is open, which is why ``semrec serve`` then
listens on loopback only unless told otherwise.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="The server's SEMREC_API_KEY.")
_BEARER = HTTPBearer(auto_error=False, description="The server's SEMREC_API_KEY.")
#: An absolute path with at least two parts (``/etc/passwd``, ``/srv/data/semrec.db``).
_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+[^\s/'\",;)]*")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def key_matches(given: str | None, key: str) -> bool:
    """Whether ``given`` is ``key``, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


async def _presented(header: Annotated[str | None, Depends(_HEADER)] = None,
                     bearer: Annotated[HTTPAuthorizationCredentials | None,
                                       Depends(_BEARER)] = None) -> str | None:
    """The key the request presents (``X-API-Key``, else ``Authorization: Bearer``)."""
    return header if header is not None else (bearer.credentials if bearer else None)


Presented = Annotated[str | None, Depends(_presented)]


def check_key(key: str | None, given: str | None) -> None:
    """401 unless ``given`` is ``key`` (anything passes when no key is configured)."""
    if key is not None and not key_matches(given, key):
        raise HTTPException(401, "a valid API key is required (X-API-Key header or "
                                 "Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"})


async def write_access(request: Request, given: Presented) -> None:
    """The dependency of every write: the server's key (``app.state.api_key``), if any.
    ``async`` (like every dependency here) so that FastAPI runs it on the event loop
    instead of handing it to a worker thread."""
    check_key(request.app.state.api_key, given)


async def read_access(request: Request, given: Presented) -> None:
    """The dependency of every read: the key too when ``app.state.read_requires_key``."""
    if request.app.state.read_requires_key:
        check_key(request.app.state.api_key, given)


async def holds_key(request: Request, given: Presented) -> bool:
    """A dependency: whether the request carries the server's key (False when none is
    configured: then nobody holds one). What only the operator may see, e.g. the data
    directory's path in ``/info``, is shown to key holders alone."""
    key = request.app.state.api_key
    return key is not None and key_matches(given, key)

KeyHolder = Annotated[bool, Depends(holds_key)]


def serve_host(host: str, have_key: bool, open_without_key: bool) -> tuple[str, str | None]:
    """The interface to listen on, and a notice to print: without a key, loopback only
    unless ``open_without_key``."""
    if have_key:
        return host, None
    if host in LOOPBACK:
        return host, ("no SEMREC_API_KEY set: every endpoint is open, so listening on "
                      f"loopback ({host}) only")
    if open_without_key:
        return host, (f"no SEMREC_API_KEY set and listening on {host}: anyone who can reach "
                      "this port can change the catalog and events")
    return "127.0.0.1", (f"no SEMREC_API_KEY set: listening on 127.0.0.1, not {host}; set "
                         "SEMREC_API_KEY, or pass --open-without-key")


def public_info(data: dict[str, Any]) -> dict[str, Any]:
    """``/info`` for a caller without the key: no data-directory path, the embedded store
    named without its folder, a server store's URL without credentials, path or query."""
    out = {k: v for k, v in data.items() if k != "home"}
    store = str(out.get("store", ""))
    if store.startswith("edge://"):
        out["store"] = "edge (embedded)"
    elif store:
        parts = urlsplit(store)
        port = f":{parts.port}" if parts.port else ""
        out["store"] = f"{parts.scheme}://{parts.hostname or ''}{port}"
    return out


def scrub(message: str) -> str:
    """``message`` with absolute file-system paths replaced by ``<path>``: a client learns
    what went wrong, never where the server keeps its files."""
    return _PATH.sub("<path>", message)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before any endpoint
    sees it. Checks ``Content-Length`` first, then counts the bytes actually received (a
    chunked body has no length), holding at most ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body is larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
