"""Anchoring the audit chain's head with an RFC 3161 timestamp.

A hash chain proves that no entry was edited or removed from the middle; it cannot prove that
the newest entries were not cut off. A timestamp over the head, kept in the chain and
verifiable by anyone with the TSA's certificate, fixes the chain's length at that time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
from typing import TYPE_CHECKING

from asn1crypto import cms, tsp  # noqa: F401  tsp registers TSTInfo, which a token's content parses as

from .store import audit
from .store.db import Database, immediate

if TYPE_CHECKING:  # pyHanko's TSA client: only `anchor` needs one, handed in by its caller
    from .signing.timestamps import FallbackTimeStamper

log = logging.getLogger(__name__)


def anchor(db: Database, timestamper: FallbackTimeStamper) -> int | None:
    """Timestamp the current head and append it as an "anchor" entry; None if nothing new."""
    conn = db.connect()
    seq, head_hash = audit.head(conn)
    if seq == 0 or _is_anchor(conn, seq):
        return None
    token = asyncio.run(timestamper.async_timestamp(bytes.fromhex(head_hash), "sha256"))
    details = {"head_seq": seq, "head_hash": head_hash, "timestamp_token": base64.b64encode(token.dump()).decode()}
    with immediate(conn):
        anchored = audit.append(conn, [audit.AuditEntry("box", "anchor", None, details)])
    return anchored


def _is_anchor(conn: sqlite3.Connection, seq: int) -> bool:
    row = conn.execute("SELECT action FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return row is not None and row[0] == "anchor"


def check_anchors(db: Database) -> list[str]:
    """Problems with anchor entries: a token whose imprint is not the hash it claims to cover."""
    problems = []
    conn = db.connect()
    for row in conn.execute("SELECT seq, details FROM audit_log WHERE action = 'anchor' ORDER BY seq"):
        details = json.loads(row["details"])
        token = cms.ContentInfo.load(base64.b64decode(details["timestamp_token"]))
        imprint = token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native
        covered = conn.execute("SELECT entry_hash FROM audit_log WHERE seq = ?", (details["head_seq"],)).fetchone()
        if imprint.hex() != details["head_hash"] or covered is None or covered[0] != details["head_hash"]:
            problems.append(f"anchor {row['seq']} does not match entry {details['head_seq']}")
    return problems


def anchor_and_log(db: Database, timestamper: FallbackTimeStamper) -> None:
    """One round of periodic anchoring (firmware/periodic.py runs it while the box serves)."""
    anchored = anchor(db, timestamper)
    if anchored:
        log.info("audit chain anchored at entry %d", anchored)
