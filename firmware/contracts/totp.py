"""TOTP (RFC 6238) for repeat signers: an authenticator app instead of a mailed code.

The business system enrols a person once (``enrol``: the secret goes back once, as an otpauth://
URI for the person's app, and is kept encrypted under a key in ``secrets/``); an envelope party
with method ``totp`` then proves itself with the app's current code. Codes are checked in constant
time within one step either way of the box's clock, and a step once used is never accepted again
(replay). Enrolment belongs to the client that made it: another client's signers are not its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..durable import secret_key
from ..mail.outbox import address_hash
from ..store import Database, audit, immediate

__all__ = ["DIGITS", "STEP_S", "TotpEnrolment", "TotpSecrets", "totp_code"]

KEY_FILE = "secrets/totp.key"
STEP_S = 30
DIGITS = 6
_WINDOW = 1  # steps either way: a phone's clock a little off still works

SCHEMA = """
CREATE TABLE IF NOT EXISTS contract_totp (
    client_id    TEXT NOT NULL,
    address      TEXT NOT NULL,      -- normalised e-mail address of the person
    secret_enc   BLOB NOT NULL,      -- AES-256-GCM(secrets/totp.key): nonce || ciphertext
    last_step    INTEGER NOT NULL DEFAULT 0,  -- the newest step accepted: older or equal ones are replays
    created_at   REAL NOT NULL,
    PRIMARY KEY (client_id, address)
);
"""


def totp_code(secret: bytes, step: int) -> str:
    """RFC 6238 / RFC 4226 with HMAC-SHA1, what every authenticator app computes."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 10 ** DIGITS:0{DIGITS}d}"


class TotpEnrolment:
    def __init__(self, uri: str, secret_base32: str) -> None:
        self.uri = uri
        self.secret_base32 = secret_base32


class TotpSecrets:
    def __init__(self, db: Database, state_dir: Path, issuer: str, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._aead = AESGCM(secret_key(state_dir / KEY_FILE))
        self._issuer = issuer
        self._clock = clock
        db.connect().executescript(SCHEMA)

    def enrol(self, client_id: str, address: str) -> TotpEnrolment:
        """A new secret for ``address`` (normalised) under this client, replacing an older one."""
        secret = secrets.token_bytes(20)
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, secret, f"{client_id}\0{address}".encode())
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("INSERT INTO contract_totp(client_id, address, secret_enc, created_at) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT (client_id, address) DO UPDATE SET secret_enc = excluded.secret_enc,"
                         " last_step = 0, created_at = excluded.created_at",
                         (client_id, address, sealed, self._clock()))
            audit.append(conn, [audit.AuditEntry(f"client:{client_id}", "contract.totp_enrolled", client_id,
                                                 {"address": address_hash(address)})])
        text = base64.b32encode(secret).decode().rstrip("=")
        label = quote(f"{self._issuer}:{address}")
        return TotpEnrolment(f"otpauth://totp/{label}?secret={text}&issuer={quote(self._issuer)}&digits={DIGITS}"
                             f"&period={STEP_S}", text)

    def enrolled(self, client_id: str, address: str) -> bool:
        return self._row(self._db.connect(), client_id, address) is not None

    def check(self, client_id: str, address: str, code: str) -> str:
        """"ok", "wrong_code" or "not_enrolled"; an accepted step is spent (a replay is "wrong_code")."""
        conn = self._db.connect()
        with immediate(conn):
            row = self._row(conn, client_id, address)
            if row is None:
                return "not_enrolled"
            sealed = bytes(row["secret_enc"])
            secret = self._aead.decrypt(sealed[:12], sealed[12:], f"{client_id}\0{address}".encode())
            now = int(self._clock()) // STEP_S
            for step in range(now - _WINDOW, now + _WINDOW + 1):
                if step > row["last_step"] and hmac.compare_digest(totp_code(secret, step), code.strip()):
                    conn.execute("UPDATE contract_totp SET last_step = ? WHERE client_id = ? AND address = ?",
                                 (step, client_id, address))
                    return "ok"
        return "wrong_code"

    @staticmethod
    def _row(conn: sqlite3.Connection, client_id: str, address: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT secret_enc, last_step FROM contract_totp WHERE client_id = ? AND address = ?",
            (client_id, address)).fetchone()
        return row
