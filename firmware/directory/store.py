"""The certificate directory's tables: certificates by address and state, and proofs of mailbox control.

A certificate row moves pending → published → superseded | unpublished (or pending → unpublished
when its owner never proves control); rows are kept, not deleted, so the audit log's entries
always name a row that exists. One row per (address, certificate): a certificate submitted
again reuses its row. Proof secrets are stored only as SHA-256 (they are 256-bit random tokens,
so a fast hash suffices); the short code a person may type instead is stored as an HMAC under
the directory's key, as 10^8 codes could be hashed through in a moment.

The tables are created here, like db.py's (CREATE ... IF NOT EXISTS on every open), so the
directory's schema lives beside the only code that reads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..store.db import Database, immediate

__all__ = ["SCHEMA", "STATUSES", "CertificateRow", "DirectoryStore", "ProofRow", "Purpose", "Status"]

Status = Literal["pending", "published", "superseded", "unpublished"]
Purpose = Literal["publish", "unpublish"]
STATUSES: tuple[Status, ...] = ("pending", "published", "superseded", "unpublished")

SCHEMA = """
CREATE TABLE IF NOT EXISTS directory_certificates (
    id           INTEGER PRIMARY KEY,
    address      TEXT NOT NULL,         -- normalised (firmware/directory/addresses.py)
    fingerprint  TEXT NOT NULL,         -- SHA-256 of the certificate's DER, hex
    certificate  BLOB NOT NULL,         -- DER
    chain        TEXT NOT NULL,         -- JSON array of base64 DER: the validated path, leaf excluded
    status       TEXT NOT NULL CHECK (status IN ('pending', 'published', 'superseded', 'unpublished')),
    source       TEXT NOT NULL,         -- api, mail, console
    not_before   TEXT NOT NULL,         -- ISO 8601 UTC
    not_after    TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    published_at TEXT,
    ended_at     TEXT,                  -- superseded or unpublished
    end_reason   TEXT,                  -- superseded, owner, admin, revoked, expired, unproven
    UNIQUE (address, fingerprint)
);
CREATE INDEX IF NOT EXISTS directory_by_address ON directory_certificates(address, status);
CREATE INDEX IF NOT EXISTS directory_by_status ON directory_certificates(status, not_after);
CREATE TABLE IF NOT EXISTS directory_proofs (
    id             INTEGER PRIMARY KEY,
    certificate_id INTEGER NOT NULL REFERENCES directory_certificates(id),
    purpose        TEXT NOT NULL CHECK (purpose IN ('publish', 'unpublish')),
    token_hash     BLOB NOT NULL UNIQUE, -- SHA-256 of the link's token
    code_hash      BLOB NOT NULL,        -- HMAC-SHA-256 of the typed code under directory_keys 'code'
    expires_at     TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0, -- wrong codes entered for this proof
    used_at        TEXT
);
CREATE INDEX IF NOT EXISTS directory_proofs_by_certificate ON directory_proofs(certificate_id);
-- Keys made on first use: 'address' keys the address hashes written to the audit log, 'code' the codes.
CREATE TABLE IF NOT EXISTS directory_keys (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class CertificateRow:
    id: int
    address: str
    fingerprint: str
    certificate: bytes
    chain: tuple[bytes, ...]
    status: Status
    source: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CertificateRow:
        return cls(row["id"], row["address"], row["fingerprint"], bytes(row["certificate"]),
                   tuple(base64.b64decode(item) for item in json.loads(row["chain"])), row["status"],
                   row["source"], datetime.fromisoformat(row["not_before"]), datetime.fromisoformat(row["not_after"]))


@dataclass(frozen=True)
class ProofRow:
    id: int
    certificate_id: int
    purpose: Purpose
    expires_at: datetime
    attempts: int
    used: bool


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class DirectoryStore:
    """SQL of the directory; the write methods run inside the caller's `immediate()` transaction,
    so that the service appends the change's audit entry in the same one."""

    def __init__(self, db: Database) -> None:
        self.db = db
        conn = db.connect()
        conn.executescript(SCHEMA)  # idempotent: every statement is IF NOT EXISTS
        self._keys = {name: self._key(conn, name) for name in ("address", "code")}

    @staticmethod
    def _key(conn: sqlite3.Connection, name: str) -> bytes:
        with immediate(conn):  # several worker processes may open a new database at once: one key wins
            conn.execute("INSERT OR IGNORE INTO directory_keys(name, value) VALUES (?, ?)", (name, secrets.token_bytes(32)))
            value: bytes = conn.execute("SELECT value FROM directory_keys WHERE name = ?", (name,)).fetchone()[0]
        return bytes(value)

    def address_hash(self, address: str) -> str:
        """What the audit log says instead of the address (see service.py for why)."""
        return hmac.new(self._keys["address"], address.encode(), hashlib.sha256).hexdigest()

    def code_hash(self, code: str) -> bytes:
        return hmac.new(self._keys["code"], code.encode(), hashlib.sha256).digest()

    @staticmethod
    def token_hash(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    # -- certificates -----------------------------------------------------------------------------

    @staticmethod
    def find(conn: sqlite3.Connection, address: str, fingerprint: str) -> CertificateRow | None:
        row = conn.execute("SELECT * FROM directory_certificates WHERE address = ? AND fingerprint = ?",
                           (address, fingerprint)).fetchone()
        return CertificateRow.from_row(row) if row else None

    @staticmethod
    def get(conn: sqlite3.Connection, certificate_id: int) -> CertificateRow:
        row = conn.execute("SELECT * FROM directory_certificates WHERE id = ?", (certificate_id,)).fetchone()
        return CertificateRow.from_row(row)

    @staticmethod
    def by_status(conn: sqlite3.Connection, address: str, status: Status) -> list[CertificateRow]:
        """Newest first (by notBefore)."""
        rows = conn.execute("SELECT * FROM directory_certificates WHERE address = ? AND status = ?"
                            " ORDER BY not_before DESC, id DESC", (address, status))
        return [CertificateRow.from_row(row) for row in rows]

    @staticmethod
    def by_address(conn: sqlite3.Connection, address: str) -> list[CertificateRow]:
        """Every certificate of one address, whatever its status; newest first (by notBefore)."""
        rows = conn.execute("SELECT * FROM directory_certificates WHERE address = ?"
                            " ORDER BY not_before DESC, id DESC", (address,))
        return [CertificateRow.from_row(row) for row in rows]

    @staticmethod
    def counts(conn: sqlite3.Connection) -> dict[Status, int]:
        """Certificates per status, every status named (0 when none)."""
        found = dict(conn.execute("SELECT status, COUNT(*) FROM directory_certificates GROUP BY status").fetchall())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    @staticmethod
    def all_published(conn: sqlite3.Connection) -> list[CertificateRow]:
        rows = conn.execute("SELECT * FROM directory_certificates WHERE status = 'published' ORDER BY id")
        return [CertificateRow.from_row(row) for row in rows]

    @staticmethod
    def put_pending(conn: sqlite3.Connection, address: str, fingerprint: str, certificate: bytes,
                    chain: tuple[bytes, ...], source: str, not_before: datetime, not_after: datetime,
                    now: datetime) -> int:
        """Insert the certificate as pending, or make its existing (not published) row pending again."""
        chain_json = json.dumps([base64.b64encode(item).decode() for item in chain])
        conn.execute(
            "INSERT INTO directory_certificates(address, fingerprint, certificate, chain, status, source, not_before,"
            " not_after, submitted_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"
            " ON CONFLICT (address, fingerprint) DO UPDATE SET status = 'pending', chain = excluded.chain,"
            " source = excluded.source, submitted_at = excluded.submitted_at, ended_at = NULL, end_reason = NULL",
            (address, fingerprint, certificate, chain_json, source, _iso(not_before), _iso(not_after), _iso(now)),
        )
        certificate_id: int = conn.execute("SELECT id FROM directory_certificates WHERE address = ? AND fingerprint = ?",
                                           (address, fingerprint)).fetchone()[0]
        return certificate_id

    @staticmethod
    def publish(conn: sqlite3.Connection, certificate_id: int, now: datetime) -> None:
        conn.execute("UPDATE directory_certificates SET status = 'published', published_at = ?, ended_at = NULL,"
                     " end_reason = NULL WHERE id = ?", (_iso(now), certificate_id))

    @staticmethod
    def end(conn: sqlite3.Connection, certificate_id: int, status: Status, reason: str, now: datetime) -> None:
        """Supersede or unpublish a certificate; its open proofs can no longer be used."""
        conn.execute("UPDATE directory_certificates SET status = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                     (status, _iso(now), reason, certificate_id))
        conn.execute("UPDATE directory_proofs SET used_at = ? WHERE certificate_id = ? AND used_at IS NULL",
                     (_iso(now), certificate_id))

    # -- proofs -----------------------------------------------------------------------------------

    def add_proof(self, conn: sqlite3.Connection, certificate_id: int, purpose: Purpose, token: str, code: str,
                  expires_at: datetime, now: datetime) -> None:
        """A new proof replaces the certificate's open ones of the same purpose (only the latest mail counts)."""
        conn.execute("UPDATE directory_proofs SET used_at = ? WHERE certificate_id = ? AND purpose = ?"
                     " AND used_at IS NULL", (_iso(now), certificate_id, purpose))
        conn.execute("INSERT INTO directory_proofs(certificate_id, purpose, token_hash, code_hash, expires_at)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (certificate_id, purpose, self.token_hash(token), self.code_hash(code), _iso(expires_at)))

    def proof_by_token(self, conn: sqlite3.Connection, token: str) -> ProofRow | None:
        row = conn.execute("SELECT * FROM directory_proofs WHERE token_hash = ?", (self.token_hash(token),)).fetchone()
        return _proof(row) if row else None

    @staticmethod
    def proof(conn: sqlite3.Connection, proof_id: int) -> ProofRow | None:
        row = conn.execute("SELECT * FROM directory_proofs WHERE id = ?", (proof_id,)).fetchone()
        return _proof(row) if row else None

    @staticmethod
    def open_proofs(conn: sqlite3.Connection, address: str, now: datetime) -> list[tuple[ProofRow, bytes]]:
        """The address's unused, unexpired proofs with their code hashes, newest first."""
        rows = conn.execute(
            "SELECT p.* FROM directory_proofs p JOIN directory_certificates c ON c.id = p.certificate_id"
            " WHERE c.address = ? AND p.used_at IS NULL AND p.expires_at > ? ORDER BY p.id DESC",
            (address, _iso(now)))
        return [(_proof(row), bytes(row["code_hash"])) for row in rows]

    @staticmethod
    def use_proof(conn: sqlite3.Connection, proof_id: int, now: datetime) -> None:
        conn.execute("UPDATE directory_proofs SET used_at = ? WHERE id = ?", (_iso(now), proof_id))

    @staticmethod
    def count_attempt(conn: sqlite3.Connection, proof_id: int, max_attempts: int, now: datetime) -> None:
        """One more wrong code for the proof; at ``max_attempts`` it is used up."""
        conn.execute("UPDATE directory_proofs SET attempts = attempts + 1,"
                     " used_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE used_at END WHERE id = ?",
                     (max_attempts, _iso(now), proof_id))

    # -- lookups: counted in the audit log ----------------------------------------------------------

    @staticmethod
    def events_since(conn: sqlite3.Connection, action: str, since: datetime, *, client_id: str | None = None,
                     address_hash: str | None = None) -> int:
        """``action`` entries (lookups, submissions) since ``since``: by one client, or for one address
        by anyone."""
        if client_id is not None:  # index audit_by_client
            row = conn.execute("SELECT COUNT(*) FROM audit_log WHERE client_id = ? AND action = ? AND at >= ?",
                               (client_id, action, _iso(since))).fetchone()
        else:  # index audit_by_action: the window's entries, then their addresses
            row = conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = ? AND at >= ?"
                               " AND json_extract(details, '$.address') = ?", (action, _iso(since), address_hash)).fetchone()
        count: int = row[0]
        return count

    @staticmethod
    def unproven(conn: sqlite3.Connection, now: datetime) -> list[CertificateRow]:
        """Pending certificates none of whose proofs can still be used: their owner never answered."""
        rows = conn.execute(
            "SELECT * FROM directory_certificates c WHERE status = 'pending' AND NOT EXISTS ("
            " SELECT 1 FROM directory_proofs p WHERE p.certificate_id = c.id AND p.used_at IS NULL"
            " AND p.expires_at > ?) ORDER BY id", (_iso(now),))
        return [CertificateRow.from_row(row) for row in rows]


def _proof(row: sqlite3.Row) -> ProofRow:
    return ProofRow(row["id"], row["certificate_id"], row["purpose"], datetime.fromisoformat(row["expires_at"]),
                    row["attempts"], row["used_at"] is not None)
