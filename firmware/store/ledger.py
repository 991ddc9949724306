"""The record of every signature the box released, written before the signature is released.

Callers block until their record is durably committed. One writer thread commits whatever has
queued up in a single transaction (group commit), so eight concurrent signers cost one fsync,
not eight — durability without capping throughput at the disk's fsync rate.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from datetime import datetime, timezone

from .db import Database, open_connection

_MAX_BATCH = 512


@dataclass(frozen=True)
class SignatureRecord:
    client_id: str
    kind: str  # "hash" or "pdf"
    hash_algorithm: str
    document_hash: str  # hex
    key_label: str
    cert_serial: str
    level: str
    profile: str


class SignatureLedger:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: queue.Queue[tuple[list[SignatureRecord], Future]] = queue.Queue()
        self._writer = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._writer.start()

    def record(self, records: list[SignatureRecord]) -> None:
        """Durably store ``records``; returns only once they are committed."""
        done: Future = Future()
        self._queue.put((records, done))
        done.result()

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
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            try:
                with conn:
                    conn.executemany(
                        "INSERT INTO signatures(created_at, client_id, kind, hash_algorithm, document_hash,"
                        " key_label, cert_serial, level, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(now, *astuple(r)) for records, _ in batch for r in records],
                    )
            except Exception as exc:  # every waiter must learn that its record is not stored
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for _, done in batch:
                done.set_result(None)
