"""API clients and their keys. A key is shown once; only its SHA-256 is stored.

Keys are 256-bit random secrets, so a fast hash is enough (a slow KDF protects low-entropy
passwords and would cost every signing request milliseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from .db import Database

KEY_PREFIX = "esb"


class ClientError(ValueError):
    """A client operation was refused (duplicate name, unknown client)."""


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    created_at: str
    disabled_at: str | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ClientRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, name: str) -> tuple[Client, str]:
        """Create a client; returns it and its API key, which is not stored and cannot be shown again."""
        if not name or len(name) > 100:
            raise ClientError("client name must be 1–100 characters")
        client_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        api_key = f"{KEY_PREFIX}_{client_id}_{secret}"
        conn = self._db.connect()
        try:
            with conn:
                conn.execute(
                    "INSERT INTO clients(id, name, key_hash, created_at) VALUES (?, ?, ?, ?)",
                    (client_id, name, _hash(secret), _now()),
                )
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise ClientError(f"a client named {name!r} exists") from exc
            raise
        return self.get(client_id), api_key

    def get(self, client_id: str) -> Client:
        row = self._db.connect().execute(
            "SELECT id, name, created_at, disabled_at FROM clients WHERE id = ?", (client_id,)
        ).fetchone()
        if row is None:
            raise ClientError(f"no client {client_id!r}")
        return Client(**dict(row))

    def list(self) -> list[Client]:
        rows = self._db.connect().execute(
            "SELECT id, name, created_at, disabled_at FROM clients ORDER BY created_at"
        ).fetchall()
        return [Client(**dict(row)) for row in rows]

    def disable(self, client_id: str) -> Client:
        conn = self._db.connect()
        with conn:
            updated = conn.execute(
                "UPDATE clients SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL", (_now(), client_id)
            ).rowcount
        if not updated:
            self.get(client_id)  # raises for an unknown id
        return self.get(client_id)

    def authenticate(self, api_key: str) -> Client | None:
        """The active client owning ``api_key``, or None. Constant-time on the secret."""
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        client_id, secret = parts[1], parts[2]
        row = self._db.connect().execute(
            "SELECT id, name, key_hash, created_at, disabled_at FROM clients WHERE id = ?", (client_id,)
        ).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], _hash(secret)):
            return None
        if row["disabled_at"] is not None:
            return None
        return Client(row["id"], row["name"], row["created_at"], row["disabled_at"])
