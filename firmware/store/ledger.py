"""The record of every signature the box released, written before the signature is released.

Callers block until their record is durably committed. One writer thread commits whatever has
queued up in a single transaction (group commit), so eight concurrent signers cost one fsync,
not eight — durability without capping throughput at the disk's fsync rate. Inside that
transaction each request's quota is checked again and charged, and its signatures become
entries of the hash-chained audit log: a signature is released only if it is recorded and paid.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from . import audit, metering
from .db import Database, immediate, open_connection

_MAX_BATCH = 512


@dataclass(frozen=True)
class SignatureRecord:
    client_id: str
    kind: str  # the endpoint family: "hash", "pdf", "raw" (CSC signHash)
    hash_algorithm: str
    document_hash: str  # hex
    key_label: str
    cert_serial: str
    level: str
    profile: str


@dataclass
class _Job:
    entries: list[audit.AuditEntry]
    charge_client: str | None  # signatures: check and charge this client's quota
    done: Future | None  # None: fire and forget (refusals)


class SignatureLedger:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._writer = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._writer.start()

    def record(self, records: list[SignatureRecord]) -> None:
        """Durably store ``records`` (one client's); raises metering.Refusal if over quota."""
        client_id = records[0].client_id
        if any(r.client_id != client_id for r in records):
            raise ValueError("one request's records belong to one client")
        entries = [
            audit.AuditEntry(f"client:{client_id}", "signature", client_id, asdict(r)) for r in records
        ]
        done: Future = Future()
        self._queue.put(_Job(entries, client_id, done))
        done.result()

    def refuse(self, client_id: str | None, details: dict) -> None:
        """Log a refused request; the caller does not wait for it."""
        actor = f"client:{client_id}" if client_id else "anonymous"
        self._queue.put(_Job([audit.AuditEntry(actor, "refusal", client_id, details)], None, None))

    def admit(self, client_id: str, count: int) -> None:
        """The pre-signing quota check: raises metering.Refusal without touching the token."""
        metering.check(self._db.connect(), client_id, count)

    def count(self, client_id: str | None = None) -> int:
        conn = self._db.connect()
        if client_id is None:
            return conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0]
        return conn.execute("SELECT COUNT(*) FROM signatures WHERE client_id = ?", (client_id,)).fetchone()[0]

    def _run(self) -> None:
        conn = open_connection(self._db.path)
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            outcomes: list[BaseException | None] = []
            try:
                with immediate(conn):
                    for job in batch:
                        outcomes.append(self._apply(conn, job))
            except Exception as exc:  # every waiter must learn that its record is not stored
                for job in batch:
                    if job.done is not None:
                        job.done.set_exception(exc)
                continue
            for job, outcome in zip(batch, outcomes):
                if job.done is None:
                    continue
                if outcome is None:
                    job.done.set_result(None)
                else:
                    job.done.set_exception(outcome)

    @staticmethod
    def _apply(conn, job: _Job) -> BaseException | None:
        if job.charge_client is not None:
            try:
                metering.check(conn, job.charge_client, len(job.entries))
            except metering.Refusal as refusal:
                return refusal
            metering.charge(conn, job.charge_client, len(job.entries))
        audit.append(conn, job.entries)
        return None
