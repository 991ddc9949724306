"""API clients: keys, scopes and quotas. A key is shown once; only its SHA-256 is stored.

Keys are 256-bit random secrets, so a fast hash is enough (a slow KDF protects low-entropy
passwords and would cost every signing request milliseconds). Every change is an audit entry
written in the same transaction as the change itself.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from . import audit
from .db import Database, immediate
from .metering import DEFAULT_SCOPES, SCOPES

KEY_PREFIX = "esb"


class _Unset(enum.Enum):
    """Marks a limit left out of set_limits (None already means "no limit")."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class ClientError(ValueError):
    """A client operation was refused (duplicate name, unknown client, bad setting)."""


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    created_at: str
    disabled_at: str | None
    scopes: tuple[str, ...]
    calls_purchased: int | None
    calls_used: int
    rate_per_minute: int | None
    rate_per_day: int | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @property
    def calls_left(self) -> int | None:
        return None if self.calls_purchased is None else max(self.calls_purchased - self.calls_used, 0)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Client:
        return cls(
            id=row["id"], name=row["name"], created_at=row["created_at"], disabled_at=row["disabled_at"],
            scopes=tuple(s for s in row["scopes"].split(",") if s),
            calls_purchased=row["calls_purchased"], calls_used=row["calls_used"],
            rate_per_minute=row["rate_per_minute"], rate_per_day=row["rate_per_day"],
        )


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _check_scopes(scopes: tuple[str, ...]) -> str:
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ClientError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    return ",".join(s for s in SCOPES if s in scopes)


def _check_limit(value: int | None, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise ClientError(f"{what} must be a whole number ≥ 0")
    return value


# The writes below run inside the caller's `immediate()` transaction and return the audit entry
# that records them, so that callers applying many changes at once (a provisioning bundle)
# commit the changes and their record together.

def insert_client(
    conn: sqlite3.Connection, client_id: str, name: str, key_hash: bytes, actor: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES, calls: int | None = None,
    rate_per_minute: int | None = None, rate_per_day: int | None = None,
) -> audit.AuditEntry:
    if not name or len(name) > 100:
        raise ClientError("client name must be 1–100 characters")
    scope_text = _check_scopes(scopes)
    try:
        conn.execute(
            "INSERT INTO clients(id, name, key_hash, created_at, scopes, calls_purchased,"
            " rate_per_minute, rate_per_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (client_id, name, key_hash, audit.now(), scope_text, _check_limit(calls, "calls"),
             _check_limit(rate_per_minute, "rate_per_minute"), _check_limit(rate_per_day, "rate_per_day")),
        )
    except sqlite3.IntegrityError as exc:
        raise ClientError(f"a client named {name!r} exists") from exc
    return audit.AuditEntry(actor, "client.add", client_id, {
        "name": name, "scopes": scope_text, "calls": calls,
        "rate_per_minute": rate_per_minute, "rate_per_day": rate_per_day})


def update_scopes(conn: sqlite3.Connection, client_id: str, scopes: tuple[str, ...], actor: str) -> audit.AuditEntry:
    text = _check_scopes(scopes)
    if conn.execute("UPDATE clients SET scopes = ? WHERE id = ?", (text, client_id)).rowcount != 1:
        raise ClientError(f"no client {client_id!r}")
    return audit.AuditEntry(actor, "client.scopes", client_id, {"scopes": text})


def update_limits(
    conn: sqlite3.Connection, client_id: str, actor: str,
    calls: int | None, rate_per_minute: int | None, rate_per_day: int | None,
) -> audit.AuditEntry:
    limits = {"calls": _check_limit(calls, "calls"), "rate_per_minute": _check_limit(rate_per_minute, "rate_per_minute"),
              "rate_per_day": _check_limit(rate_per_day, "rate_per_day")}
    changed = conn.execute(
        "UPDATE clients SET calls_purchased = ?, rate_per_minute = ?, rate_per_day = ? WHERE id = ?",
        (limits["calls"], limits["rate_per_minute"], limits["rate_per_day"], client_id),
    ).rowcount
    if changed != 1:
        raise ClientError(f"no client {client_id!r}")
    return audit.AuditEntry(actor, "client.limits", client_id, limits)


class ClientRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        name: str,
        actor: str = "operator",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        calls: int | None = None,
        rate_per_minute: int | None = None,
        rate_per_day: int | None = None,
    ) -> tuple[Client, str]:
        """Create a client; returns it and its API key, which is not stored and cannot be shown again."""
        client_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        conn = self._db.connect()
        with immediate(conn):
            audit.append(conn, [insert_client(conn, client_id, name, _hash(secret), actor, scopes, calls,
                                              rate_per_minute, rate_per_day)])
        return self.get(client_id), f"{KEY_PREFIX}_{client_id}_{secret}"

    def get(self, client_id: str) -> Client:
        row = self._db.connect().execute("SELECT * FROM clients WHERE id = ?", (client_id,)).fetchone()
        if row is None:
            raise ClientError(f"no client {client_id!r}")
        return Client.from_row(row)

    def list(self) -> list[Client]:
        rows = self._db.connect().execute("SELECT * FROM clients ORDER BY created_at").fetchall()
        return [Client.from_row(row) for row in rows]

    def _change(self, client_id: str, actor: str, action: str, sql: str, params: tuple[object, ...], details: dict[str, Any]) -> Client:
        conn = self._db.connect()
        with immediate(conn):
            if conn.execute(sql, (*params, client_id)).rowcount != 1:
                raise ClientError(f"no client {client_id!r}")
            audit.append(conn, [audit.AuditEntry(actor, action, client_id, details)])
        return self.get(client_id)

    def disable(self, client_id: str, actor: str = "operator") -> Client:
        return self._change(client_id, actor, "client.disable",
                            "UPDATE clients SET disabled_at = COALESCE(disabled_at, ?) WHERE id = ?",
                            (audit.now(),), {})

    def enable(self, client_id: str, actor: str = "operator") -> Client:
        return self._change(client_id, actor, "client.enable",
                            "UPDATE clients SET disabled_at = NULL WHERE id = ?", (), {})

    def rotate(self, client_id: str, actor: str = "operator") -> tuple[Client, str]:
        """A new key for the client; the old key stops working at once."""
        secret = secrets.token_urlsafe(32)
        client = self._change(client_id, actor, "client.rotate",
                              "UPDATE clients SET key_hash = ? WHERE id = ?", (_hash(secret),), {})
        return client, f"{KEY_PREFIX}_{client_id}_{secret}"

    def set_scopes(self, client_id: str, scopes: tuple[str, ...], actor: str = "operator") -> Client:
        conn = self._db.connect()
        with immediate(conn):
            audit.append(conn, [update_scopes(conn, client_id, scopes, actor)])
        return self.get(client_id)

    def set_limits(
        self,
        client_id: str,
        actor: str = "operator",
        calls: int | _Unset | None = _UNSET,
        add_calls: int = 0,
        rate_per_minute: int | _Unset | None = _UNSET,
        rate_per_day: int | _Unset | None = _UNSET,
    ) -> Client:
        """Change quotas; arguments left out keep their value, None removes a limit."""
        current = self.get(client_id)
        purchased = current.calls_purchased if calls is _UNSET else calls
        if add_calls:
            if purchased is None:
                raise ClientError("the client has no call limit to add to; set one with calls=")
            purchased += _check_limit(add_calls, "add_calls") or 0
        per_minute = current.rate_per_minute if rate_per_minute is _UNSET else rate_per_minute
        per_day = current.rate_per_day if rate_per_day is _UNSET else rate_per_day
        conn = self._db.connect()
        with immediate(conn):
            audit.append(conn, [update_limits(conn, client_id, actor, purchased, per_minute, per_day)])
        return self.get(client_id)

    def authenticate(self, api_key: str) -> Client | None:
        """The active client owning ``api_key``, or None. Constant-time on the secret."""
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        row = self._db.connect().execute("SELECT * FROM clients WHERE id = ?", (parts[1],)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], _hash(parts[2])):
            return None
        client = Client.from_row(row)
        return client if client.active else None
