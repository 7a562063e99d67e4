"""The data directory: where each stage keeps its artifacts, and who owns the index.

    <home>/semrec.db        catalog rows, frozen feature cache, events (SQLite)
    <home>/models/          tower versions (manifest + safetensors), CURRENT pointer
    <home>/index/<version>/ the embedded Qdrant Edge shard built by that version
    <home>/owner.lock       held by the one process that has the index open

Qdrant Edge allows one opener per shard. The owner lock makes a second opener fail with a
message naming the owner (for example a running ``semrec serve``) instead of ``WouldBlock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from semrec.errors import UserError


class HomeBusy(UserError, RuntimeError):
    """Another process owns this data directory's index; ``role`` says which command
    (``serve`` for an API server)."""

    def __init__(self, message: str, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "semrec.db"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def lock(self, role: str) -> OwnerLock:
        return OwnerLock(self.root / "owner.lock", role)


class OwnerLock:
    """An exclusive, non-blocking ``flock``; released when the process exits, even on a crash."""

    def __init__(self, path: Path, role: str) -> None:
        self.path = path
        self.role = role
        self._file: IO[str] | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; ``HomeBusy`` naming the owner if another process holds it, or
        with ``wait``, block until it is released."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "{}"
            handle.close()
            raise HomeBusy(_busy_message(self.path.parent, owner), _role(owner)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "role": self.role,
                                 "argv": " ".join(sys.argv[:3])}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> OwnerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _role(owner_json: str) -> str | None:
    try:
        return json.loads(owner_json).get("role")
    except (ValueError, AttributeError):
        return None


def _busy_message(root: Path, owner_json: str) -> str:
    try:
        owner = json.loads(owner_json)
    except ValueError:
        owner = {}
    who = f"process {owner.get('pid', '?')} ({owner.get('role', 'unknown')})"
    return (f"the index in {root} is open in {who}; Qdrant Edge allows one owner. "
            "Stop it first, or send this request to the running `semrec serve` API.")
