"""SQLite connection and schema. WAL mode lets readers run while one writer writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    key     TEXT PRIMARY KEY,          -- sha256(encoder id, what was encoded)
    encoder TEXT NOT NULL,
    dim     INTEGER NOT NULL,
    vector  BLOB NOT NULL              -- float32, little-endian
);
CREATE TABLE IF NOT EXISTS products (
    product_id    TEXT PRIMARY KEY,
    payload       TEXT NOT NULL,       -- JSON, as stored beside the vector
    category      TEXT,
    content_hash  TEXT NOT NULL,       -- of the catalog row: unchanged rows are skipped
    text_key      TEXT NOT NULL REFERENCES features(key),
    image_key     TEXT REFERENCES features(key),
    image_path    TEXT,
    modalities    TEXT NOT NULL,       -- what the vector was built from: 'text' or 'text,image'
    model_version TEXT NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    ts         REAL NOT NULL,
    event      TEXT NOT NULL,
    UNIQUE (user_id, product_id, ts, event)
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts);
CREATE TABLE IF NOT EXISTS product_stats (
    product_id TEXT PRIMARY KEY,
    events     INTEGER NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the state database at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn
