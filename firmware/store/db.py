"""SQLite with the settings that make a power cut lose nothing that was acknowledged.

WAL lets readers run beside the single writer; synchronous=FULL makes every commit durable
before it returns. Each thread gets its own connection (sqlite3 objects are not shareable), in
autocommit mode: every write goes through `immediate()`, which takes the write lock up front so
that the audit chain's head cannot change between reading it and appending to it.

Writers in several processes (the API's worker processes, firmware/workers.py) queue for the
write lock on a file lock (`WriterLock`) before `BEGIN IMMEDIATE`. SQLite itself lets a writer
that finds the database locked sleep and retry (1, 2, 5 … 100 ms); under load two workers' group
commits then waited up to a third of a second for each other (p99 352 ms at 8 connections). A
blocking ``flock`` wakes the next writer as soon as the lock is free. SQLite's lock stays the
rule; the file lock only orders who asks for it.

The database holds API key hashes and the audit log: its files are the owner's alone (0600)
whatever the umask. SQLite gives the -wal and -shm files the mode of the database file, so the
database is created 0600 before SQLite opens it; files an older box left 0644 are tightened.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import ClassVar

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    key_hash        BLOB NOT NULL,
    created_at      TEXT NOT NULL,
    disabled_at     TEXT,
    scopes          TEXT NOT NULL DEFAULT 'hash,pdf',
    calls_purchased INTEGER,            -- NULL: no total limit
    calls_used      INTEGER NOT NULL DEFAULT 0,
    rate_per_minute INTEGER,            -- NULL: no rate limit
    rate_per_day    INTEGER
);
-- The append-only, hash-chained audit log: signatures, refusals, client and key changes.
CREATE TABLE IF NOT EXISTS audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    client_id  TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    entry_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_client ON audit_log(client_id, action, at);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit_log(action, at);
-- CSC access tokens and SADs (store/csc_grants.py): only their SHA-256. A token is bound to the
-- client's key and to the audit log's head at login; a SAD to the token it was obtained with.
CREATE TABLE IF NOT EXISTS csc_tokens (
    token_hash BLOB PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients(id),
    key_hash   BLOB NOT NULL,           -- the client's key_hash at login
    since_seq  INTEGER NOT NULL,        -- audit_log seq at login: a later disable or rotation ends it
    expires_at REAL NOT NULL            -- Unix time
);
CREATE INDEX IF NOT EXISTS csc_tokens_by_expiry ON csc_tokens(expires_at);
CREATE TABLE IF NOT EXISTS csc_sads (
    sad_hash       BLOB PRIMARY KEY,
    token_hash     BLOB NOT NULL REFERENCES csc_tokens(token_hash) ON DELETE CASCADE,
    client_id      TEXT NOT NULL,
    credential_id  TEXT NOT NULL,
    hash_algorithm TEXT,                -- NULL: CSC v1 names none
    digests        TEXT NOT NULL,       -- JSON array of hex digests, the multiset it may sign
    expires_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS csc_sads_by_client ON csc_sads(client_id);
CREATE INDEX IF NOT EXISTS csc_sads_by_token ON csc_sads(token_hash);
CREATE INDEX IF NOT EXISTS csc_sads_by_expiry ON csc_sads(expires_at);
-- The box's latest clock reading against its TSA, one row shared by the workers (store/clock_readings.py).
CREATE TABLE IF NOT EXISTS clock_reading (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    skew_s        REAL NOT NULL,         -- box clock minus the TSA's genTime
    uncertainty_s REAL NOT NULL,
    at            REAL NOT NULL,         -- box time of the reading
    source        TEXT NOT NULL
);
-- Refusals of callers without a valid key, counted per window until summarised (store/refusals.py).
CREATE TABLE IF NOT EXISTS refusal_counts (
    window_start REAL NOT NULL,         -- times in seconds since the epoch, from SQLite's clock
    window_end   REAL NOT NULL,
    peer         TEXT NOT NULL,         -- '*': any peer past the window's cap
    error        TEXT NOT NULL,
    status       INTEGER NOT NULL,
    refusals     INTEGER NOT NULL,      -- those not logged one by one
    first_at     REAL,
    last_at      REAL NOT NULL,
    PRIMARY KEY (window_start, peer, error)
);
-- Signatures are audit entries; this view is the convenient shape for reports and metering.
CREATE VIEW IF NOT EXISTS signatures AS
    SELECT seq AS id, at AS created_at, client_id,
           json_extract(details, '$.kind') AS kind,
           json_extract(details, '$.hash_algorithm') AS hash_algorithm,
           json_extract(details, '$.document_hash') AS document_hash,
           json_extract(details, '$.key_label') AS key_label,
           json_extract(details, '$.cert_serial') AS cert_serial,
           json_extract(details, '$.level') AS level,
           json_extract(details, '$.profile') AS profile
    FROM audit_log WHERE action = 'signature';
-- The mail outbox (firmware/mail/outbox.py): every message the API accepted, until the relay took it.
-- The address and the message are dropped once sent or given up; the address hash stays.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id           TEXT PRIMARY KEY,      -- the id POST /v1/mail returned
    client_id    TEXT NOT NULL,
    message_id   TEXT NOT NULL,         -- the Message-ID header, the same on every attempt
    address_hash TEXT NOT NULL,         -- SHA-256 of the normalised recipient address
    recipient    TEXT,                  -- NULL once sent or failed
    sender       TEXT NOT NULL,         -- the envelope sender (MAIL FROM)
    message      BLOB,                  -- the whole message as sent; NULL once sent or failed
    encrypted    INTEGER NOT NULL,
    status       TEXT NOT NULL,         -- queued, sending, sent, failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,         -- Unix time: not before
    lease_until  REAL,                  -- while sending: when another sender may take it over
    created_at   TEXT NOT NULL,
    sent_at      TEXT,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox(status, next_attempt);
-- The webhook outbox (firmware/webhooks/): every contract event, queued in the transaction of the
-- change it reports, until the business system's URL answered 2xx. Secret and body are dropped at the end.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id           TEXT PRIMARY KEY,      -- the event id (Esignbox-Event-Id), the same on every attempt
    type         TEXT NOT NULL,         -- e.g. contract.completed
    url          TEXT NOT NULL,
    secret       BLOB,                  -- the HMAC key; NULL once delivered or failed
    body         BLOB,                  -- the JSON sent, byte for byte on every attempt; NULL at the end
    status       TEXT NOT NULL,         -- queued, sending, delivered, failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,         -- Unix time: not before
    lease_until  REAL,                  -- while sending: when another sender may take it over
    created_at   TEXT NOT NULL,
    delivered_at TEXT,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(status, next_attempt);
"""

# What quotas, rates and usage reports count: each signature, each CSC timestamp, each
# certificate-directory lookup or API submission, each mail queued (POST /v1/mail) and each envelope
# created (POST /v1/contracts) is one call
# (of a client: the box's own entries have no client). Kept apart from SCHEMA because a view's definition
# changes with the box (directory lookups were added): `_ensure_view` replaces an older one.
METERED_CALLS = """CREATE VIEW metered_calls AS
    SELECT seq AS id, at AS created_at, client_id, json_extract(details, '$.kind') AS kind
    FROM audit_log WHERE action IN ('signature', 'timestamp', 'directory.lookup', 'directory.submit', 'mail',
                                    'contract.created')
    AND client_id IS NOT NULL"""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        conn.executescript(SCHEMA)  # idempotent: every statement is IF NOT EXISTS
        _ensure_view(conn, "metered_calls", METERED_CALLS)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connect(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_connection(self.path)
            self._local.conn = conn
        return conn


def _ensure_view(conn: sqlite3.Connection, name: str, create: str) -> None:
    """The view ``name`` as ``create`` defines it, replaced in one transaction if it differs (so a
    worker process reading it meanwhile never finds it missing)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (name,)).fetchone()
    if row is not None and row[0] == create:
        return
    with immediate(conn):
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (name,)).fetchone()
        if row is None or row[0] != create:
            conn.execute(f"DROP VIEW IF EXISTS {name}")
            conn.execute(create)


def _make_private(path: Path) -> None:
    """The database file exists with mode 0600, and so do its WAL and shared-memory files if any.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock
    this process holds on it, including those of SQLite connections already open on it.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        try:
            os.chmod(path.with_name(name), 0o600)
        except FileNotFoundError:
            pass


class WriterLock:
    """This process's place in the queue for one database's write lock, shared by its threads.

    The file lock is taken once per process (a thread's nested write transaction, on another
    connection to the same file, would fail in SQLite anyway, but must not hang here). A process
    that dies holding it releases it with its descriptors. Its connections keep it alive; the
    descriptor is closed with the last of them (a database on a removable disk can be unmounted).
    """

    _by_path: ClassVar[weakref.WeakValueDictionary[Path, WriterLock]] = weakref.WeakValueDictionary()
    _by_path_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self._threads = threading.RLock()
        self._depth = 0  # guarded by _threads
        self._fd = os.open(path.with_name(path.name + "-writer"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        weakref.finalize(self, os.close, self._fd)

    @classmethod
    def of(cls, path: Path) -> WriterLock:
        with cls._by_path_lock:
            lock = cls._by_path.get(path)
            if lock is None:
                lock = cls._by_path[path] = cls(path)
            return lock

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


class _Connection(sqlite3.Connection):
    """A connection that knows its database's WriterLock (`immediate` takes it)."""

    writer: WriterLock | None = None

    def close(self) -> None:
        self.writer = None  # a closed connection kept by a caller must not keep the lock file open
        super().close()


def open_connection(path: Path) -> sqlite3.Connection:
    _make_private(path)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, factory=_Connection)
    conn.writer = WriterLock.of(path.resolve())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction holding the database's write lock from its first statement."""
    writer = getattr(conn, "writer", None)
    with writer.held() if writer is not None else nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
