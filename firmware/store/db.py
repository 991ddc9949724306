"""SQLite with the settings that make a power cut lose nothing that was acknowledged.

WAL lets readers run beside the single writer; synchronous=FULL makes every commit durable
before it returns. Each thread gets its own connection (sqlite3 objects are not shareable).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    key_hash    BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    disabled_at TEXT
);
CREATE TABLE IF NOT EXISTS signatures (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at     TEXT NOT NULL,
    client_id      TEXT NOT NULL REFERENCES clients(id),
    kind           TEXT NOT NULL,
    hash_algorithm TEXT NOT NULL,
    document_hash  TEXT NOT NULL,
    key_label      TEXT NOT NULL,
    cert_serial    TEXT NOT NULL,
    level          TEXT NOT NULL,
    profile        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS signatures_by_client ON signatures(client_id, created_at);
"""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.executescript(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_connection(self.path)
            self._local.conn = conn
        return conn


def open_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    conn.isolation_level = "DEFERRED"
    return conn
