"""The console's administrator account: no default password, a one-time set-up code, scrypt, lockouts.

Here, not in webui/, because two faces set it up: the console (first set-up, sign-in, password
changes) and USB provisioning (a stick may carry the set-up code, or reset a forgotten
administrator). The console keeps only its face: cookies, CSRF tokens and pages.

- A box without an administrator has a one-time set-up code instead of a password. `esignbox
  serve` prints a fresh one on the box's own console when none is set, and the provisioning
  stick may set one with `set_setup_code`. Only its scrypt hash is in the database; a code the
  box made is also kept in plain in ``<state>/console/setup-code`` (0600, root and the service
  only) so that the box's screen can show it (`esignbox status --screen`), and removed once an
  administrator exists or a stick replaced the code. Whoever enters it
  must then choose the administrator's name and password; the code is consumed at that moment.
- Passwords (and the code) are hashed with scrypt (n=2^15, r=8, p=1: 32 MiB, ~0.1 s), a random
  salt per account; the parameters are stored with the hash so they can be raised later.
- Checks are counted per peer address and per account name, in SQLite (shared by every worker
  process), and counted *before* the ~0.1 s scrypt runs: however many attempts arrive at once, at
  most `max_failures` checks run per key until one succeeds. Reaching the limit locks the key for
  `lockout_s`; while locked the secret is not even checked, and the refusals are counted, not
  audited one by one (a locked console must not flood the audit log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable import write_durable
from ..store import audit
from ..store.db import Database, immediate

__all__ = ["AccountError", "Accounts", "Attempt", "admins", "ensure_schema", "set_setup_code", "setup_code_file",
           "shown_setup_code"]

# The accounts' tables beside (not inside) the schema of firmware/store/db.py: the signing service
# never reads them. console_sessions is here too: resetting the administrator signs everyone out
# in the same transaction. Every change is an audit entry written in the same transaction.
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


def append_audit(conn: sqlite3.Connection, actor: str, action: str, details: dict[str, Any]) -> int:
    """Append one entry; call inside the caller's `immediate()` transaction."""
    return audit.append(conn, [audit.AuditEntry(actor, action, None, details)])


def admins(db: Database) -> list[str]:
    """The administrators' names; none while no console ever made its tables."""
    try:
        return [row[0] for row in db.connect().execute("SELECT name FROM console_admins ORDER BY name")]
    except sqlite3.OperationalError:  # no such table: nobody has set the console up
        return []


SCRYPT_PARAMS = {"alg": "scrypt", "n": 2**15, "r": 8, "p": 1, "dklen": 32}
MIN_PASSWORD = 12
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen, typed by hand
CODE_GROUPS = 3  # XXXX-XXXX-XXXX: 12 characters, about 59 bits
SETUP_ACCOUNT = "#setup"  # the lockout key of the one-time code


class AccountError(ValueError):
    """A request the console refuses with a message for the person at the browser."""


def kdf(secret: str, salt: bytes, params: dict[str, Any]) -> bytes:
    if params.get("alg") != "scrypt":
        raise AccountError(f"unknown password hash {params.get('alg')!r}")
    n, r, p, dklen = params["n"], params["r"], params["p"], params["dklen"]
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * r * n + 2**20)


def hash_secret(secret: str, params: dict[str, Any] | None = None) -> tuple[bytes, bytes, str]:
    """(hash, salt, parameters as JSON) for a new secret."""
    params = dict(params or SCRYPT_PARAMS)
    salt = secrets.token_bytes(16)
    return kdf(secret, salt, params), salt, json.dumps(params, sort_keys=True)


def check_secret(secret: str, digest: bytes, salt: bytes, params_json: str) -> bool:
    return hmac.compare_digest(kdf(secret, salt, json.loads(params_json)), digest)


def new_setup_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(4 * CODE_GROUPS))
    return "-".join(chars[i : i + 4] for i in range(0, len(chars), 4))


def normalise_code(code: str) -> str:
    """What the person typed, as stored: upper case, dashes and spaces ignored."""
    return "".join(c for c in code.upper() if c.isalnum())


def check_password_rules(name: str, password: str, confirm: str) -> None:
    if password != confirm:
        raise AccountError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if password.lower() == name.lower():
        raise AccountError("the password must not be the account name")


