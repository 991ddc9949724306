"""The envelopes' tables in box.db: contracts, their parties and fields, every released revision of
the document, and the event trail the completion certificate is made from.

Plain SQL, no rules: the service decides, this module reads and writes rows inside the caller's
transaction. Every revision is kept (a few PDFs per envelope), so "the document as party 2 signed
it" can always be shown, and a crash mid-envelope loses nothing that was released.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime
from typing import Any

from ..store.db import Database
from .model import Contract, Field, Party, PartyStatus

__all__ = ["SCHEMA", "ContractStore", "Event"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS contracts (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    title           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'declined', 'cancelled', 'expired')),
    org_signature   TEXT NOT NULL CHECK (org_signature IN ('none', 'first', 'last')),
    created_at      TEXT NOT NULL,     -- ISO 8601 UTC
    expires_at      TEXT NOT NULL,
    ended_at        TEXT,
    end_reason      TEXT,
    original_sha256 TEXT NOT NULL,
    revision        INTEGER NOT NULL,  -- the newest row of contract_documents
    webhook_url     TEXT,
    webhook_secret  BLOB,              -- HMAC key of this envelope's webhooks, shown once at creation
    reminder_days   INTEGER            -- remind parties who have not acted after this many days
);
CREATE INDEX IF NOT EXISTS contracts_by_status ON contracts(status, expires_at);
CREATE INDEX IF NOT EXISTS contracts_by_client ON contracts(client_id, created_at);
CREATE TABLE IF NOT EXISTS contract_documents (
    contract_id TEXT NOT NULL REFERENCES contracts(id),
    revision    INTEGER NOT NULL,      -- 0: the original as received
    kind        TEXT NOT NULL,         -- original, prepared, party, organisation, final, completion
    pdf         BLOB NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (contract_id, revision)
);
CREATE TABLE IF NOT EXISTS contract_parties (
    contract_id     TEXT NOT NULL REFERENCES contracts(id),
    id              TEXT NOT NULL,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,     -- normalised
    role            TEXT NOT NULL CHECK (role IN ('signer', 'approver', 'copy')),
    order_no        INTEGER NOT NULL,
    method          TEXT NOT NULL CHECK (method IN ('email', 'access_code', 'totp')),
    access_code_mac BLOB,              -- HMAC-SHA256 under secrets/contracts.key; never the code
    status          TEXT NOT NULL CHECK (status IN ('waiting', 'invited', 'validated', 'signed', 'declined',
                                                     'replaced', 'copy')),
    invite_hash     BLOB UNIQUE,       -- SHA-256 of the invitation link's token
    invite_expires  TEXT,
    code_id         TEXT,              -- the one-time code mailed for validation (otp_codes.id)
    attempts        INTEGER NOT NULL DEFAULT 0,  -- wrong access codes
    invited_at      TEXT,
    reminded_at     TEXT,
    validated_at    TEXT,
    signed_at       TEXT,
    note            TEXT,
    replaces        TEXT,
    PRIMARY KEY (contract_id, id)
);
CREATE TABLE IF NOT EXISTS contract_fields (
    contract_id TEXT NOT NULL REFERENCES contracts(id),
    party_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    page        INTEGER,
    box         TEXT,                  -- JSON [x1, y1, x2, y2] when the box adds the field
    kind        TEXT,                  -- signature (NULL in rows made before form fields), text, date, …
    required    INTEGER,
    label       TEXT,
    value       TEXT,                  -- what the party filled in, stored when it signed
    PRIMARY KEY (contract_id, name)
);
CREATE TABLE IF NOT EXISTS contract_events (
    seq         INTEGER PRIMARY KEY,
    contract_id TEXT NOT NULL REFERENCES contracts(id),
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,         -- client:<id>, party:<id>, box
    action      TEXT NOT NULL,         -- created, invited, validated, signed, declined, …
    party_id    TEXT,
    ip          TEXT,
    detail      TEXT NOT NULL          -- JSON
);
CREATE INDEX IF NOT EXISTS contract_events_by_contract ON contract_events(contract_id, seq);
"""


