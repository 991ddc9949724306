"""One-time codes sent by (encrypted) e-mail instead of SMS, and checked once.

A code is single-use, expires, allows a few attempts, and is kept only as an HMAC-SHA256 under a
key in the state directory's ``secrets/`` (0600): six digits are a million guesses away from a
plain hash, so a copy of box.db alone must not be enough to read them back. Comparison is in
constant time. Every issue and every check is an audit entry in the same transaction as the
change it records (the address only as a hash), and all state is in SQLite: a check made by
another worker process sees the same attempts.

How the code reaches its person is the ``CodeSender``'s business (the mail service: encrypted to
the person's directory certificate, or plain where the client allows it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..durable import secret_key
from ..mail.outbox import address_hash
from ..store import Database, audit, immediate

__all__ = ["CodeSender", "Issued", "OtpCodes", "OtpSettings", "Verdict"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS otp_codes (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    address_hash TEXT NOT NULL,      -- SHA-256 of the normalised address, as in the audit log
    code_mac     BLOB NOT NULL,      -- HMAC-SHA256(secrets/otp.key, id || code)
    expires_at   REAL NOT NULL,      -- Unix time
    attempts     INTEGER NOT NULL DEFAULT 0,
    used_at      REAL                -- set by the one successful check
);
CREATE INDEX IF NOT EXISTS otp_codes_by_expiry ON otp_codes(expires_at);
"""

KEY_FILE = "secrets/otp.key"


class CodeSender(Protocol):
    """Delivers a code to its person; returns whether the message was encrypted."""

    def send_code(self, client_id: str, address: str, code: str, allow_plain: bool) -> bool:
        """Queue the message; raise ValueError (with the reason) when it cannot be delivered as asked."""


@dataclass(frozen=True)
class OtpSettings:
    digits: int = 6
    lifetime_s: float = 600.0
    max_attempts: int = 5


@dataclass(frozen=True)
class Issued:
    id: str
    expires_in_s: int
    encrypted: bool


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str  # "ok", "unknown", "expired", "used", "too_many_attempts", "wrong_code"


class OtpCodes:
    def __init__(self, db: Database, state_dir: Path, sender: CodeSender, settings: OtpSettings = OtpSettings(),
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._key = secret_key(state_dir / KEY_FILE)
        db.connect().executescript(SCHEMA)

    def issue(self, client_id: str, address: str, allow_plain: bool) -> Issued:
        """A new code for ``address`` (already normalised), sent by the CodeSender.

        The message is queued first, so that a code the sender refuses (no certificate, plain mail
        not allowed) leaves nothing behind; then the row and its audit entry. A crash between the
        two leaves a message whose code is not on record: it is refused as unknown.
        """
        code_id = secrets.token_urlsafe(16)
        code = "".join(secrets.choice("0123456789") for _ in range(self._settings.digits))
        encrypted = self._sender.send_code(client_id, address, code, allow_plain)
        now = self._clock()
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM otp_codes WHERE expires_at <= ?", (now - self._settings.lifetime_s,))
            conn.execute(
                "INSERT INTO otp_codes(id, client_id, address_hash, code_mac, expires_at) VALUES (?, ?, ?, ?, ?)",
                (code_id, client_id, address_hash(address), self._mac(code_id, code), now + self._settings.lifetime_s),
            )
            audit.append(conn, [audit.AuditEntry(f"client:{client_id}", "otp.issue", client_id,
                                                 {"id": code_id, "address_sha256": address_hash(address),
                                                  "encrypted": encrypted})])
        return Issued(code_id, int(self._settings.lifetime_s), encrypted)

    def verify(self, client_id: str, code_id: str, code: str) -> Verdict:
        """Check ``code`` against code ``code_id`` of this client: once right, never again."""
        now = self._clock()
        conn = self._db.connect()
        with immediate(conn):
            row = conn.execute("SELECT * FROM otp_codes WHERE id = ? AND client_id = ?", (code_id, client_id)).fetchone()
            verdict = self._judge(row, code_id, code, now)
            if row is not None and verdict.reason in ("ok", "wrong_code"):
                conn.execute(
                    "UPDATE otp_codes SET attempts = attempts + 1, used_at = CASE WHEN ? THEN ? END WHERE id = ?",
                    (verdict.valid, now, code_id),
                )
            audit.append(conn, [audit.AuditEntry(f"client:{client_id}", "otp.verify", client_id,
                                                 {"id": code_id, "outcome": verdict.reason})])
        return verdict

    def _judge(self, row: sqlite3.Row | None, code_id: str, code: str, now: float) -> Verdict:
        if row is None:
            return Verdict(False, "unknown")
        if row["used_at"] is not None:
            return Verdict(False, "used")
        if row["expires_at"] <= now:
            return Verdict(False, "expired")
        if row["attempts"] >= self._settings.max_attempts:
            return Verdict(False, "too_many_attempts")
        if not hmac.compare_digest(row["code_mac"], self._mac(code_id, code)):
            return Verdict(False, "wrong_code")
        return Verdict(True, "ok")

    def _mac(self, code_id: str, code: str) -> bytes:
        return hmac.new(self._key, f"{code_id}\0{code}".encode(), hashlib.sha256).digest()