def valid_admin_name(name: str) -> str:
    name = name.strip()
    if not (1 <= len(name) <= 32) or not all(c.isalnum() or c in "._-" for c in name):
        raise AccountError("the name must be 1–32 letters, digits, dots, dashes or underscores")
    return name


def setup_code_file(state_dir: Path) -> Path:
    """Where the plain code the box made waits for its screen (box.db is in the same state directory)."""
    return state_dir / "console" / "setup-code"


def shown_setup_code(state_dir: Path) -> str | None:
    """The code the box's screen shows: the one the box made, while no administrator exists.

    A file, not the database: the screen's command runs as root and must not open box.db (it
    would leave root-owned journal files the service cannot open)."""
    path = setup_code_file(state_dir)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _forget_code(db: Database) -> None:
    setup_code_file(db.path.parent).unlink(missing_ok=True)


def set_setup_code(db: Database, code: str, source: str = "provisioning", reset_admin: bool = False) -> None:
    """Store (the hash of) a one-time set-up code, replacing any earlier one.

    For the provisioning stick: it knows the code, so the box need not print one. Refused once
    an administrator exists (the code is for first set-up only) unless ``reset_admin``: a signed
    stick in the box is the physical way back in after a forgotten password, as the box has no
    shell. The administrator and every console session are then removed in the same transaction.
    """
    ensure_schema(db)
    if len(normalise_code(code)) < 10:
        raise AccountError("a set-up code needs at least 10 letters or digits")
    digest, salt, params = hash_secret(normalise_code(code))
    conn = db.connect()
    with immediate(conn):
        admins = [row[0] for row in conn.execute("SELECT name FROM console_admins ORDER BY name")]
        if admins and not reset_admin:
            raise AccountError("an administrator exists; a set-up code is no longer accepted")
        if admins:
            conn.execute("DELETE FROM console_admins")
            conn.execute("DELETE FROM console_sessions")
            append_audit(conn, source, "admin.reset", {"removed": admins, "source": source})
        conn.execute("DELETE FROM console_setup_code")
        conn.execute(
            "INSERT INTO console_setup_code(id, code_hash, salt, kdf, source, created_at) VALUES (1, ?, ?, ?, ?, ?)",
            (digest, salt, params, source, audit.now()),
        )
        append_audit(conn, "box" if source == "console" else source, "admin.setup_code", {"source": source})
    if source == "console":
        path = setup_code_file(db.path.parent)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durable(path, (code + "\n").encode(), mode=0o600)
    else:
        _forget_code(db)  # the stick's code replaced the one on the screen


@dataclass(frozen=True)
class Attempt:
    ok: bool
    message: str = ""
    locked_for_s: float = 0.0


