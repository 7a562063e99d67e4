"""What a user can act on, apart from bugs: one base class, and one way every command
reports it (one line on stderr, exit status 1, never a traceback).

Each stage raises its own subclass of ``UserError`` (a busy data directory, an unknown
product, a bad config value, ...); ``ValueError`` and ``FileNotFoundError`` from reading a
user's files count too. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class UserError(Exception):
    """An error whose message tells the user what to change."""


class InvalidInput(UserError, ValueError):
    """A value the caller gave is wrong (an API answers 422; a command exits 1)."""


#: Everything a command reports as one line and exit status 1.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError)


class _Console(Protocol):
    def print(self, *objects: object, highlight: bool | None = None) -> None: ...


@contextmanager
def reported(err: _Console) -> Iterator[None]:
    """Print a user error as ``error: message`` on ``err`` and exit with status 1."""
    try:
        yield
    except USER_ERRORS as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None
