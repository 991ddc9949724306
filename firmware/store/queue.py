"""A durable outbox in SQLite: the claim, lease and backoff both outboxes share (mail_outbox for
firmware/mail/outbox.py, webhook_outbox for firmware/webhooks/queue.py; schemas in store/db.py).

Any process may deliver. A sender claims a due row in a write transaction: status "sending", a
lease until a deadline, and the attempt counter raised by one. The attempt number is the lease's
token: the outcome is written only while the row is still "sending" with that number, so a sender
whose lease ran out and was taken over (after a crash, or a receiver slower than the lease) cannot
overwrite the newer sender's outcome. A row whose sender's lease ran out is due again. Waits grow
exponentially (`backoff_s`). An ended row drops its content (message, secret): only what the
status report and the audit log need stays.

Table and column names are SQL identifiers, which cannot be bound as parameters: they come from
the fixed table below, never from a caller's string.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .db import Database, immediate

__all__ = ["FAILED", "QUEUED", "SENDING", "Lease", "LeasedQueue", "backoff_s"]

QUEUED, SENDING, FAILED = "queued", "sending", "failed"


@dataclass(frozen=True)
class _Table:
    ended_at: str  # the column of the successful end's time
    content: tuple[str, ...]  # columns dropped when a row ends


_TABLES = {
    "mail_outbox": _Table("sent_at", ("recipient", "message")),
    "webhook_outbox": _Table("delivered_at", ("secret", "body")),
}


@dataclass(frozen=True)
class Lease:
    """A claimed row (every column, as it was before the claim) and the attempt it is claimed for:
    the id and attempt are what ending it needs."""

    row: sqlite3.Row
    attempt: int


def backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): ``first_s``, doubled each time, at most ``max_s``."""
    return min(first_s * 2.0 ** (attempt - 1), max_s)


class LeasedQueue:
    """Claiming due rows of one outbox table and ending them, each under the claim's lease."""

    def __init__(self, db: Database, table: str) -> None:
        if table not in _TABLES:
            raise ValueError(f"not an outbox table: {table!r}")
        self._db = db
        self._table = table
        self._spec = _TABLES[table]

    def claim(self, lease_s: float, now: float) -> Lease | None:
        """Take the next due row (or one whose sender's lease ran out) until ``now + lease_s``."""
        conn = self._db.connect()
        with immediate(conn):
            row = conn.execute(
                f"SELECT * FROM {self._table} WHERE (status = ? AND next_attempt <= ?)"
                " OR (status = ? AND lease_until <= ?) ORDER BY next_attempt LIMIT 1",
                (QUEUED, now, SENDING, now)).fetchone()
            if row is None:
                return None
            conn.execute(f"UPDATE {self._table} SET status = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                         (SENDING, now + lease_s, row["id"]))
        return Lease(row, row["attempts"] + 1)

    # Ending a claim: inside the caller's transaction (with its audit entry), for row ``row_id``
    # claimed for ``attempt``; each returns False, changing nothing, if the lease is no longer ours.

    def succeeded(self, conn: sqlite3.Connection, row_id: str, attempt: int, status: str, at: str) -> bool:
        """End the row as ``status`` (sent, delivered) at ``at``."""
        return self._end(conn, row_id, attempt, f"status = ?, {self._spec.ended_at} = ?, last_error = NULL",
                         (status, at))

    def failed(self, conn: sqlite3.Connection, row_id: str, attempt: int, error: str) -> bool:
        """Give the row up with ``error``."""
        return self._end(conn, row_id, attempt, "status = ?, last_error = ?", (FAILED, error))

    def retry(self, conn: sqlite3.Connection, row_id: str, attempt: int, error: str, next_attempt: float) -> bool:
        """Put the row back, due at ``next_attempt``."""
        cursor = conn.execute(
            f"UPDATE {self._table} SET status = ?, lease_until = NULL, next_attempt = ?, last_error = ?"
            " WHERE id = ? AND status = ? AND attempts = ?", (QUEUED, next_attempt, error, row_id, SENDING, attempt))
        return cursor.rowcount == 1

    def _end(self, conn: sqlite3.Connection, row_id: str, attempt: int, assignments: str,
             values: tuple[str | None, ...]) -> bool:
        dropped = "".join(f", {column} = NULL" for column in self._spec.content)
        cursor = conn.execute(
            f"UPDATE {self._table} SET {assignments}, lease_until = NULL{dropped}"
            " WHERE id = ? AND status = ? AND attempts = ?", (*values, row_id, SENDING, attempt))
        return cursor.rowcount == 1
