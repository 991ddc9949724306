"""The record of every signature the box released, written before the signature is released.

Callers block until their record is durably committed. Commits are grouped: whichever waiting
thread gets the commit lock first writes every record queued so far in one transaction, so eight
concurrent signers cost one fsync, not eight — durability without capping throughput at the
disk's fsync rate, and without a writer thread (handing work to one costs more GIL switches than
the write itself). Inside that transaction each request's quota is checked again and charged,
and its signatures become entries of the hash-chained audit log: a signature is released only if
it is recorded and paid for. The same commit summarises the refusal counts of windows that
have closed (store/refusals.py), so counting needs no thread of its own.

A write that fails for lack of disk space raises storage.StorageFull: nothing is released.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import audit, metering
from .db import Database, immediate
from .refusals import RefusalCounter
from .storage import StorageBudget, full_error

_UNLIMITED_RECHECK_S = 1.0


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
    done: bool = False
    outcome: BaseException | None = None


class SignatureLedger:
    def __init__(self, db: Database, refusal_window_s: float = 60.0, budget: StorageBudget = StorageBudget()) -> None:
        self._db = db
        self._budget = budget
        self._refusals = RefusalCounter(db.path, refusal_window_s)
        self._summaries_due = 0.0  # time.time() when the window counting now closes: summarise then
        self._pending: list[_Job] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._unlimited: dict[str, float] = {}  # client id -> until when admit() may skip it

    def record(self, records: list[SignatureRecord]) -> None:
        """Durably store ``records`` (one client's); raises metering.Refusal if over quota."""
        client_id = records[0].client_id
        if any(r.client_id != client_id for r in records):
            raise ValueError("one request's records belong to one client")
        entries = [
            audit.AuditEntry(f"client:{client_id}", "signature", client_id, asdict(r)) for r in records
        ]
        self._commit(_Job(entries, client_id))

    def record_timestamp(self, client_id: str, details: dict[str, Any]) -> None:
        """Durably record one timestamp served to the client, charged as one call; raises metering.Refusal."""
        self._commit(_Job([audit.AuditEntry(f"client:{client_id}", "timestamp", client_id, details)], client_id))

    def refuse(self, client_id: str | None, details: dict[str, Any]) -> None:
        """Log a refused request: a client's each time; a caller without a valid key's only as the
        first of its peer, error and window, or never while the disk budget is spent (then it is
        only counted). ``details`` carries "peer", "error" and "status"."""
        if client_id is None:
            state = self._budget.state(self._db.path)
            first = self._refusals.count(
                details.get("peer") or "", details.get("error") or "", details.get("status", 0),
                only_count=state.over_budget or state.low_on_space,
            )
            if not first:
                return
        actor = f"client:{client_id}" if client_id else "anonymous"
        self._commit(_Job([audit.AuditEntry(actor, "refusal", client_id, details)], None))

    def admit(self, client_id: str, count: int) -> None:
        """The pre-signing quota check: raises metering.Refusal without touching the token.

        A client found without any limit is not looked up again for a second: this check only
        saves token work, the exact one runs when the signatures are recorded.
        """
        if self._unlimited.get(client_id, 0.0) > time.monotonic():
            return
        if metering.check(self._db.connect(), client_id, count):
            self._unlimited[client_id] = time.monotonic() + _UNLIMITED_RECHECK_S

    def _commit(self, job: _Job) -> None:
        with self._pending_lock:
            self._pending.append(job)
        with self._commit_lock:
            if not job.done:  # nobody committed it while we waited: commit everything queued
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._write(batch)
        if job.outcome is not None:
            raise job.outcome

    def _write(self, batch: list[_Job]) -> None:
        """Commit ``batch``; every job ends marked done, and successful only if the commit was."""
        conn = self._db.connect()
        outcomes: Sequence[BaseException | None] = [RuntimeError("the signature could not be recorded")] * len(batch)
        try:
            with immediate(conn):
                charged: Counter[str] = Counter()  # signatures charged in this transaction, per client
                results = [self._charge(conn, job, charged) for job in batch]
                entries = [e for job, result in zip(batch, results, strict=False) if result is None for e in job.entries]
                summarise = time.time() >= self._summaries_due
                if summarise:
                    entries += self._refusals.summaries(conn)
                if entries:
                    audit.append(conn, entries)
            outcomes = results
            if summarise:
                self._summaries_due = _next_window_end(self._refusals.window_s)
        except Exception as exc:
            outcomes = [full_error(exc)] * len(batch)
        finally:
            for job, outcome in zip(batch, outcomes, strict=False):
                job.outcome, job.done = outcome, True

    @staticmethod
    def _charge(conn: sqlite3.Connection, job: _Job, charged: Counter[str]) -> metering.Refusal | None:
        """Charge the job's client, counting what this batch charged it before; a refused job's
        entries are not appended."""
        if job.charge_client is None:
            return None
        try:
            metering.charge(conn, job.charge_client, len(job.entries), uncommitted=charged[job.charge_client])
        except metering.Refusal as refusal:
            return refusal
        charged[job.charge_client] += len(job.entries)
        return None


def _next_window_end(window_s: float) -> float:
    now = time.time()
    return now - now % window_s + window_s
