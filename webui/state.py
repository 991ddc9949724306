"""The console's own tables in the box's SQLite database, and its audit helper.

The tables are created here with CREATE TABLE IF NOT EXISTS, beside (not inside) the schema of
firmware/store/db.py: the signing service never reads them. Every change the console makes is an
audit entry, written in the same transaction as the change where the change is in this database.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from firmware.store import audit
from firmware.store.db import Database, immediate

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_admins (
    name            TEXT PRIMARY KEY,
    password_hash   BLOB NOT NULL,
    salt            BLOB NOT NULL,
    kdf             TEXT NOT NULL,       -- JSON: {"alg": "scrypt", "n": ..., "r": ..., "p": ..., "dklen": ...}
    created_at      TEXT NOT NULL,
    password_set_at TEXT NOT NULL
);
-- The one-time set-up code (at most one row); only its scrypt hash is kept.
CREATE TABLE IF NOT EXISTS console_setup_code (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    code_hash  BLOB NOT NULL,
    salt       BLOB NOT NULL,
    kdf        TEXT NOT NULL,
    source     TEXT NOT NULL,          -- "console" (printed at start) or "provisioning"
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS console_sessions (
    key_hash    TEXT PRIMARY KEY,       -- SHA-256 of the cookie value; the value itself is not stored
    admin       TEXT,                   -- NULL: not signed in (login and set-up forms)
    setup_nonce TEXT,                   -- set once the one-time code was accepted
    csrf        TEXT NOT NULL,
    flash       TEXT NOT NULL DEFAULT '[]',
    peer        TEXT,
    created     REAL NOT NULL,
    last_seen   REAL NOT NULL
);
-- Secret checks per peer and per account: counted before the check runs, so that concurrent
-- attempts cannot exceed the limit; cleared by a success.
CREATE TABLE IF NOT EXISTS console_lockouts (
    key          TEXT PRIMARY KEY,      -- "peer:<address>" or "account:<name>"
    failures     INTEGER NOT NULL,      -- checks started in the window (in flight or failed)
    last_failure REAL NOT NULL,         -- when the last of them started
    locked_until REAL NOT NULL DEFAULT 0,
    refused      INTEGER NOT NULL DEFAULT 0  -- attempts turned away without a check
);
"""
# Columns added after the first release: (table, column, definition) for databases made before.
ADDED_COLUMNS = [("console_lockouts", "refused", "INTEGER NOT NULL DEFAULT 0")]


def ensure_schema(db: Database) -> None:
    conn = db.connect()
    conn.executescript(SCHEMA)
    for table, column, definition in ADDED_COLUMNS:
        if column in _columns(conn, table):
            continue
        with immediate(conn):  # several processes may start at once: check again under the write lock
            if column not in _columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def append_audit(conn: sqlite3.Connection, actor: str, action: str, details: dict[str, Any],
                 client_id: str | None = None) -> int:
    """Append one entry; call inside the caller's `immediate()` transaction."""
    return audit.append(conn, [audit.AuditEntry(actor, action, client_id, details)])


def record(db: Database, actor: str, action: str, details: dict[str, Any], client_id: str | None = None) -> int:
    """Append one entry in a transaction of its own (for changes outside this database)."""
    return audit.record(db.connect(), audit.AuditEntry(actor, action, client_id, details))
