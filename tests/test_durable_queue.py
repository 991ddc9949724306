"""The durable outbox both queues share (firmware/store/queue.py): its table names are fixed, and a
sender whose lease was taken over cannot record an outcome, in the mail outbox as in the webhooks'."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from firmware.mail.outbox import BOX, Outbox, RelaySettings
from firmware.store import Database
from firmware.store.queue import LeasedQueue, backoff_s


def test_only_the_outbox_tables_can_be_named(tmp_path: Path) -> None:
    db = Database(tmp_path / "box.db")
    for table in ("mail_outbox", "webhook_outbox"):
        LeasedQueue(db, table)
    for table in ("clients", "mail_outbox; DROP TABLE clients", "audit_log"):
        with pytest.raises(ValueError, match="not an outbox table"):
            LeasedQueue(db, table)


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff_s(n, 30, 200) for n in (1, 2, 3, 4)] == [30, 60, 120, 200]


def test_a_mail_sender_whose_lease_was_taken_over_records_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "box.db")
    outbox = Outbox(db)
    outbox_id = outbox.enqueue(None, "box@example.org", "alice@example.org", "<m1@example.org>", b"Subject: x\r\n\r\nx",
                               encrypted=False)
    now = time.time()
    slow = outbox.claim(lease_s=10, now=now)
    assert slow is not None and slow.attempt == 1
    assert outbox.claim(lease_s=10, now=now + 1) is None  # the lease holds
    newer = outbox.claim(lease_s=10, now=now + 11)  # it ran out: another sender takes the message over
    assert newer is not None and (newer.id, newer.attempt) == (outbox_id, 2)

    assert not outbox.sent(slow)
    assert not outbox.retry_or_fail(slow, "too late", permanent=True, relay=RelaySettings("relay.example.org"))
    status = outbox.status(outbox_id, BOX)
    assert status is not None and (status.status, status.attempts, status.last_error) == ("sending", 2, None)

    assert outbox.sent(newer)
    status = outbox.status(outbox_id, BOX)
    assert status is not None and (status.status, status.last_error) == ("sent", None)
    actions = [row[0] for row in db.connect().execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions.count("mail.sent") == 1 and "mail.failed" not in actions
    row = db.connect().execute("SELECT recipient, message, details FROM mail_outbox, audit_log"
                               " WHERE mail_outbox.id = ? AND audit_log.action = 'mail.sent'", (outbox_id,)).fetchone()
    assert (row[0], row[1]) == (None, None) and json.loads(row[2])["id"] == outbox_id
