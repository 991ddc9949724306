"""What the box reports about its clients' usage and its audit log, the same for every face.

The console's dashboard, clients and audit pages, the command line's `usage` and `audit` and the
API's /v1/usage show the same numbers; they are counted here once, as small typed values, so a
"signatures today" can never mean two things. The faces only phrase and lay them out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..anchoring import check_anchors
from ..contracts import CONTRACT_STATUSES, ContractStatus
from ..store import audit, metering, refusals
from ..store.db import Database

if TYPE_CHECKING:
    from ..directory import DirectoryService

__all__ = [
    "AUDIT_PAGE_SIZE", "DIRECTORY_REFUSALS_SHOWN", "AuditCheck", "AuditLine", "AuditPage", "AuditQuery",
    "DirectoryCounts", "DirectoryRefusal", "Today", "UsageRow", "audit_actions", "check_audit", "contract_counts",
    "directory_counts", "directory_refusals", "export_audit", "search_audit", "today", "totals_by_client", "usage",
]

AUDIT_PAGE_SIZE = 50
DIRECTORY_REFUSALS_SHOWN = 20


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


# -- usage ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UsageRow:
    """Signatures of one client at one endpoint (hash, pdf, raw, timestamp) on one UTC day."""

    client_id: str
    client_name: str | None
    endpoint: str
    day: str  # YYYY-MM-DD
    signatures: int


def usage(db: Database, client_id: str | None = None, days: int = 31) -> list[UsageRow]:
    """Metered calls per client, endpoint and UTC day over the last ``days`` days, newest day first."""
    return [UsageRow(**row) for row in metering.usage(db.connect(), client_id, days)]


def totals_by_client(rows: list[UsageRow]) -> dict[str, int]:
    """Signatures per client id over ``rows``."""
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.client_id] = totals.get(row.client_id, 0) + row.signatures
    return totals


@dataclass(frozen=True)
class Today:
    """The UTC day so far: signatures made (in total and per client id) and requests refused."""

    signatures: int
    refusals: int
    per_client: dict[str, int]


def today(db: Database) -> Today:
    conn = db.connect()
    since = _today()
    per_client = dict(conn.execute(
        "SELECT client_id, COUNT(*) FROM signatures WHERE created_at >= ? GROUP BY client_id", (since,)).fetchall())
    return Today(sum(per_client.values()), refusals.refused_since(conn, since), per_client)


# -- the audit log --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditQuery:
    """Filters of an audit search; blank ones match everything. Dates are YYYY-MM-DD, ``until`` inclusive."""

    action: str = ""
    actor: str = ""  # a part of the actor, e.g. "admin"
    client: str = ""  # a client id
    text: str = ""  # a part of the details
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class AuditLine:
    seq: int
    at: str
    actor: str
    action: str
    client_id: str | None
    client_name: str | None
    details: str  # "key=value, …" without empty values and without anchors' timestamp tokens


@dataclass(frozen=True)
class AuditPage:
    lines: list[AuditLine]
    total: int  # entries matching the query, on every page
    page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // AUDIT_PAGE_SIZE))


def _where(query: AuditQuery) -> tuple[str, list[Any]]:
    where, params = [], []
    if query.action:
        where.append("action = ?")
        params.append(query.action)
    if query.actor:
        where.append("actor LIKE ? ESCAPE '\\'")
        params.append("%" + query.actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if query.client:
        where.append("client_id = ?")
        params.append(query.client)
    if query.text:
        where.append("instr(details, ?) > 0")
        params.append(query.text)
    if query.since:
        where.append("at >= ?")
        params.append(query.since)
    until = dt.date.fromisoformat(query.until) if query.until else None
    if until is not None and until < dt.date.max:  # the last day there is has no day after it
        where.append("at < ?")
        params.append((until + dt.timedelta(days=1)).isoformat())
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _details_text(details_json: str) -> str:
    details = json.loads(details_json)
    details.pop("timestamp_token", None)  # anchors: a long base64 blob says nothing to a reader
    return ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, ""))


def search_audit(db: Database, query: AuditQuery = AuditQuery(), page: int = 1) -> AuditPage:
    """One page of the entries matching ``query``, newest first, with the clients' names."""
    conn = db.connect()
    clause, params = _where(query)
    total = conn.execute(f"SELECT COUNT(*) FROM audit_log{clause}", params).fetchone()[0]
    rows = conn.execute(f"SELECT seq, at, actor, action, client_id, details, c.name AS client_name"
                        f" FROM audit_log LEFT JOIN clients c ON c.id = client_id{clause}"
                        " ORDER BY seq DESC LIMIT ? OFFSET ?",
                        (*params, AUDIT_PAGE_SIZE, (page - 1) * AUDIT_PAGE_SIZE)).fetchall()
    lines = [AuditLine(row["seq"], row["at"], row["actor"], row["action"], row["client_id"], row["client_name"],
                       _details_text(row["details"])) for row in rows]
    return AuditPage(lines, total, page)


