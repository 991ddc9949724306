"""Refusals of callers without a valid API key: counted, not logged one by one.

Anyone who reaches the port can send a wrong key. When each refusal was its own fsynced,
hash-chained entry, 2,000 such requests wrote 2,000 entries in about a second, and a full
disk stops signing. Per peer, error and window (a minute by default) the first refusal is
still its own entry, so the log shows at once that something started failing; the others are
counted in SQLite (shared by every worker process) with one UPSERT on a connection that does
not wait for the disk: synchronous=NORMAL may lose the last counts in a power cut, never an
entry of the chain. Once the window has closed, its count becomes ONE summary entry, written
by the ledger's next commit. A window holds at most MAX_PEERS peers; refusals from further
peers are counted under peer "*", so the entries per window stay bounded whatever the range of
addresses a flood comes from.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from .audit import AuditEntry
from .db import open_connection
from .storage import full_error

SUMMARY = "refusal.summary"  # the audit action of a window's count
MAX_PEERS = 64

# Seconds since the epoch by SQLite's clock, read under the write lock: a refusal counted after a
# window was summarised can only fall into a later window, never revive the summarised one.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_COUNT = f"""
WITH clock(now) AS (SELECT {_NOW}),
     slot(start, now) AS (SELECT :window * CAST(now / :window AS INTEGER), now FROM clock)
INSERT INTO refusal_counts(window_start, window_end, peer, error, status, refusals, first_at, last_at)
SELECT start, start + :window,
       CASE WHEN EXISTS (SELECT 1 FROM refusal_counts WHERE window_start = start AND peer = :peer AND error = :error)
              OR (SELECT COUNT(DISTINCT peer) FROM refusal_counts WHERE window_start = start) < :max_peers
            THEN :peer ELSE '*' END,
       :error, :status, :counted, CASE WHEN :counted THEN now END, now
FROM slot WHERE true
ON CONFLICT (window_start, peer, error) DO UPDATE
    SET refusals = refusals + 1, first_at = coalesce(first_at, excluded.last_at), last_at = excluded.last_at
RETURNING refusals
"""


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


class RefusalCounter:
    def __init__(self, database: Path, window_s: float) -> None:
        self._database = database
        self.window_s = window_s
        self._local = threading.local()

    def count(self, peer: str, error: str, status: int, only_count: bool = False) -> bool:
        """Count one refusal; True if it must also get its own entry (its window's first).

        ``only_count``: count even the first (the disk budget is spent). Raises StorageFull.
        """
        params = {"window": self.window_s, "peer": peer or "?", "error": error, "status": status,
                  "counted": int(only_count), "max_peers": MAX_PEERS}
        try:
            return bool(self._connection().execute(_COUNT, params).fetchone()[0] == 0)
        except sqlite3.Error as exc:
            raise full_error(exc) from exc

    def summaries(self, conn: sqlite3.Connection) -> list[AuditEntry]:
        """Inside the caller's write transaction: closed windows' counts as entries, taken off the counters."""
        rows = conn.execute(f"DELETE FROM refusal_counts WHERE window_end <= {_NOW} RETURNING *").fetchall()
        return [
            AuditEntry("anonymous", SUMMARY, None, {
                "peer": row["peer"], "error": row["error"], "status": row["status"], "refusals": row["refusals"],
                "first_at": _iso(row["first_at"]), "last_at": _iso(row["last_at"]),
                "window_start": _iso(row["window_start"]), "window_end": _iso(row["window_end"]),
            })
            for row in sorted(rows, key=lambda r: (r["window_start"], r["peer"], r["error"]))
            if row["refusals"]
        ]

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_connection(self._database)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn


def refused_since(conn: sqlite3.Connection, since: str) -> int:
    """Refusals since ``since`` (ISO date or time, UTC if it names no zone): own entries, summaries'
    counts, and counts not yet summarised."""
    moment = datetime.fromisoformat(since)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    total: int = conn.execute(
        "SELECT (SELECT COUNT(*) FROM audit_log WHERE action = 'refusal' AND at >= :since)"
        " + (SELECT coalesce(SUM(json_extract(details, '$.refusals')), 0) FROM audit_log"
        "    WHERE action = :summary AND at >= :since)"
        " + (SELECT coalesce(SUM(refusals), 0) FROM refusal_counts WHERE window_end >= :epoch)",
        {"since": since, "summary": SUMMARY, "epoch": moment.timestamp()},
    ).fetchone()[0]
    return total