# Columns added after the first release of a table: (table, column, type).
_ADDED_COLUMNS = (("contracts", "reminder_days", "INTEGER"), ("contract_parties", "reminded_at", "TEXT"),
                  ("contract_fields", "kind", "TEXT"), ("contract_fields", "required", "INTEGER"),
                  ("contract_fields", "label", "TEXT"), ("contract_fields", "value", "TEXT"))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Event:
    """One line of an envelope's trail."""

    def __init__(self, row: sqlite3.Row) -> None:
        self.at = datetime.fromisoformat(row["at"])
        self.actor: str = row["actor"]
        self.action: str = row["action"]
        self.party_id: str | None = row["party_id"]
        self.ip: str | None = row["ip"]
        self.detail: dict[str, Any] = json.loads(row["detail"])


def _contract(row: sqlite3.Row) -> Contract:
    return Contract(row["id"], row["client_id"], row["title"], row["status"], row["org_signature"],
                    datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["expires_at"]),
                    _time(row["ended_at"]), row["end_reason"], row["original_sha256"], row["revision"],
                    row["webhook_url"], row["reminder_days"])


def _party(row: sqlite3.Row) -> Party:
    return Party(row["contract_id"], row["id"], row["name"], row["email"], row["role"], row["order_no"],
                 row["method"], row["status"], _time(row["invited_at"]), _time(row["validated_at"]),
                 _time(row["signed_at"]), row["note"], row["replaces"])


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ContractStore:
    def __init__(self, db: Database) -> None:
        conn = db.connect()
        conn.executescript(SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:  # tables made before the column existed
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @staticmethod
    def due_reminders(conn: sqlite3.Connection, now: datetime) -> list[Party]:
        """Invited parties of open envelopes with reminders whose last invitation or reminder is
        older than the envelope's ``reminder_days``."""
        rows = conn.execute(
            "SELECT p.* FROM contract_parties p JOIN contracts c ON c.id = p.contract_id"
            " WHERE c.status = 'in_progress' AND c.reminder_days IS NOT NULL AND p.status = 'invited'"
            " AND julianday(?) - julianday(COALESCE(p.reminded_at, p.invited_at)) >= c.reminder_days",
            (_iso(now),))
        return [_party(row) for row in rows]

    @staticmethod
    def reminded(conn: sqlite3.Connection, contract_id: str, party_id: str, now: datetime) -> None:
        conn.execute("UPDATE contract_parties SET reminded_at = ? WHERE contract_id = ? AND id = ?",
                     (_iso(now), contract_id, party_id))

    # -- contracts ----------------------------------------------------------------------------------

    @staticmethod
    def add_contract(conn: sqlite3.Connection, contract: Contract, webhook_secret: bytes | None) -> None:
        conn.execute(
            "INSERT INTO contracts(id, client_id, title, status, org_signature, created_at, expires_at,"
            " original_sha256, revision, webhook_url, webhook_secret, reminder_days)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (contract.id, contract.client_id, contract.title, contract.status, contract.org_signature,
             _iso(contract.created_at), _iso(contract.expires_at), contract.original_sha256, contract.revision,
             contract.webhook_url, webhook_secret, contract.reminder_days))

    @staticmethod
    def contract(conn: sqlite3.Connection, contract_id: str) -> Contract | None:
        row = conn.execute("SELECT * FROM contracts WHERE id = ?", (contract_id,)).fetchone()
        return _contract(row) if row else None

    @staticmethod
    def webhook(conn: sqlite3.Connection, contract_id: str) -> tuple[str, bytes] | None:
        row = conn.execute("SELECT webhook_url, webhook_secret FROM contracts WHERE id = ?", (contract_id,)).fetchone()
        return (row[0], bytes(row[1])) if row and row[0] else None

    @staticmethod
    def end(conn: sqlite3.Connection, contract_id: str, status: str, reason: str, now: datetime) -> None:
        """End the envelope; the parties' links keep working, to show why (they can do nothing more)."""
        conn.execute("UPDATE contracts SET status = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                     (status, _iso(now), reason, contract_id))

    @staticmethod
    def overdue(conn: sqlite3.Connection, now: datetime) -> list[str]:
        rows = conn.execute("SELECT id FROM contracts WHERE status = 'in_progress' AND expires_at <= ?", (_iso(now),))
        return [row[0] for row in rows]

    @staticmethod
    def listing(conn: sqlite3.Connection, status: str | None, client_id: str | None, limit: int) -> list[Contract]:
        query, args = "SELECT * FROM contracts WHERE 1 = 1", list[str]()
        if status:
            query, args = query + " AND status = ?", [*args, status]
        if client_id:
            query, args = query + " AND client_id = ?", [*args, client_id]
        rows = conn.execute(query + " ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [_contract(row) for row in rows]

    # -- documents ----------------------------------------------------------------------------------

    @staticmethod
    def add_document(conn: sqlite3.Connection, contract_id: str, revision: int, kind: str, pdf: bytes,
                     now: datetime) -> str:
        digest = hashlib.sha256(pdf).hexdigest()
        conn.execute("INSERT INTO contract_documents(contract_id, revision, kind, pdf, sha256, created_at)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (contract_id, revision, kind, pdf, digest, _iso(now)))
        conn.execute("UPDATE contracts SET revision = ? WHERE id = ? AND revision < ?", (revision, contract_id, revision))
        return digest

    @staticmethod
    def document(conn: sqlite3.Connection, contract_id: str, kind: str | None = None) -> tuple[int, bytes, str]:
        """The newest revision (of ``kind``, if given): number, PDF, SHA-256."""
        query = "SELECT revision, pdf, sha256 FROM contract_documents WHERE contract_id = ?"
        args: tuple[str, ...] = (contract_id,)
        if kind is not None:
            query, args = query + " AND kind = ?", (contract_id, kind)
        row = conn.execute(query + " ORDER BY revision DESC LIMIT 1", args).fetchone()
        if row is None:
            raise LookupError(f"contract {contract_id} has no {kind or ''} document")
        return row[0], bytes(row[1]), row[2]

    # -- parties and fields ---------------------------------------------------------------------------

    @staticmethod
    def add_party(conn: sqlite3.Connection, party: Party, access_code_mac: bytes | None) -> None:
        conn.execute(
            "INSERT INTO contract_parties(contract_id, id, name, email, role, order_no, method, access_code_mac,"
            " status, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (party.contract_id, party.id, party.name, party.email, party.role, party.order, party.method,
             access_code_mac, party.status, party.replaces))

    @staticmethod
    def parties(conn: sqlite3.Connection, contract_id: str) -> list[Party]:
        rows = conn.execute("SELECT * FROM contract_parties WHERE contract_id = ? ORDER BY order_no, rowid",
                            (contract_id,))
        return [_party(row) for row in rows]

    @staticmethod
    def party(conn: sqlite3.Connection, contract_id: str, party_id: str) -> Party | None:
        row = conn.execute("SELECT * FROM contract_parties WHERE contract_id = ? AND id = ?",
                           (contract_id, party_id)).fetchone()
        return _party(row) if row else None

    @staticmethod
    def party_by_invite(conn: sqlite3.Connection, token: str, now: datetime) -> Party | None:
        row = conn.execute("SELECT * FROM contract_parties WHERE invite_hash = ? AND invite_expires > ?",
                           (token_hash(token), _iso(now))).fetchone()
        return _party(row) if row else None

    @staticmethod
    def secrets_of(conn: sqlite3.Connection, contract_id: str, party_id: str) -> sqlite3.Row:
        row: sqlite3.Row = conn.execute(
            "SELECT access_code_mac, code_id, attempts FROM contract_parties WHERE contract_id = ? AND id = ?",
            (contract_id, party_id)).fetchone()
        return row

    @staticmethod
    def set_status(conn: sqlite3.Connection, contract_id: str, party_id: str, status: PartyStatus, now: datetime,
                   note: str | None = None) -> None:
        column = {"validated": "validated_at", "signed": "signed_at"}.get(status)
        conn.execute("UPDATE contract_parties SET status = ?, note = COALESCE(?, note)"
                     + (f", {column} = ?" if column else "") + " WHERE contract_id = ? AND id = ?",
                     (status, note, *([_iso(now)] if column else []), contract_id, party_id))

    @staticmethod
    def invite(conn: sqlite3.Connection, contract_id: str, party_id: str, token: str, expires: datetime,
               now: datetime) -> None:
        """A new invitation link for the party; an older one stops working."""
        conn.execute("UPDATE contract_parties SET status = CASE WHEN status = 'waiting' THEN 'invited' ELSE status END,"
                     " invite_hash = ?, invite_expires = ?, invited_at = COALESCE(invited_at, ?)"
                     " WHERE contract_id = ? AND id = ?",
                     (token_hash(token), _iso(expires), _iso(now), contract_id, party_id))

    @staticmethod
    def set_code(conn: sqlite3.Connection, contract_id: str, party_id: str, code_id: str | None) -> None:
        conn.execute("UPDATE contract_parties SET code_id = ? WHERE contract_id = ? AND id = ?",
                     (code_id, contract_id, party_id))

    @staticmethod
    def count_attempt(conn: sqlite3.Connection, contract_id: str, party_id: str) -> int:
        conn.execute("UPDATE contract_parties SET attempts = attempts + 1 WHERE contract_id = ? AND id = ?",
                     (contract_id, party_id))
        attempts: int = conn.execute("SELECT attempts FROM contract_parties WHERE contract_id = ? AND id = ?",
                                     (contract_id, party_id)).fetchone()[0]
        return attempts

    @staticmethod
    def add_field(conn: sqlite3.Connection, contract_id: str, field: Field) -> None:
        conn.execute("INSERT INTO contract_fields(contract_id, party_id, name, page, box, kind, required, label)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (contract_id, field.party_id, field.name, field.page,
                      json.dumps(list(field.box)) if field.box else None, field.kind, int(field.required), field.label))

    @staticmethod
    def fields(conn: sqlite3.Connection, contract_id: str) -> list[Field]:
        rows = conn.execute("SELECT * FROM contract_fields WHERE contract_id = ? ORDER BY rowid", (contract_id,))
        return [Field(row["party_id"], row["name"], row["page"], tuple(json.loads(row["box"])) if row["box"] else None,
                      row["kind"] or "signature", row["required"] is None or bool(row["required"]), row["label"],
                      row["value"])
                for row in rows]

    @staticmethod
    def set_values(conn: sqlite3.Connection, contract_id: str, values: dict[str, str]) -> None:
        """What a party filled into its form fields, by field name."""
        conn.executemany("UPDATE contract_fields SET value = ? WHERE contract_id = ? AND name = ?",
                         [(value, contract_id, name) for name, value in values.items()])

    @staticmethod
    def move_fields(conn: sqlite3.Connection, contract_id: str, from_party: str, to_party: str) -> None:
        conn.execute("UPDATE contract_fields SET party_id = ? WHERE contract_id = ? AND party_id = ?",
                     (to_party, contract_id, from_party))

    # -- events ---------------------------------------------------------------------------------------

    @staticmethod
    def add_event(conn: sqlite3.Connection, contract_id: str, now: datetime, actor: str, action: str,
                  party_id: str | None, ip: str | None, detail: dict[str, Any]) -> None:
        conn.execute("INSERT INTO contract_events(contract_id, at, actor, action, party_id, ip, detail)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (contract_id, _iso(now), actor, action, party_id, ip, json.dumps(detail, sort_keys=True)))

    @staticmethod
    def events(conn: sqlite3.Connection, contract_id: str) -> list[Event]:
        rows = conn.execute("SELECT * FROM contract_events WHERE contract_id = ? ORDER BY seq", (contract_id,))
        return [Event(row) for row in rows]