def audit_actions(db: Database) -> list[str]:
    """Every action the log holds, for a filter's choices."""
    return [row[0] for row in db.connect().execute("SELECT DISTINCT action FROM audit_log ORDER BY action")]


@dataclass(frozen=True)
class AuditCheck:
    """The hash chain checked from the first entry, and every anchor against the entry it covers."""

    checked: int
    head_seq: int
    head_hash: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_audit(db: Database) -> AuditCheck:
    report = audit.verify(db.connect())
    problems = ([report.problem] if report.problem else []) + check_anchors(db)
    return AuditCheck(report.checked, report.head_seq, report.head_hash, problems)


def export_audit(db: Database, after_seq: int = 0) -> Iterator[dict[str, Any]]:
    """The entries after ``after_seq``, oldest first, as they are stored (hashes included), for JSON lines."""
    return audit.export(db.connect(), after_seq)


# -- the certificate directory ----------------------------------------------------------------------
# Only counts and refusals: the directory is found by exact address (DirectoryService.certificates),
# never listed, and its refusals name the address only by its keyed hash (firmware/directory/service.py).

@dataclass(frozen=True)
class DirectoryCounts:
    """Certificates per status, and the certificates refused by a check (all time, from the audit log)."""

    pending: int
    published: int
    superseded: int
    unpublished: int
    refused: int


@dataclass(frozen=True)
class DirectoryRefusal:
    """A certificate a check refused: which check, when, which certificate, from where and whom."""

    seq: int
    at: str
    check: str
    fingerprint: str
    source: str  # api, mail, console
    actor: str


_REFUSE = "directory.refuse"


def directory_counts(directory: DirectoryService, db: Database) -> DirectoryCounts:
    counts = directory.counts()
    refused: int = db.connect().execute("SELECT COUNT(*) FROM audit_log WHERE action = ?", (_REFUSE,)).fetchone()[0]
    return DirectoryCounts(counts["pending"], counts["published"], counts["superseded"], counts["unpublished"],
                           refused)


def directory_refusals(db: Database, limit: int = DIRECTORY_REFUSALS_SHOWN) -> list[DirectoryRefusal]:
    """The latest refusals, newest first."""
    rows = db.connect().execute("SELECT seq, at, actor, details FROM audit_log WHERE action = ?"
                                " ORDER BY seq DESC LIMIT ?", (_REFUSE, limit)).fetchall()
    found = []
    for row in rows:
        details = json.loads(row["details"])
        found.append(DirectoryRefusal(row["seq"], row["at"], str(details.get("check", "")),
                                      str(details.get("fingerprint", "")), str(details.get("source", "")),
                                      row["actor"]))
    return found


# -- envelopes ----------------------------------------------------------------------------------------

def contract_counts(db: Database) -> dict[ContractStatus, int]:
    """Envelopes per status, every status named (0 when none), in the model's order.

    Needs the envelopes' tables: call it only when [contracts] is on (the service made them).
    """
    rows = db.connect().execute("SELECT status, COUNT(*) FROM contracts GROUP BY status").fetchall()
    found = {row[0]: row[1] for row in rows}
    return {status: found.get(status, 0) for status in CONTRACT_STATUSES}
