"""The durable mail queue: SQLite (table mail_outbox), delivered to the relay by smtplib.

A message is queued in the transaction that charges the client and appends its "mail" audit entry,
so an accepted message is a recorded and paid one, and synchronous=FULL makes it survive a power
cut or kill -9 from the moment POST /v1/mail answers. Any process may deliver: a sender claims a
due message (status "sending", a lease: the shared durable outbox, firmware/store/queue.py), hands
it to the relay, and marks it sent — with its "mail.sent" audit entry — right after the relay's 250
reply to DATA.

Exactly once, and where it is not: a sender killed while it holds a lease leaves the message
"sending"; when the lease runs out another sender (or the same box after a restart) sends it again.
If the relay had not yet answered the end of DATA, the relay dropped the transaction (RFC 5321
§4.1.1.4) and nothing was delivered, so that is no duplicate. It is one only when the crash falls
between the relay's 250 and the commit of "sent" — one reply's travel plus one SQLite commit, a few
milliseconds — or when the connection drops after the relay queued the data but before its 250
reached the box (SMTP's own window, RFC 1047). The Message-ID is the same on every attempt, so a
duplicate is recognisable as one.

A relay outage (connection refused, timeout, 4xx) retries with exponential backoff up to
``max_attempts``; a 5xx to MAIL, RCPT or DATA gives up at once. Either end is audited.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import sqlite3
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..store import audit, metering
from ..store.db import Database, immediate
from ..store.queue import QUEUED, LeasedQueue, backoff_s

log = logging.getLogger(__name__)

SENT = "sent"
BOX = "box"  # the client and audit actor of the box's own messages (proofs of mailbox control)


def address_hash(address: str) -> str:
    """What the audit log and the outbox keep of an address once it is not needed: SHA-256 of it, normalised."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


@dataclass(frozen=True)
class RelaySettings:
    host: str
    port: int = 25
    starttls: bool = True
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # the relay's CA for STARTTLS; None: the system's
    timeout_s: float = 30.0
    max_attempts: int = 8
    backoff_s: float = 30.0  # the first retry's delay; doubled each time
    max_backoff_s: float = 3600.0
    # How long a claimed message is left to its sender before another may take it over: well past
    # one SMTP transaction's timeouts, or a slow relay could get the message twice.
    lease_s: float = 300.0

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text().strip()


@dataclass(frozen=True)
class Queued:
    id: str
    client_id: str
    message_id: str
    address_hash: str
    recipient: str
    sender: str
    message: bytes
    encrypted: bool
    attempt: int  # the lease's token (firmware/store/queue.py)


@dataclass(frozen=True)
class MailStatus:
    id: str
    status: str  # queued, sending, sent, failed
    encrypted: bool
    attempts: int
    created_at: str
    sent_at: str | None
    last_error: str | None


class MailUnavailable(Exception):
    """The box sends no mail: no relay is configured ([mail] relay_host)."""


class TemporaryFailure(Exception):
    """The relay could not take the message now; try again later."""


