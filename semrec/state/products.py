"""The catalog as indexed: one row per product, pointing at its cached features."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProductRow:
    product_id: str
    payload: dict[str, Any]
    content_hash: str
    text_key: str
    image_key: str | None
    image_path: str | None
    modalities: tuple[str, ...]
    model_version: str


_COLUMNS = (
    "product_id, payload, content_hash, text_key, image_key, image_path, modalities, model_version"
)


def _row(values: Sequence[Any]) -> ProductRow:
    pid, payload, content_hash, text_key, image_key, image_path, modalities, version = values
    return ProductRow(pid, json.loads(payload), content_hash, text_key, image_key, image_path,
                      tuple(modalities.split(",")), version)


class ProductTable:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get_many(self, product_ids: Iterable[str]) -> dict[str, ProductRow]:
        ids = list(dict.fromkeys(product_ids))
        found: dict[str, ProductRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM products WHERE product_id IN ({marks})"
            rows = map(_row, self.conn.execute(query, chunk))
            found.update((row.product_id, row) for row in rows)
        return found

    def get(self, product_id: str) -> ProductRow | None:
        return self.get_many([product_id]).get(product_id)

    def put(self, rows: Sequence[ProductRow]) -> None:
        """Insert or replace rows (caller commits)."""
        now = time.time()
        self.conn.executemany(
            f"INSERT OR REPLACE INTO products ({_COLUMNS}, category, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.product_id, json.dumps(r.payload, ensure_ascii=False), r.content_hash, r.text_key,
              r.image_key, r.image_path, ",".join(r.modalities), r.model_version,
              r.payload.get("category"), now) for r in rows],
        )

    def mark_built(self, version: str, built: Sequence[tuple[str, str]]) -> None:
        """Record that ``version`` indexed each ``(product_id, content_hash)``, for the rows
        still holding that content (a row changed meanwhile keeps its own version, so the
        switch to ``version`` catches it up). Caller commits."""
        self.conn.executemany(
            "UPDATE products SET model_version = ? WHERE product_id = ? AND content_hash = ?",
            [(version, pid, content_hash) for pid, content_hash in built])

    def not_built_by(self, version: str) -> list[ProductRow]:
        """The rows whose vectors were made by another version than ``version``."""
        query = f"SELECT {_COLUMNS} FROM products WHERE model_version != ? ORDER BY product_id"
        return list(map(_row, self.conn.execute(query, (version,))))

    def delete(self, product_ids: Sequence[str]) -> None:
        self.conn.executemany("DELETE FROM products WHERE product_id = ?",
                              [(p,) for p in product_ids])

    def all(self) -> Iterator[ProductRow]:
        query = f"SELECT {_COLUMNS} FROM products ORDER BY product_id"
        yield from map(_row, self.conn.execute(query))

    def known(self, product_ids: Iterable[str]) -> set[str]:
        return set(self.get_many(product_ids))

    def categories(self) -> list[tuple[str, int]]:
        """Each category and its product count, by name."""
        return self.conn.execute("SELECT category, COUNT(*) FROM products WHERE category IS "
                                 "NOT NULL GROUP BY category ORDER BY category").fetchall()

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]