class Accounts:
    def __init__(self, db: Database, max_failures: int = 5, lockout_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        ensure_schema(db)
        self._db = db
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._clock = clock
        # A hash to check against when the account does not exist: same cost, same timing.
        self._dummy = hash_secret(secrets.token_hex(16))

    # -- state --------------------------------------------------------------------------------
    def admin_exists(self) -> bool:
        return bool(self._db.connect().execute("SELECT COUNT(*) FROM console_admins").fetchone()[0])

    def admins(self) -> list[str]:
        return admins(self._db)

    def setup_code_source(self) -> str | None:
        row = self._db.connect().execute("SELECT source FROM console_setup_code").fetchone()
        return row[0] if row else None

    def ensure_setup_code(self) -> str | None:
        """At start: a fresh code to print if there is no administrator and no provisioned code."""
        if self.admin_exists() or self.setup_code_source() == "provisioning":
            _forget_code(self._db)  # a crash may have come between the administrator's commit and the removal
            return None
        code = new_setup_code()
        set_setup_code(self._db, code, source="console")
        return code

    # -- lockouts -----------------------------------------------------------------------------
    def _lock_keys(self, name: str, peer: str) -> list[str]:
        return [f"peer:{peer}", f"account:{name.lower()[:64]}"]

    def _refused_for(self, row: sqlite3.Row, now: float) -> float:
        """Seconds a key turns attempts away: locked, or its last allowed checks are still running."""
        if row["locked_until"]:
            return max(0.0, float(row["locked_until"]) - now)
        if row["failures"] >= self.max_failures:
            return max(0.0, float(row["last_failure"]) + self.lockout_s - now)
        return 0.0

    def _over(self, row: sqlite3.Row, now: float) -> bool:
        """The key's lockout has ended, or its last counted attempt is older than the window."""
        if row["locked_until"]:
            return bool(row["locked_until"] <= now)
        return bool(row["last_failure"] < now - self.lockout_s)

    def locked_for(self, name: str, peer: str) -> float:
        now = self._clock()
        conn = self._db.connect()
        rows = [conn.execute("SELECT * FROM console_lockouts WHERE key = ?", (key,)).fetchone()
                for key in self._lock_keys(name, peer)]
        return max([self._refused_for(row, now) for row in rows if row is not None], default=0.0)

    def _reserve(self, name: str, peer: str) -> float:
        """Count one secret check against the peer and the account before it runs; 0.0 lets it run.

        Otherwise the attempt is refused for that many seconds. Reading the counts and adding to
        them happen in one write transaction, so concurrent attempts (threads or worker
        processes) cannot pass the limit between the two. A refused attempt only adds to the
        key's `refused` counter: the audit log gets one entry when a lockout starts and one when
        it ends, whatever the number of attempts in between.
        """
        conn = self._db.connect()
        with immediate(conn):
            now = self._clock()
            rows = {}
            for key in self._lock_keys(name, peer):
                row = conn.execute("SELECT * FROM console_lockouts WHERE key = ?", (key,)).fetchone()
                if row is not None and self._over(row, now):
                    self._forget(conn, row)
                    row = None
                rows[key] = row
            refusing = {key: self._refused_for(row, now) for key, row in rows.items() if row is not None}
            refusing = {key: seconds for key, seconds in refusing.items() if seconds > 0}
            if refusing:
                conn.executemany("UPDATE console_lockouts SET refused = refused + 1 WHERE key = ?",
                                 [(key,) for key in refusing])
                return max(refusing.values())
            conn.executemany(
                "INSERT INTO console_lockouts(key, failures, last_failure) VALUES (?, 1, ?)"
                " ON CONFLICT(key) DO UPDATE SET failures = failures + 1, last_failure = excluded.last_failure",
                [(key, now) for key in rows])
            return 0.0

    def _failed(self, conn: sqlite3.Connection, name: str, peer: str) -> None:
        """After a failed check: lock each key whose count reached the limit (one audit entry).

        A lock once set is left as it is: a check that was already running when it was set and
        fails afterwards neither shortens nor restarts it.
        """
        now = self._clock()
        locking = []
        for key in self._lock_keys(name, peer):
            row = conn.execute("SELECT failures, locked_until FROM console_lockouts WHERE key = ?", (key,)).fetchone()
            if row is not None and row["failures"] >= self.max_failures and not row["locked_until"]:
                conn.execute("UPDATE console_lockouts SET locked_until = ? WHERE key = ?", (now + self.lockout_s, key))
                locking.append(key)
        if locking:
            append_audit(conn, "box", "admin.lockout", {"keys": locking, "name": name[:64], "peer": peer,
                                                        "failures": self.max_failures, "seconds": self.lockout_s})

    def _clear(self, conn: sqlite3.Connection, name: str, peer: str) -> None:
        for key in self._lock_keys(name, peer):
            row = conn.execute("SELECT * FROM console_lockouts WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self._forget(conn, row)

    def _forget(self, conn: sqlite3.Connection, row: sqlite3.Row) -> None:
        """Drop a key's count; if it locked or refused anything, sum that up in one audit entry."""
        conn.execute("DELETE FROM console_lockouts WHERE key = ?", (row["key"],))
        if row["locked_until"] or row["refused"]:
            append_audit(conn, "box", "admin.lockout_ended", {"key": row["key"], "refused": row["refused"]})

    def _locked_message(self, seconds: float) -> str:
        minutes = max(1, round(seconds / 60 + 0.49))
        return (f"Too many failed attempts: signing in is locked for {minutes} more minute"
                f"{'s' if minutes != 1 else ''}. Try again later.")

    def _attempt(self, name: str, peer: str, check: Callable[[], bool], actor: str, reason: str,
                 on_success: Callable[[sqlite3.Connection], object] = lambda conn: None) -> Attempt:
        """One guarded check of a secret: counted first (or refused), checked, then cleared or failed.

        ``on_success`` runs in the transaction that clears the counts; a failure is audited with
        ``actor`` and ``reason``. A failed Attempt carries the lockout message if one now applies.
        """
        refused = self._reserve(name, peer)
        if refused:
            return Attempt(False, self._locked_message(refused), refused)
        ok = check()
        conn = self._db.connect()
        with immediate(conn):
            if ok:
                self._clear(conn, name, peer)
                on_success(conn)
            else:
                append_audit(conn, actor, "admin.login_failed", {"name": name[:64], "peer": peer, "reason": reason})
                self._failed(conn, name, peer)
        if ok:
            return Attempt(True)
        locked = self.locked_for(name, peer)
        return Attempt(False, self._locked_message(locked) if locked else "", locked)

    # -- login --------------------------------------------------------------------------------
    def login(self, name: str, password: str, peer: str) -> Attempt:
        name = name.strip()

        def check() -> bool:
            row = self._db.connect().execute("SELECT * FROM console_admins WHERE name = ?", (name,)).fetchone()
            if row is None:
                check_secret(password, *self._dummy)
                return False
            return check_secret(password, row["password_hash"], row["salt"], row["kdf"])

        attempt = self._attempt(name, peer, check, "anonymous", "bad credentials",
                                lambda conn: append_audit(conn, f"admin:{name}", "admin.login", {"peer": peer}))
        return attempt if attempt.ok or attempt.message else Attempt(False, "Wrong name or password.")

    # -- first set-up ---------------------------------------------------------------------------
    def check_setup_code(self, code: str, peer: str) -> tuple[Attempt, str | None]:
        """Step 1 of the first set-up: returns a nonce naming the accepted code, for step 2."""
        if self.admin_exists():
            return Attempt(False, "This box already has an administrator: sign in instead."), None
        row = self._db.connect().execute("SELECT * FROM console_setup_code").fetchone()
        attempt = self._attempt(
            SETUP_ACCOUNT, peer,
            lambda: row is not None and check_secret(normalise_code(code), row["code_hash"], row["salt"], row["kdf"]),
            "anonymous", "wrong set-up code",
            lambda conn: append_audit(conn, "anonymous", "admin.setup_code_accepted", {"peer": peer}))
        if attempt.ok:
            return attempt, row["code_hash"].hex()[:32]
        if attempt.message:
            return attempt, None
        if row is None:
            return Attempt(False, "No set-up code is active: restart the box to have a new one printed."), None
        return Attempt(False, "That is not the set-up code shown on the box's console."), None

    def create_admin(self, nonce: str, name: str, password: str, confirm: str, peer: str) -> str:
        """Step 2: the administrator sets name and password; the set-up code is consumed."""
        name = valid_admin_name(name)
        check_password_rules(name, password, confirm)
        digest, salt, params = hash_secret(password)
        conn = self._db.connect()
        with immediate(conn):
            if conn.execute("SELECT COUNT(*) FROM console_admins").fetchone()[0]:
                raise AccountError("This box already has an administrator: sign in instead.")
            row = conn.execute("SELECT code_hash FROM console_setup_code").fetchone()
            if row is None or row[0].hex()[:32] != nonce:
                raise AccountError("The set-up code was replaced or used meanwhile: enter the current one.")
            at = audit.now()
            conn.execute(
                "INSERT INTO console_admins(name, password_hash, salt, kdf, created_at, password_set_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (name, digest, salt, params, at, at))
            conn.execute("DELETE FROM console_setup_code")
            append_audit(conn, f"admin:{name}", "admin.password_set", {"peer": peer, "first_setup": True})
            append_audit(conn, f"admin:{name}", "admin.login", {"peer": peer})
        _forget_code(self._db)
        return name

    def change_password(self, name: str, current: str, password: str, confirm: str, peer: str) -> None:
        def check() -> bool:
            row = self._db.connect().execute("SELECT * FROM console_admins WHERE name = ?", (name,)).fetchone()
            return row is not None and check_secret(current, row["password_hash"], row["salt"], row["kdf"])

        attempt = self._attempt(name, peer, check, f"admin:{name}", "wrong current password")
        if not attempt.ok:
            raise AccountError(attempt.message or "The current password is wrong.")
        check_password_rules(name, password, confirm)
        digest, salt, params = hash_secret(password)
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("UPDATE console_admins SET password_hash = ?, salt = ?, kdf = ?, password_set_at = ?"
                         " WHERE name = ?", (digest, salt, params, audit.now(), name))
            append_audit(conn, f"admin:{name}", "admin.password_set", {"peer": peer, "first_setup": False})