class PermanentFailure(Exception):
    """The relay refused the message for good (5xx)."""


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue = LeasedQueue(db, "mail_outbox")
        self.wakeup = threading.Event()  # set when a message is queued, so a sender in this process goes at once

    def enqueue(self, client_id: str | None, sender: str, recipient: str, message_id: str, message: bytes,
                encrypted: bool) -> str:
        """Queue ``message``, charge the client one call and audit it, all in one transaction;
        raises metering.Refusal (nothing queued) if the client is over quota or rate. The box's own
        messages (``client_id`` None: a proof of mailbox control) are audited as the box's, uncharged."""
        outbox_id = uuid.uuid4().hex
        hashed = address_hash(recipient)
        conn = self._db.connect()
        with immediate(conn):
            if client_id is not None:
                metering.charge(conn, client_id, 1)
            conn.execute(
                "INSERT INTO mail_outbox(id, client_id, message_id, address_hash, recipient, sender, message,"
                " encrypted, status, next_attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (outbox_id, client_id or BOX, message_id, hashed, recipient, sender, message, int(encrypted), QUEUED,
                 time.time(), audit.now()),
            )
            audit.append(conn, [audit.AuditEntry(f"client:{client_id}" if client_id else BOX,
                                                 "mail" if client_id else "mail.box", client_id, {
                "kind": "mail", "id": outbox_id, "message_id": message_id, "address_hash": hashed,
                "encrypted": encrypted})])
        self.wakeup.set()
        return outbox_id

    def status(self, outbox_id: str, client_id: str) -> MailStatus | None:
        """The message's state, for the client that sent it only."""
        row = self._db.connect().execute(
            "SELECT id, status, encrypted, attempts, created_at, sent_at, last_error FROM mail_outbox"
            " WHERE id = ? AND client_id = ?", (outbox_id, client_id)).fetchone()
        if row is None:
            return None
        return MailStatus(row["id"], row["status"], bool(row["encrypted"]), row["attempts"], row["created_at"],
                          row["sent_at"], row["last_error"])

    def claim(self, lease_s: float, now: float | None = None) -> Queued | None:
        """Take the next due message (or one whose sender's lease ran out) for ``lease_s`` seconds."""
        lease = self._queue.claim(lease_s, time.time() if now is None else now)
        if lease is None:
            return None
        row = lease.row
        return Queued(row["id"], row["client_id"], row["message_id"], row["address_hash"], row["recipient"],
                      row["sender"], bytes(row["message"]), bool(row["encrypted"]), lease.attempt)

    def sent(self, item: Queued) -> bool:
        """Record the relay's 250; False if another sender took the message over meanwhile."""
        conn = self._db.connect()
        with immediate(conn):
            if not self._queue.succeeded(conn, item.id, item.attempt, SENT, audit.now()):
                return False
            self._audit(conn, item, "mail.sent", None)
        return True

    def retry_or_fail(self, item: Queued, error: str, permanent: bool, relay: RelaySettings) -> bool:
        """Put the message back with its backoff, or give up on it; True if it will be tried again."""
        conn = self._db.connect()
        with immediate(conn):
            if permanent or item.attempt >= relay.max_attempts:
                if self._queue.failed(conn, item.id, item.attempt, error):
                    self._audit(conn, item, "mail.failed", error)
                return False
            delay = backoff_s(item.attempt, relay.backoff_s, relay.max_backoff_s)
            self._queue.retry(conn, item.id, item.attempt, error, time.time() + delay)
            return True

    @staticmethod
    def _audit(conn: sqlite3.Connection, item: Queued, action: str, error: str | None) -> None:
        details: dict[str, object] = {"id": item.id, "message_id": item.message_id, "address_hash": item.address_hash}
        if error is not None:
            details["error"] = error
        audit.append(conn, [audit.AuditEntry("box", action, item.client_id, details)])


def relay_send(relay: RelaySettings, sender: str, recipient: str, message: bytes) -> None:
    """One SMTP transaction; returns once the relay answered 250 to DATA, else raises
    TemporaryFailure or PermanentFailure."""
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_s) as smtp:
            smtp.ehlo()
            if relay.starttls:
                smtp.starttls(context=ssl.create_default_context(
                    cafile=str(relay.ca_file) if relay.ca_file else None))
                smtp.ehlo()
            password = relay.password()
            if relay.username and password is not None:
                smtp.login(relay.username, password)
            smtp.sendmail(sender, [recipient], message)  # one recipient: it was accepted, or this raised
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        raise (PermanentFailure if code >= 500 else TemporaryFailure)(f"RCPT refused: {code} {_text(text)}") from exc
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        failure = PermanentFailure if exc.smtp_code >= 500 else TemporaryFailure
        raise failure(f"relay refused: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # outage, timeout, TLS or authentication trouble
        raise TemporaryFailure(f"relay unavailable: {exc}") from exc


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class OutboxSender:
    """Delivers due messages: ``deliver_due`` once, or a daemon thread that polls every ``poll_s``
    seconds and at once when this process queues a message."""

    def __init__(self, outbox: Outbox, relay: RelaySettings, poll_s: float = 5.0) -> None:
        self._outbox = outbox
        self._relay = relay
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mail-sender", daemon=True)

    def deliver_due(self) -> int:
        """Send every message due now; the number of delivery attempts made."""
        attempts = 0
        while (item := self._outbox.claim(self._relay.lease_s)) is not None:
            attempts += 1
            try:
                relay_send(self._relay, item.sender, item.recipient, item.message)
            except (TemporaryFailure, PermanentFailure) as exc:
                again = self._outbox.retry_or_fail(item, str(exc), isinstance(exc, PermanentFailure), self._relay)
                log.warning("mail %s not delivered (%s): %s", item.id, "will retry" if again else "given up", exc)
                if again and isinstance(exc, TemporaryFailure):
                    break  # the relay is down: the others wait for their own turn
                continue
            if not self._outbox.sent(item):
                log.warning("mail %s sent after its lease ran out; another sender has it", item.id)
        return attempts

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._outbox.wakeup.set()
        self._thread.join(timeout=self._relay.timeout_s * 4)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._outbox.wakeup.clear()
            try:
                self.deliver_due()
            except Exception:  # the database or a bug: log it and keep the thread alive for the next round
                log.exception("mail delivery round failed")
            self._outbox.wakeup.wait(self._poll_s)
