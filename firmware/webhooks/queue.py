"""The durable webhook queue: SQLite table webhook_outbox (schema in firmware/store/db.py).

An event is queued by `enqueue` inside the caller's own write transaction, the one that makes the
state change and appends its audit entry: a change is never recorded without its event, nor an
event sent for a change that was rolled back. From then on it survives kill -9 and power cuts
(synchronous=FULL). Any process may deliver, as with the mail outbox: claims, leases and backoff
are the shared durable outbox's (firmware/store/queue.py), whose lease token keeps a sender whose
lease was taken over from overwriting the newer sender's outcome.

Delivery is at least once: a sender killed after the receiver got the request but before it
recorded the 2xx leaves the event to be sent again when its lease runs out, with the same event id
and the same body, which is what receivers dedupe on.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import WebhookSettings
from ..store import Database, audit, immediate
from ..store.queue import FAILED, QUEUED, SENDING, LeasedQueue, backoff_s

__all__ = ["DELIVERED", "FAILED", "QUEUED", "SENDING", "Claimed", "WebhookQueue", "WebhookStatus", "enqueue"]

DELIVERED = "delivered"
_MAX_ERROR = 500  # characters of an error kept in last_error and the audit entry


def enqueue(conn: sqlite3.Connection, url: str, secret: bytes, event: str, payload: dict[str, Any]) -> str:
    """Queue event ``event`` with ``payload`` for ``url`` (checked by `check_webhook_url` when it was
    given), signed with ``secret``; runs inside the caller's `immediate()` transaction. Returns the
    event id, the body's "id" and the Esignbox-Event-Id header."""
    event_id = uuid.uuid4().hex
    created_at = audit.now()
    body = json.dumps({"id": event_id, "type": event, "created_at": created_at, "data": payload},
                      separators=(",", ":"), sort_keys=True).encode()
    conn.execute("INSERT INTO webhook_outbox(id, type, url, secret, body, status, next_attempt, created_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (event_id, event, url, secret, body, QUEUED, time.time(), created_at))
    return event_id


@dataclass(frozen=True)
class Claimed:
    """An event a sender holds the lease on, for its ``attempt``-th attempt."""

    id: str
    type: str
    url: str
    secret: bytes
    body: bytes
    attempt: int

    @property
    def host(self) -> str:
        """What the audit log names of the URL: its host (paths may carry the business system's tokens)."""
        return urlsplit(self.url).hostname or ""


@dataclass(frozen=True)
class WebhookStatus:
    id: str
    type: str
    status: str  # queued, sending, delivered, failed
    attempts: int
    created_at: str
    delivered_at: str | None
    last_error: str | None


class WebhookQueue:
    """Claiming due events and recording what became of them, each in one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue = LeasedQueue(db, "webhook_outbox")

    def status(self, event_id: str) -> WebhookStatus | None:
        row = self._db.connect().execute(
            "SELECT id, type, status, attempts, created_at, delivered_at, last_error FROM webhook_outbox WHERE id = ?",
            (event_id,)).fetchone()
        return None if row is None else WebhookStatus(*row)

    def claim(self, lease_s: float, now: float) -> Claimed | None:
        """Take the next due event (or one whose sender's lease ran out) until ``now + lease_s``."""
        lease = self._queue.claim(lease_s, now)
        if lease is None:
            return None
        row = lease.row
        return Claimed(row["id"], row["type"], row["url"], bytes(row["secret"]), bytes(row["body"]), lease.attempt)

    def delivered(self, item: Claimed) -> bool:
        """Record the receiver's 2xx; False if another sender took the event over meanwhile."""
        conn = self._db.connect()
        with immediate(conn):
            if not self._queue.succeeded(conn, item.id, item.attempt, DELIVERED, audit.now()):
                return False
            self._audit(conn, item, "webhook.delivered", None)
        return True

    def retry_or_fail(self, item: Claimed, error: str, settings: WebhookSettings, now: float) -> bool:
        """Put the event back with its backoff, or give it up after ``max_attempts``; True if it will
        be tried again."""
        error = error[:_MAX_ERROR]
        conn = self._db.connect()
        with immediate(conn):
            if item.attempt >= settings.max_attempts:
                if self._queue.failed(conn, item.id, item.attempt, error):
                    self._audit(conn, item, "webhook.failed", error)
                return False
            delay = backoff_s(item.attempt, settings.retry_seconds, settings.max_retry_seconds)
            self._queue.retry(conn, item.id, item.attempt, error, now + delay)
            return True

    @staticmethod
    def _audit(conn: sqlite3.Connection, item: Claimed, action: str, error: str | None) -> None:
        details: dict[str, object] = {"id": item.id, "type": item.type, "host": item.host, "attempts": item.attempt}
        if error is not None:
            details["error"] = error
        audit.append(conn, [audit.AuditEntry("box", action, None, details)])
