"""The interaction log and per-product popularity, in SQLite.

Loading the same events twice is a no-op: an event is unique by (user, product, time, type).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from semrec.catalog import Event


@dataclass(frozen=True)
class InsertReport:
    inserted: int
    duplicates: int


class EventLog:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, events: Sequence[Event]) -> InsertReport:
        """Append events and update popularity in one transaction."""
        with self.conn:
            inserted_ids: list[str] = []
            for e in events:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO events (user_id, product_id, ts, event) "
                    "VALUES (?, ?, ?, ?)", (e.user_id, e.product_id, e.timestamp, e.event),
                )
                if cur.rowcount:
                    inserted_ids.append(e.product_id)
            counts: dict[str, int] = {}
            for pid in inserted_ids:
                counts[pid] = counts.get(pid, 0) + 1
            self.conn.executemany(
                "INSERT INTO product_stats (product_id, events) VALUES (?, ?) "
                "ON CONFLICT (product_id) DO UPDATE SET events = events + excluded.events",
                list(counts.items()),
            )
        return InsertReport(inserted=len(inserted_ids), duplicates=len(events) - len(inserted_ids))

    def history(self, user_id: str, limit: int | None = None) -> list[tuple[str, float, str]]:
        """The user's events, oldest first, as (product_id, timestamp, event) (newest ``limit``)."""
        query = ("SELECT product_id, ts, event FROM events WHERE user_id = ? "
                 "ORDER BY ts DESC, id DESC")
        args: tuple = (user_id,)
        if limit is not None:
            query += " LIMIT ?"
            args = (user_id, limit)
        return list(reversed(self.conn.execute(query, args).fetchall()))

    def products_with_event(self, user_id: str, event_types: Sequence[str]) -> set[str]:
        """Products the user has an event of one of ``event_types`` with (e.g. bought)."""
        marks = ",".join("?" * len(event_types))
        rows = self.conn.execute(
            f"SELECT DISTINCT product_id FROM events WHERE user_id = ? AND event IN ({marks})",
            (user_id, *event_types),
        )
        return {pid for (pid,) in rows}

    def popular(self, limit: int, category: str | None = None,
                exclude: Sequence[str] = ()) -> list[tuple[str, int]]:
        """Most-interacted indexed products (optionally in ``category``), most first."""
        query = ("SELECT s.product_id, s.events FROM product_stats s "
                 "JOIN products p ON p.product_id = s.product_id")
        args: list = []
        if category is not None:
            query += " WHERE p.category = ?"
            args.append(category)
        query += " ORDER BY s.events DESC, s.product_id LIMIT ?"
        args.append(limit + len(exclude))
        skip = set(exclude)
        rows = [(pid, n) for pid, n in self.conn.execute(query, args) if pid not in skip]
        return rows[:limit]

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def user_count(self) -> int:
        return self.conn.execute("SELECT COUNT(DISTINCT user_id) FROM events").fetchone()[0]
