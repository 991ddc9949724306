"""Quotas and rates per API client, counted in metered calls: signatures produced, timestamps
served by the CSC API, certificate-directory lookups and mails queued (view metered_calls).

`check` runs twice for every signing request: once before the token is touched (so an
over-quota client costs the box nothing) and again inside the transaction that records the
signatures (so concurrent requests cannot overshoot the quota between check and record).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

# hash: hash signing (native and CSC); pdf: PDF signing; timestamp: the CSC timestamp endpoint (a
# TSA proxy, so only for clients granted it); directory: looking up and submitting e-mail
# encryption certificates (firmware/directory/); mail: signed, encrypted mail and one-time codes
# (POST /v1/mail, /v1/otp) — both only for clients granted them. SCOPES lists every scope,
# DEFAULT_SCOPES what a new client gets unless its scopes are given.
SCOPES = ("hash", "pdf", "timestamp", "directory", "mail", "contracts")
DEFAULT_SCOPES = ("hash", "pdf")


class Refusal(Exception):
    """A request the client is not allowed to make right now; nothing was signed or charged.

    Each kind has one status and code on every face of the box: see firmware/operations/errors.py.
    """


class ScopeDenied(Refusal):
    """The client's scopes do not include the endpoint's."""


class QuotaExhausted(Refusal):
    """The client's purchased calls are used up."""


class RateLimited(Refusal):
    """The client's calls per minute or per day are used up."""


_SCOPE_USES = {"hash": "hash signing", "pdf": "PDF signing", "timestamp": "the timestamp service",
               "directory": "the certificate directory", "mail": "the mail service",
               "contracts": "contract signing"}


def require_scope(scopes: tuple[str, ...], scope: str) -> None:
    """Raise ScopeDenied unless ``scope`` is among a client's ``scopes``: the one scope check of
    the native API and the CSC API."""
    if scope not in scopes:
        raise ScopeDenied(f"this client may not use {_SCOPE_USES[scope]} (scopes: {', '.join(scopes)})")


def _signed_since(conn: sqlite3.Connection, client_id: str, since: datetime) -> int:
    count: int = conn.execute(
        "SELECT COUNT(*) FROM metered_calls WHERE client_id = ? AND created_at >= ?",
        (client_id, since.isoformat(timespec="microseconds")),
    ).fetchone()[0]
    return count


def check(conn: sqlite3.Connection, client_id: str, count: int, now: datetime | None = None,
          uncommitted: int = 0) -> bool:
    """Raise the Refusal that stops ``count`` more signatures for this client, if any.

    Rates count the client's metered calls in the audit log (signatures, timestamps) plus
    ``uncommitted``: the calls the caller's transaction has already charged but whose entries it has not yet
    appended (a group commit appends its whole batch last). Without them, every request of one
    batch would see the same count and a batch of eight could overshoot a rate by seven.

    Returns whether the client has no limits at all (callers may then skip the next checks).
    """
    now = now or datetime.now(UTC)
    row = conn.execute(
        "SELECT calls_purchased, calls_used, rate_per_minute, rate_per_day FROM clients WHERE id = ?",
        (client_id,),
    ).fetchone()
    if row is None:
        raise Refusal(f"unknown client {client_id!r}")
    purchased, used, per_minute, per_day = row
    if purchased is not None and used + count > purchased:
        raise QuotaExhausted(
            f"call quota exhausted: {max(purchased - used, 0)} of {purchased} calls left, this request needs {count}"
        )
    wanted = uncommitted + count
    if per_minute is not None and _signed_since(conn, client_id, now - timedelta(minutes=1)) + wanted > per_minute:
        raise RateLimited(f"rate limit of {per_minute} signatures per minute reached")
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if per_day is not None and _signed_since(conn, client_id, day_start) + wanted > per_day:
        raise RateLimited(f"rate limit of {per_day} signatures per day reached")
    return purchased is None and per_minute is None and per_day is None


def charge(conn: sqlite3.Connection, client_id: str, count: int, uncommitted: int = 0) -> None:
    """Check and charge in one statement; raise the exact Refusal if the quick path does not apply.

    One statement, not three, because the caller holds the commit lock: every sqlite call gives
    up the GIL, and winning it back under load is what a signature's record costs most.
    ``uncommitted``: see `check`.
    """
    charged = conn.execute(
        "UPDATE clients SET calls_used = calls_used + ? WHERE id = ?"
        " AND (calls_purchased IS NULL OR calls_used + ? <= calls_purchased)"
        " AND rate_per_minute IS NULL AND rate_per_day IS NULL",
        (count, client_id, count),
    ).rowcount
    if not charged:
        check(conn, client_id, count, uncommitted=uncommitted)  # raises if over quota or rate
        conn.execute("UPDATE clients SET calls_used = calls_used + ? WHERE id = ?", (count, client_id))


def usage(conn: sqlite3.Connection, client_id: str | None = None, days: int = 31) -> list[dict[str, Any]]:
    """Metered calls per client (id and name), per endpoint (hash, pdf, raw, timestamp), per UTC day,
    newest day first."""
    since = (datetime.now(UTC) - timedelta(days=days)).date().isoformat()
    query = (
        "SELECT m.client_id, c.name AS client_name, m.kind AS endpoint, substr(m.created_at, 1, 10) AS day,"
        " COUNT(*) AS signatures FROM metered_calls m LEFT JOIN clients c ON c.id = m.client_id"
        " WHERE m.created_at >= ?" + (" AND m.client_id = ?" if client_id else "") +
        " GROUP BY m.client_id, m.kind, day ORDER BY day DESC, m.client_id, m.kind"
    )
    params = (since, client_id) if client_id else (since,)
    return [dict(row) for row in conn.execute(query, params)]
