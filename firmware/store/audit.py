"""The tamper-evident audit log: every entry commits to the one before it.

entry_hash = SHA-256(prev_hash ‖ canonical JSON of the entry). Editing a row breaks its own
hash; deleting a row breaks the next row's link. Deleting the newest rows leaves a valid but
shorter chain, which is why the head is periodically anchored with an RFC 3161 timestamp (an
"anchor" entry): a verifier holding a later anchor sees the truncation.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .db import immediate

GENESIS = "0" * 64


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditEntry:
    actor: str  # "client:<id>", "admin:<name>", "operator" (command line), "box"
    action: str  # "signature", "refusal", "client.add", "key.generate", "anchor", ...
    client_id: str | None
    details: dict[str, Any]


def _canonical(entry: AuditEntry, seq: int, at: str) -> str:
    return json.dumps(
        {"seq": seq, "at": at, "actor": entry.actor, "action": entry.action,
         "client_id": entry.client_id, "details": entry.details},
        sort_keys=True, separators=(",", ":"),
    )


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def append(conn: sqlite3.Connection, entries: list[AuditEntry]) -> int:
    """Append inside the caller's `immediate()` transaction, so the change and its record are one.

    Returns the sequence number of the last entry.
    """
    seq, prev = head(conn)
    at = now()
    rows = []
    for entry in entries:
        seq += 1
        canonical = _canonical(entry, seq, at)
        digest = chain_hash(prev, canonical)
        rows.append((seq, at, entry.actor, entry.action, entry.client_id,
                     json.dumps(entry.details, sort_keys=True, separators=(",", ":")), prev, digest))
        prev = digest
    conn.executemany(
        "INSERT INTO audit_log(seq, at, actor, action, client_id, details, prev_hash, entry_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return seq


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    problem: str | None = None


def record(conn: sqlite3.Connection, entry: AuditEntry) -> int:
    """Append one entry in a transaction of its own (for a change made outside this database)."""
    with immediate(conn):
        return append(conn, [entry])


def verify(conn: sqlite3.Connection) -> ChainReport:
    """Walk the whole chain; report the first row that does not follow from its predecessor."""
    prev, expected_seq, checked = GENESIS, 1, 0
    for row in conn.execute("SELECT * FROM audit_log ORDER BY seq"):
        if row["seq"] != expected_seq:
            return ChainReport(False, checked, expected_seq - 1, prev, f"entry {expected_seq} is missing")
        if row["prev_hash"] != prev:
            return ChainReport(False, checked, row["seq"], prev, f"entry {row['seq']} does not link to its predecessor")
        entry = AuditEntry(row["actor"], row["action"], row["client_id"], json.loads(row["details"]))
        if chain_hash(prev, _canonical(entry, row["seq"], row["at"])) != row["entry_hash"]:
            return ChainReport(False, checked, row["seq"], prev, f"entry {row['seq']} was altered")
        prev, expected_seq, checked = row["entry_hash"], expected_seq + 1, checked + 1
    return ChainReport(True, checked, expected_seq - 1, prev)


def export(conn: sqlite3.Connection, after_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Entries as plain dicts (JSON lines for auditors), oldest first."""
    for row in conn.execute("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq", (after_seq,)):
        item = dict(row)
        item["details"] = json.loads(item["details"])
        yield item
